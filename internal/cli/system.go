package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/buildinfo"
	"github.com/bangervm/banger/internal/hostcmd"
	"github.com/bangervm/banger/internal/install"
)

func newSystemCmd(f *Factory) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "system",
		Short: "Install banger as systemd services, show their status, uninstall",
		Long: `banger system install puts banger on this machine for one user, the owner:
the binaries in /usr/local, /etc/banger/install.toml, and two systemd units —
bangerd.service, the daemon, running as the owner, and bangerd-root.service,
the root helper that does only what needs root (bridge, taps, banger's
firewall rules). The owner then uses banger without sudo; other users cannot
reach either service.`,
	}
	cmd.AddCommand(newSystemInstallCmd(f), newSystemUninstallCmd(f), newSystemStatusCmd(f), newSystemRestartCmd(f), newSystemOwnerVMsCmd(f), newSystemRenderUnitsCmd(f))
	return cmd
}

type systemInstallOptions struct {
	Owner               string
	Firecracker, Jailer string
	NoJailer            bool
}

func newSystemInstallCmd(f *Factory) *cobra.Command {
	var opts systemInstallOptions
	cmd := &cobra.Command{
		Use:   "install [--owner USER] [--firecracker PATH --jailer PATH | --no-jailer]",
		Short: "Install banger's binaries and services, or upgrade them in place",
		Long: `Copy banger, bangerd and banger-agent from beside this banger to
/usr/local/bin and /usr/local/lib/banger, write /etc/banger/install.toml and
the units bangerd.service (the daemon, as the owner) and bangerd-root.service
(the root helper), enable and start both, and wait until both answer.

The owner is the user behind sudo unless --owner names one; installing for
root needs --owner root. Installing again upgrades in place: files are
replaced and both services restarted; running VMs keep running. If a step
fails, what the install did is undone.

Where Firecracker and its jailer are installed (in PATH, or named with
--firecracker and --jailer), the root helper is allowed to start the jailer
for the owner, and its unit gets the privileges that needs; both binaries
must be root's, in directories only root can write. --no-jailer leaves it
out (VMs then use QEMU, or Firecracker with jailer = false).`,
		Example: `  sudo banger system install
  sudo banger system install --owner alice
  banger system install --owner root      # as root, on a machine without sudo
  sudo banger system install --firecracker /usr/local/bin/firecracker --jailer /usr/local/bin/jailer`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runSystemInstall(cmd.Context(), f, opts)
		},
	}
	cmd.Flags().StringVar(&opts.Owner, "owner", "", "the user the daemon runs as and serves (default: the user behind sudo)")
	cmd.Flags().StringVar(&opts.Firecracker, "firecracker", "", "the firecracker binary the root helper's jailer may run (default: firecracker in PATH)")
	cmd.Flags().StringVar(&opts.Jailer, "jailer", "", "Firecracker's jailer binary the root helper may start (default: jailer in PATH)")
	cmd.Flags().BoolVar(&opts.NoJailer, "no-jailer", false, "do not let the root helper start Firecracker's jailer")
	cmd.MarkFlagsMutuallyExclusive("no-jailer", "firecracker")
	cmd.MarkFlagsMutuallyExclusive("no-jailer", "jailer")
	return cmd
}

// installJailer decides which jailer and firecracker the root helper may
// start: the named ones (both, each checked), else both found in PATH and
// passing the check, else none (a note says why when they were found).
func installJailer(opts systemInstallOptions, note io.Writer) (jailer, fc string, err error) {
	if opts.NoJailer {
		return "", "", nil
	}
	if opts.Firecracker != "" || opts.Jailer != "" {
		if opts.Firecracker == "" || opts.Jailer == "" {
			return "", "", flagErrorf("--firecracker and --jailer go together")
		}
		for _, b := range []string{opts.Jailer, opts.Firecracker} {
			if err := install.CheckRootBinary(b); err != nil {
				return "", "", fmt.Errorf("system install: %w", err)
			}
		}
		return opts.Jailer, opts.Firecracker, nil
	}
	j, jerr := exec.LookPath("jailer")
	f, ferr := exec.LookPath("firecracker")
	if jerr != nil || ferr != nil {
		return "", "", nil
	}
	for _, b := range []string{j, f} {
		if err := install.CheckRootBinary(b); err != nil {
			fmt.Fprintf(note, "not letting the root helper start Firecracker's jailer: %v\n", err)
			return "", "", nil
		}
	}
	return j, f, nil
}

