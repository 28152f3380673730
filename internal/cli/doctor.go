package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/internal/buildinfo"
	"github.com/bangervm/banger/internal/config"
	"github.com/bangervm/banger/internal/doctor"
	"github.com/bangervm/banger/internal/hostcmd"
	"github.com/bangervm/banger/internal/install"
)

func newDoctorCmd(f *Factory) *cobra.Command {
	var fix, asJSON bool
	cmd := &cobra.Command{
		Use:   "doctor [--fix] [--json]",
		Short: "Check that this host can run banger, and say how to fix what it cannot",
		Long: `Check everything banger depends on: architecture, config, the daemon and its
socket, KVM, the engines and their versions, vhost-vsock, tun, host
networking (tools, subnet conflicts, the .vm DNS server and its routing),
the ssh-config Include, the state store and its migrations, disk space, and
for a system install its drift and the units' hardening.

Each check prints PASS, WARN, FAIL or SKIP (does not apply here), and every
finding that is not a pass has a one-line fix. With --fix, the safe fixes are
applied (tightening the modes of banger's runtime directory and socket,
installing the ssh-config Include as ssh-config --install does) and those
checks run again. The daemon is started if it is not running; when it cannot
be, that is a finding too. Exits 1 when any check fails.`,
		Example: `  banger doctor
  banger doctor --fix
  banger doctor --json | jq '.[] | select(.status != "pass")'`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			results := doctor.Run(ctx, doctorEnv(ctx, f), fix)
			if err := ctx.Err(); err != nil {
				return err
			}
			if asJSON {
				if err := printJSON(f, results); err != nil {
					return err
				}
			} else if err := renderDoctor(f.IO.Out, results); err != nil {
				return err
			}
			if doctor.Failed(results) {
				return &ExitError{Code: ExitFailure}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&fix, "fix", false, "apply the safe fixes and check again")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the checks as JSON")
	return cmd
}

// doctorEnv is the real host, with this installation's files and daemon.
// A daemon that cannot be reached or started is recorded, not returned:
// doctor reports it and goes on.
func doctorEnv(ctx context.Context, f *Factory) doctor.Env {
	env := doctor.HostEnv()
	env.Layout = f.Layout
	env.Config, env.ConfigErr = config.Load(f.Layout.ConfigFile())
	if c, err := f.Client(ctx); err != nil {
		env.DaemonErr = err
	} else {
		env.Daemon = c
	}
	env.Migrations = checkMigrations
	// The install this CLI talks to: none with BANGER_HOME set, so a
	// development or test daemon is checked as itself.
	if f.Installed {
		st := install.GetStatus(ctx, f.Install, hostcmd.Systemctl{}, api.VersionInfo{Version: buildinfo.Version, Commit: buildinfo.Commit})
		env.Install = &st
	}
	env.SSHInclude = sshDir(f).Config()
	if user, err := userSSHConfig(); err == nil {
		env.SSHConfig = user
		env.InstallSSH = func() error { return installSSHInclude(f, user) }
	}
	return env
}

// renderDoctor prints one row per check and, under each that is not a
// pass, its fix.
func renderDoctor(w io.Writer, results []doctor.Result) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CHECK\tSTATUS\tDETAIL")
	count := map[doctor.Status]int{}
	for _, r := range results {
		count[r.Status]++
		detail := r.Detail
		if r.Fixed {
			detail = "(fixed) " + detail
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", r.Name, strings.ToUpper(string(r.Status)), detail)
		if r.Status != doctor.Pass && r.Fix != "" {
			fmt.Fprintf(tw, "\t\tfix: %s\n", r.Fix)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "\n%d checks: %d pass, %d warn, %d fail, %d skip\n",
		len(results), count[doctor.Pass], count[doctor.Warn], count[doctor.Fail], count[doctor.Skip])
	return err
}

// checkMigrations asks bangerd (which links SQLite; banger does not) for
// the state store's migration level: bangerd --check-migrations --json
// exits 0, 1 or 2 with the numbers, anything else on an error.
func checkMigrations(ctx context.Context) (doctor.MigrationLevel, error) {
	bin, err := daemonBinary()
	if err != nil {
		return doctor.MigrationLevel{}, err
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, "--check-migrations", "--json")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	var ee *exec.ExitError
	if err != nil && (!errors.As(err, &ee) || ee.ExitCode() > 2) {
		return doctor.MigrationLevel{}, fmt.Errorf("%s --check-migrations: %w: %s", bin, err, strings.TrimSpace(stderr.String()))
	}
	var lvl doctor.MigrationLevel
	if err := json.Unmarshal(stdout.Bytes(), &lvl); err != nil {
		return lvl, fmt.Errorf("%s --check-migrations --json: %w", bin, err)
	}
	return lvl, nil
}
