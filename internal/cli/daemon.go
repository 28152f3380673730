package cli

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/bangervm/banger/client"
	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/install"
	"github.com/bangervm/banger/internal/paths"
)

func newDaemonCmd(f *Factory) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "daemon",
		Short: "Inspect or stop the banger daemon (bangerd)",
	}
	var asJSON bool
	status := &cobra.Command{
		Use:   "status",
		Short: "Show whether bangerd is running, and its version",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c := client.New(f.Layout.Socket())
			if f.Installed {
				c = client.NewFor(f.Layout.Socket(), f.InstalledOwner)
			}
			v, err := c.Version(cmd.Context())
			if err != nil {
				if client.IsDaemonDown(err) {
					fmt.Fprintf(f.IO.Out, "bangerd is not running (socket %s)\n", f.Layout.Socket())
					return nil
				}
				return err
			}
			if asJSON {
				return printJSON(f, v)
			}
			fmt.Fprintf(f.IO.Out, "bangerd %s running, pid %d, api v%s\nsocket: %s\nlog:    %s\n", v.Version, v.PID, v.APIVersion, f.Layout.Socket(), f.Layout.DaemonLog())
			return nil
		},
	}
	status.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	stop := &cobra.Command{
		Use:   "stop",
		Short: "Stop bangerd; operations in flight are cancelled and rolled back",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if f.Installed {
				return fmt.Errorf("bangerd runs as %s under systemd: sudo systemctl stop %s (or sudo banger system restart): %w", install.DaemonUnitName, install.DaemonUnitName, errdefs.ErrFailedPrecondition)
			}
			// Signal by pidfile rather than through the API, so that a
			// daemon speaking another API version can be stopped too.
			// The pid names the process to signal: read it only from
			// this user's own runtime directory, not through a symlink.
			if err := f.Layout.Check(); err != nil {
				return err
			}
			b, err := readFile(f.Layout.PIDFile())
			if err != nil {
				fmt.Fprintln(f.IO.Out, "bangerd is not running")
				return nil
			}
			pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
			if err != nil || pid <= 1 {
				return fmt.Errorf("pidfile %s holds %q: remove it", f.Layout.PIDFile(), b)
			}
			if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
				fmt.Fprintln(f.IO.Out, "bangerd is not running")
				return nil
			}
			for i := 0; i < 600; i++ {
				if syscall.Kill(pid, 0) != nil {
					fmt.Fprintf(f.IO.Out, "bangerd (pid %d) stopped\n", pid)
					return nil
				}
				time.Sleep(50 * time.Millisecond)
			}
			return fmt.Errorf("bangerd (pid %d) still running after 30s", pid)
		},
	}
	cmd.AddCommand(status, stop)
	return cmd
}

func readFile(path string) ([]byte, error) {
	fh, err := paths.OpenFile(path, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	return io.ReadAll(io.LimitReader(fh, 64))
}