// installOwner decides whom to install for: --owner, else the user behind
// sudo; root only when named.
func installOwner(flag, sudoUID string) (string, error) {
	switch {
	case flag != "":
		return flag, nil
	case sudoUID != "" && sudoUID != "0":
		return sudoUID, nil
	}
	return "", flagErrorf("no owner: run through sudo as the user who will use banger, or name one with --owner USER (--owner root to install for root)")
}

func requireSystemd(what string) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("banger system %s needs root: run it with sudo: %w", what, errdefs.ErrPermissionDenied)
	}
	if !hostcmd.Booted() {
		return fmt.Errorf("banger system %s needs systemd as the init system, and this machine does not run it (no /run/systemd/system): run bangerd by hand instead (README, \"Install\"): %w", what, errdefs.ErrFailedPrecondition)
	}
	return nil
}

func runSystemInstall(ctx context.Context, f *Factory, opts systemInstallOptions) error {
	who, err := installOwner(opts.Owner, os.Getenv("SUDO_UID"))
	if err != nil {
		return err
	}
	if err := requireSystemd("install"); err != nil {
		return err
	}
	owner, err := install.LookupOwner(who)
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	p := install.DefaultPaths()
	src, err := install.SourcesBeside(filepath.Dir(self), p)
	if err != nil {
		return err
	}
	// Installing from the installed banger copies files onto
	// themselves: stage them first.
	if src, err = stageIfInstalled(src, p); err != nil {
		return err
	}
	if err := install.CheckNoDevDaemon(ctx, owner, install.DevSockets(owner)); err != nil {
		return err
	}
	rec := install.Record{Version: buildinfo.Version, Commit: buildinfo.Commit, BuildTime: buildinfo.BuildTime, Owner: owner, Paths: p, KVMGroup: install.KVMGroup()}
	if rec.Jailer, rec.Firecracker, err = installJailer(opts, f.IO.ErrOut); err != nil {
		return err
	}
	fmt.Fprintf(f.IO.ErrOut, "installing banger %s for %s (uid %d)\n", rec.Version, owner.Name, owner.UID)
	if rec.JailerEnabled() {
		fmt.Fprintf(f.IO.ErrOut, "the root helper may start %s for %s, running %s\n", rec.Jailer, owner.Name, rec.Firecracker)
	}
	err = install.Install(ctx, install.Options{
		Record: rec, Sources: src, Systemd: hostcmd.Systemctl{},
		MakeOwnerDirs: func(ctx context.Context, o install.Owner, dirs ...string) error {
			return hostcmd.MkdirAs(ctx, o.UID, o.GID, dirs...)
		},
	})
	if err != nil {
		return fmt.Errorf("system install: %w", err)
	}
	fmt.Fprintf(f.IO.Out, "banger %s installed: %s and %s answer\n%s can now run banger without sudo, e.g. banger vm run --rm -- uname -a\n",
		rec.Version, install.HelperUnitName, install.DaemonUnitName, owner.Name)
	return nil
}

// stageIfInstalled copies sources that are the installed files themselves
// to a temporary directory.
func stageIfInstalled(src install.Sources, p install.Paths) (install.Sources, error) {
	same := func(a, b string) bool {
		ai, aerr := os.Stat(a)
		bi, berr := os.Stat(b)
		return aerr == nil && berr == nil && os.SameFile(ai, bi)
	}
	if !same(src.CLI, p.CLI) && !same(src.Daemon, p.Daemon) && !same(src.Agent, p.Agent) {
		return src, nil
	}
	dir, err := os.MkdirTemp("", "banger-install-")
	if err != nil {
		return src, err
	}
	out := install.Sources{CLI: filepath.Join(dir, "banger"), Daemon: filepath.Join(dir, "bangerd"), Agent: filepath.Join(dir, "banger-agent")}
	for _, c := range [][2]string{{src.CLI, out.CLI}, {src.Daemon, out.Daemon}, {src.Agent, out.Agent}} {
		b, err := os.ReadFile(c[0])
		if err == nil {
			err = os.WriteFile(c[1], b, 0o755)
		}
		if err != nil {
			return src, err
		}
	}
	return out, nil
}

type systemUninstallOptions struct {
	Purge, Force bool
}

