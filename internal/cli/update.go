package cli

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/buildinfo"
	"github.com/bangervm/banger/internal/hostcmd"
	"github.com/bangervm/banger/internal/install"
	"github.com/bangervm/banger/internal/update"
)

// ExitUpdateAvailable is banger update --check's status when a newer
// release exists.
const ExitUpdateAvailable = 10

type updateOptions struct {
	Check, JSON, DryRun, Force bool
	To                         string
}

func newUpdateCmd(f *Factory) *cobra.Command {
	var opts updateOptions
	cmd := &cobra.Command{
		Use:   "update [--check [--json]] [--dry-run] [--to VERSION] [--force]",
		Short: "Update an installed banger to a signed release, rolling back if it does not come up",
		Long: `Find the latest release in the release manifest compiled into this banger and
install it in place of the system install's binaries.

Everything is verified before anything changes: the manifest and the
release's SHA256SUMS must be signed by the release key compiled into this
banger (cosign sign-blob format), the tarball must have the size and hash
they give, and every download has a size cap. A manifest naming as latest a
release older than the installed one is refused (someone serving an old
manifest to walk banger back); --to names any release explicitly, older
ones included. The update is refused while the daemon is in the middle of
an operation (a VM starting, an image pull, an exec session) unless --force,
and when the release's daemon cannot read the owner's state store.

The binaries are then swapped (the previous ones kept until the update
holds) and both services restarted; running VMs keep running. If the new
services do not answer, a VM that ran is gone, or the new doctor fails a
check the old one passed, the previous binaries are put back and restarted.
install.toml then records the new version.

--check only says whether a newer release exists: exit 0 up to date, 10
newer available. --dry-run prints what would be done and changes nothing.`,
		Example: `  banger update --check
  sudo banger update
  sudo banger update --to v0.3.1`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if opts.JSON && !opts.Check {
				return flagErrorf("--json goes with --check")
			}
			if opts.Check && (opts.DryRun || opts.Force || opts.To != "") {
				return flagErrorf("--check goes alone (or with --json)")
			}
			return runUpdate(cmd.Context(), f, opts)
		},
	}
	cmd.Flags().BoolVar(&opts.Check, "check", false, "only say whether a newer release exists (exit 10 if so)")
	cmd.Flags().BoolVar(&opts.JSON, "json", false, "with --check: print the versions as JSON")
	cmd.Flags().BoolVar(&opts.DryRun, "dry-run", false, "print what the update would do and change nothing")
	cmd.Flags().StringVar(&opts.To, "to", "", "install this release (vX.Y.Z), even an older one, instead of the latest")
	cmd.Flags().BoolVar(&opts.Force, "force", false, "update even while the daemon is in the middle of an operation")
	return cmd
}

func runUpdate(ctx context.Context, f *Factory, opts updateOptions) error {
	src, err := update.BuiltIn()
	if err != nil {
		return err
	}
	installed := buildinfo.Version
	if f.Installed {
		installed = f.Install.Version
	} else if !opts.Check {
		return fmt.Errorf("banger update replaces a system install, and there is none here (%s): install with sudo banger system install: %w", install.RecordPath, errdefs.ErrFailedPrecondition)
	}
	if !opts.Check && !opts.DryRun {
		if err := requireSystemd("update"); err != nil {
			return err
		}
	}
	m, err := src.Manifest(ctx)
	if err != nil {
		return err
	}
	plan, err := update.Decide(m, installed, opts.To)
	if err != nil {
		return err
	}
	if opts.Check {
		return printUpdateCheck(f, plan, opts.JSON)
	}
	if plan.Current() {
		fmt.Fprintf(f.IO.Out, "banger %s is installed: nothing to do\n", plan.Installed)
		return nil
	}
	if opts.DryRun {
		return printUpdatePlan(f, src, plan)
	}
	if plan.Downgrade {
		fmt.Fprintf(f.IO.ErrOut, "going back from %s to %s, as --to asks\n", plan.Installed, plan.Target.Version)
	}
	u := update.Updater{
		Source: src, Record: f.Install, Systemd: hostcmd.Systemctl{}, Daemon: install.DaemonClient(f.Install),
		Progress: f.IO.ErrOut,
	}
	if err := u.Update(ctx, plan, opts.Force); err != nil {
		return err
	}
	fmt.Fprintf(f.IO.Out, "banger %s installed (was %s): %s and %s answer, running VMs kept running\n",
		plan.Target.Version, plan.Installed, install.HelperUnitName, install.DaemonUnitName)
	return nil
}

func printUpdateCheck(f *Factory, plan update.Plan, asJSON bool) error {
	if asJSON {
		if err := printJSON(f, plan); err != nil {
			return err
		}
	} else if plan.UpdateAvailable {
		fmt.Fprintf(f.IO.Out, "banger %s is available (installed: %s): sudo banger update\n", plan.Latest, plan.Installed)
	} else {
		fmt.Fprintf(f.IO.Out, "banger %s is up to date (latest: %s)\n", plan.Installed, plan.Latest)
	}
	if plan.UpdateAvailable {
		return &ExitError{Code: ExitUpdateAvailable}
	}
	return nil
}

func printUpdatePlan(f *Factory, src update.Source, plan update.Plan) error {
	tarball, err := src.Resolve(plan.Target.Tarball)
	if err != nil {
		return err
	}
	p := f.Install.Paths
	steps := []string{
		fmt.Sprintf("download %s (%d bytes, sha256 %s) with SHA256SUMS and SHA256SUMS.sig, and verify them", tarball, plan.Target.Size, plan.Target.SHA256),
		"refuse if the daemon is in the middle of an operation (unless --force)",
		fmt.Sprintf("unpack banger, bangerd and banger-agent beside %s and check they are %s", p.Agent, plan.Target.Version),
		"run the new bangerd --check-migrations against " + f.Install.Owner.Name + "'s state store",
		fmt.Sprintf("replace %s, %s and %s, keeping the previous ones until the update holds", p.CLI, p.Daemon, p.Agent),
		fmt.Sprintf("restart %s and %s (running VMs keep running) and wait until both answer", install.HelperUnitName, install.DaemonUnitName),
		"run the new banger doctor; roll back on a new failure or a lost VM",
		fmt.Sprintf("record %s in %s", plan.Target.Version, p.Record),
	}
	verb := "update"
	if plan.Downgrade {
		verb = "go back"
	}
	fmt.Fprintf(f.IO.Out, "would %s banger %s to %s:\n", verb, plan.Installed, plan.Target.Version)
	for i, s := range steps {
		fmt.Fprintf(f.IO.Out, "  %d. %s\n", i+1, s)
	}
	fmt.Fprintln(f.IO.Out, "(dry run: nothing changed)")
	return nil
}
