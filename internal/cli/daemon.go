package cli

import (
	"bytes"
	"context"
	"errors"
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
		Short: "Inspect, restart or stop the banger daemon (bangerd)",
		Long: `Without a system install, bangerd is the daemon banger starts on first use,
as you, logging to bangerd.log in your state directory. With one (banger
system install), these commands are thin aliases: status is banger system
status, logs prints the owner's bangerd.log, restart is banger system
restart, and stop is systemd's.`,
	}
	cmd.AddCommand(newDaemonStatusCmd(f), newDaemonLogsCmd(f), newDaemonRestartCmd(f), newDaemonStopCmd(f))
	return cmd
}

func newDaemonStatusCmd(f *Factory) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status [--json]",
		Short: "Show whether bangerd is running, and its version (banger system status when installed)",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if f.Installed {
				return runSystemStatus(cmd.Context(), f, f.Install, asJSON)
			}
			v, err := client.New(f.Layout.Socket()).Version(cmd.Context())
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
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}

type daemonLogsOptions struct {
	Lines  int
	Follow bool
}

func newDaemonLogsCmd(f *Factory) *cobra.Command {
	opts := daemonLogsOptions{Lines: 50}
	cmd := &cobra.Command{
		Use:   "logs [-n LINES] [-f]",
		Short: "Print the end of bangerd's log (the owner's bangerd.log when installed)",
		Example: `  banger daemon logs
  banger daemon logs -n 200 -f`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if opts.Lines < 0 {
				return flagErrorf("-n %d: want 0 or more lines", opts.Lines)
			}
			return runDaemonLogs(cmd.Context(), f, opts)
		},
	}
	cmd.Flags().IntVarP(&opts.Lines, "lines", "n", opts.Lines, "how many lines from the end")
	cmd.Flags().BoolVarP(&opts.Follow, "follow", "f", false, "keep printing what is appended, until interrupted")
	return cmd
}

// logTailWindow bounds how far back from the end daemon logs reads to
// find the last lines.
const logTailWindow = 1 << 20

func runDaemonLogs(ctx context.Context, f *Factory, opts daemonLogsOptions) error {
	path := f.Layout.DaemonLog()
	// The owner's file, read by root too: never through a symlink.
	fh, err := paths.OpenFile(path, os.O_RDONLY, 0)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%s: no daemon log yet (bangerd has not run for this user): %w", path, errdefs.ErrNotFound)
	}
	if err != nil {
		return err
	}
	defer fh.Close()
	end, err := fh.Seek(0, io.SeekEnd)
	if err != nil {
		return err
	}
	start := max(end-logTailWindow, 0)
	b := make([]byte, end-start)
	if _, err := fh.ReadAt(b, start); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("read %s: %w", path, err)
	}
	if _, err := f.IO.Out.Write(lastLines(b, opts.Lines)); err != nil || !opts.Follow {
		return err
	}
	for {
		if _, err := io.Copy(f.IO.Out, fh); err != nil {
			return fmt.Errorf("read %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// lastLines returns the last n lines of b.
func lastLines(b []byte, n int) []byte {
	if n == 0 {
		return nil
	}
	i := len(b)
	if i > 0 && b[i-1] == '\n' {
		i--
	}
	for ; n > 0; n-- {
		j := bytes.LastIndexByte(b[:i], '\n')
		if j < 0 {
			return b
		}
		i = j
	}
	return b[i+1:]
}

func newDaemonRestartCmd(f *Factory) *cobra.Command {
	return &cobra.Command{
		Use:   "restart",
		Short: "Restart bangerd; running VMs keep running (banger system restart when installed)",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if f.Installed {
				if err := requireSystemd("restart"); err != nil {
					return err
				}
				return runSystemRestart(cmd.Context(), f, f.Install)
			}
			if err := stopDevDaemon(f); err != nil {
				return err
			}
			c, err := f.Client(cmd.Context())
			if err != nil {
				return err
			}
			v, err := c.Version(cmd.Context())
			if err != nil {
				return err
			}
			fmt.Fprintf(f.IO.Out, "bangerd %s running, pid %d\n", v.Version, v.PID)
			return nil
		},
	}
}

func newDaemonStopCmd(f *Factory) *cobra.Command {
	return &cobra.Command{
		Use:   "stop",
		Short: "Stop bangerd; operations in flight are cancelled and rolled back",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if f.Installed {
				return fmt.Errorf("bangerd runs as %s under systemd: sudo systemctl stop %s (or sudo banger system restart): %w", install.DaemonUnitName, install.DaemonUnitName, errdefs.ErrFailedPrecondition)
			}
			return stopDevDaemon(f)
		},
	}
}

// stopDevDaemon stops the daemon the CLI started, if it runs, and waits
// until it has exited.
func stopDevDaemon(f *Factory) error {
	// Signal by pidfile rather than through the API, so that a daemon
	// speaking another API version can be stopped too. The pid names
	// the process to signal: read it only from this user's own runtime
	// directory, not through a symlink.
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
}

func readFile(path string) ([]byte, error) {
	fh, err := paths.OpenFile(path, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	return io.ReadAll(io.LimitReader(fh, 64))
}