func newSystemUninstallCmd(f *Factory) *cobra.Command {
	var opts systemUninstallOptions
	cmd := &cobra.Command{
		Use:   "uninstall [--purge] [--force]",
		Short: "Stop and remove banger's services, binaries, /etc/banger and host networking",
		Long: `Stop and disable bangerd.service and bangerd-root.service and remove them,
the binaries and /etc/banger, and return the host's network to what it was
before banger: the bridge, banger's iptables chains and their jumps, its
nftables table and systemd-resolved settings removed, and IPv4 forwarding
off again if banger turned it on. Refuses while VMs run, unless --force,
which stops them first. VMs are found even when the daemon is stopped or
crashed (their engine processes outlive it): --force then starts the
daemon to stop them cleanly, or, if it cannot start, stops their engines
itself. The owner's images, kernels, VMs and config stay (their
directories are printed) unless --purge.`,
		Example: `  sudo banger system uninstall
  sudo banger system uninstall --force --purge`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runSystemUninstall(cmd.Context(), f, opts)
		},
	}
	cmd.Flags().BoolVar(&opts.Purge, "purge", false, "also remove the owner's banger data (images, kernels, VMs, config)")
	cmd.Flags().BoolVar(&opts.Force, "force", false, "stop running VMs instead of refusing")
	return cmd
}

func runSystemUninstall(ctx context.Context, f *Factory, opts systemUninstallOptions) error {
	if err := requireSystemd("uninstall"); err != nil {
		return err
	}
	rec, err := install.Read(install.RecordPath)
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	c := install.DaemonClient(rec)
	err = install.StopVMs(ctx, install.StopVMsOptions{
		Record: rec, Systemd: hostcmd.Systemctl{}, Daemon: c, Force: opts.Force, Log: f.IO.ErrOut,
		Engines: install.OwnerEngines(self, rec),
	})
	if err != nil {
		return err
	}
	// What the daemon set up on the host, asked while it runs. The root
	// helper's own record covers a daemon that does not answer.
	var daemonNet *api.NetworkInfo
	if n, err := c.Network(ctx); err == nil {
		daemonNet = &n
	}
	teardown := func(ctx context.Context) error {
		s, err := install.NetworkToUndo(rec.Paths, daemonNet)
		if err != nil {
			return err
		}
		if len(s.Bridges) == 0 && !s.Forwarding && daemonNet == nil {
			fmt.Fprintf(f.IO.ErrOut, "banger: neither the daemon nor the root helper's record (%s) says what banger set up on the host network: nothing to undo there\n", rec.Paths.SetupRecord())
		}
		return install.TeardownNetwork(ctx, s)
	}
	err = install.Uninstall(ctx, install.UninstallOptions{
		Record: rec, Systemd: hostcmd.Systemctl{}, Purge: opts.Purge, TeardownNetwork: teardown,
		RemoveOwnerDirs: func(ctx context.Context, o install.Owner, dirs ...string) error {
			return hostcmd.RemoveAllAs(ctx, o.UID, o.GID, dirs...)
		},
	})
	if err != nil {
		return fmt.Errorf("system uninstall: %w", err)
	}
	fmt.Fprintln(f.IO.Out, "banger's services, binaries, /etc/banger and its host networking are removed")
	if data := install.OwnerData(rec); len(data) > 0 {
		fmt.Fprintf(f.IO.Out, "%s's banger data is kept in:\n  %s\n(remove with: sudo banger system uninstall --purge, before uninstalling; or rm -rf them)\n", rec.Owner.Name, strings.Join(data, "\n  "))
	}
	return nil
}

// newSystemOwnerVMsCmd is what uninstall runs as the owner
// (install.OwnerEngines) when the daemon does not answer: it lists, as
// JSON, the VMs under --state whose engine process runs, and with --stop
// stops them and lists those it could not stop.
func newSystemOwnerVMsCmd(f *Factory) *cobra.Command {
	var state string
	var stop bool
	cmd := &cobra.Command{
		Use:    install.OwnerEnginesCommand + " --state DIR [--stop]",
		Hidden: true,
		Args:   exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !filepath.IsAbs(state) {
				return flagErrorf("--state: want an absolute path, got %q", state)
			}
			vms, err := install.LocalEngines(state)(cmd.Context(), stop)
			return errors.Join(printJSON(f, vms), err)
		},
	}
	cmd.Flags().StringVar(&state, "state", "", "the owner's banger state directory")
	cmd.Flags().BoolVar(&stop, "stop", false, "stop the VMs found")
	return cmd
}

// RenderedUnits is what system render-units prints.
type RenderedUnits struct {
	Daemon string `json:"daemon"`
	Helper string `json:"helper"`
}

// newSystemRenderUnitsCmd is for banger update, which asks the new
// release's banger for the units it would write for the installed record,
// so that the units change with the binaries.
func newSystemRenderUnitsCmd(f *Factory) *cobra.Command {
	return &cobra.Command{
		Use:    "render-units",
		Short:  "Print, as JSON, the unit files this banger writes for the install",
		Hidden: true,
		Args:   exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			rec, err := install.Read(install.RecordPath)
			if err != nil {
				return err
			}
			rec.Version, rec.Commit, rec.BuildTime = buildinfo.Version, buildinfo.Commit, buildinfo.BuildTime
			daemon, helper, err := install.Units(rec)
			if err != nil {
				return err
			}
			return printJSON(f, RenderedUnits{Daemon: string(daemon), Helper: string(helper)})
		},
	}
}

func newSystemStatusCmd(f *Factory) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status [--json]",
		Short: "Show the installed services, their versions and sockets, and any drift",
		Long: `Show what system install put in place: both units (state, main PID, whether
the unit file is what this banger would write), the versions of this banger,
the install and the running daemon, whether the daemon and the helper answer
on their sockets, and every disagreement with its fix. Exits 1 when banger is
not installed or anything drifts.`,
		Example: `  banger system status
  banger system status --json | jq .drift`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			rec, err := install.Read(install.RecordPath)
			if err != nil {
				return err
			}
			return runSystemStatus(cmd.Context(), f, rec, asJSON)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}

// runSystemStatus prints the status of the install rec; exit status 1
// when anything drifts.
func runSystemStatus(ctx context.Context, f *Factory, rec install.Record, asJSON bool) error {
	cli := api.VersionInfo{Version: buildinfo.Version, Commit: buildinfo.Commit, BuildTime: buildinfo.BuildTime, APIVersion: api.Version}
	st := install.GetStatus(ctx, rec, hostcmd.Systemctl{}, cli)
	var err error
	if asJSON {
		err = printJSON(f, st)
	} else {
		err = renderSystemStatus(f, st)
	}
	if err == nil && len(st.Drift) > 0 {
		return &ExitError{Code: ExitFailure}
	}
	return err
}

func renderSystemStatus(f *Factory, st install.Status) error {
	r := st.Install
	w := tabwriter.NewWriter(f.IO.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "install\t%s (%s, built %s) for %s (uid %d)\n", r.Version, r.Commit, r.BuildTime, r.Owner.Name, r.Owner.UID)
	fmt.Fprintf(w, "cli\t%s (%s)\n", st.CLI.Version, st.CLI.Commit)
	for _, u := range st.Units {
		cur := "current"
		if !u.Current {
			cur = "differs"
		}
		fmt.Fprintf(w, "%s\t%s/%s, %s, pid %d, unit file %s\n", u.Name, u.ActiveState, u.SubState, u.UnitFileState, u.MainPID, cur)
	}
	if st.Daemon != nil {
		fmt.Fprintf(w, "daemon\t%s (%s), pid %d, answering on %s\n", st.Daemon.Version, st.Daemon.Commit, st.Daemon.PID, st.DaemonSocket)
	} else {
		fmt.Fprintf(w, "daemon\tnot answering on %s: %s\n", st.DaemonSocket, st.DaemonError)
	}
	if st.HelperAnswering {
		fmt.Fprintf(w, "helper\tanswering on %s\n", st.HelperSocket)
	} else {
		fmt.Fprintf(w, "helper\tnot answering on %s: %s\n", st.HelperSocket, st.HelperError)
	}
	for _, d := range st.Drift {
		fmt.Fprintf(w, "drift\t%s\n", d)
	}
	return w.Flush()
}

func newSystemRestartCmd(f *Factory) *cobra.Command {
	return &cobra.Command{
		Use:   "restart",
		Short: "Restart the root helper and the daemon; running VMs keep running",
		Long: `Restart bangerd-root.service, then bangerd.service, and wait until both
answer. Only the services' own processes are signalled: running VMs keep
running and the new daemon re-attaches to them.`,
		Example: `  sudo banger system restart`,
		Args:    exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := requireSystemd("restart"); err != nil {
				return err
			}
			rec, err := install.Read(install.RecordPath)
			if err != nil {
				return err
			}
			return runSystemRestart(cmd.Context(), f, rec)
		},
	}
}

func runSystemRestart(ctx context.Context, f *Factory, rec install.Record) error {
	if err := install.Restart(ctx, hostcmd.Systemctl{}, rec); err != nil {
		return fmt.Errorf("system restart: %w", err)
	}
	fmt.Fprintf(f.IO.Out, "%s and %s restarted and answering\n", install.HelperUnitName, install.DaemonUnitName)
	return nil
}
