package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/client"
	"github.com/bangervm/banger/internal/paths"
	"github.com/bangervm/banger/internal/safesocket"
	"github.com/bangervm/banger/internal/termtext"
)

// connect returns a client for the daemon of layout, starting the daemon
// first when none answers. Starting is safe when two CLIs race: the
// loser's daemon finds the lock taken and exits, and both CLIs end up
// talking to the winner. installedOwner >= 0 is a system install's
// daemon, which systemd runs as that uid: it is never started here, and
// its runtime directory and socket must be that uid's.
func connect(ctx context.Context, layout paths.Layout, installedOwner int) (*client.Client, error) {
	autostart := installedOwner < 0
	var c *client.Client
	if autostart {
		if err := layout.Check(); err != nil {
			return nil, err
		}
		c = client.New(layout.Socket())
	} else {
		if err := safesocket.CheckDir(layout.Runtime, installedOwner); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("the installed daemon's runtime directory: %w", err)
		}
		c = client.NewFor(layout.Socket(), installedOwner)
	}
	started := false
	var exited <-chan int // the daemon this CLI started, when it exits
	var logOff int64
	deadline := time.Now().Add(15 * time.Second)
	for {
		_, err := c.Version(ctx)
		switch {
		case err == nil:
			return c, nil
		case client.IsDaemonDown(err) && !autostart:
			return nil, fmt.Errorf("the installed bangerd does not answer on %s: sudo systemctl restart bangerd; journalctl -u bangerd says why (%w)", layout.Socket(), err)
		case client.IsDaemonDown(err) && !started:
			if exited, logOff, err = startDaemon(layout); err != nil {
				return nil, err
			}
			started = true
		case client.IsDaemonDown(err), transient(err):
			// Starting, or a daemon that just died and its successor
			// is on the way: wait for it.
		default:
			return nil, err
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("bangerd did not answer on %s within 15s (%v): see %s", layout.Socket(), err, layout.DaemonLog())
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case code := <-exited:
			exited = nil
			if code != api.ExitDaemonAlreadyRunning {
				// Its own words, at once, rather than 15 s of waiting.
				return nil, fmt.Errorf("bangerd exited as it started (status %d): %s (log: %s)", code, startError(layout.DaemonLog(), logOff), layout.DaemonLog())
			}
			// Another daemon holds the lock: it will answer.
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// startError returns what the daemon said about its failure in its log
// from off on: its last "bangerd: ..." line (its error, as it prints it
// on exit), else the last line; bounded and escaped for the terminal.
func startError(log string, off int64) string {
	f, err := os.Open(log)
	if err != nil {
		return "(no log)"
	}
	defer f.Close()
	b, _ := io.ReadAll(io.LimitReader(io.NewSectionReader(f, off, 64<<10), 64<<10))
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	msg := lines[len(lines)-1]
	for _, l := range slices.Backward(lines) {
		if rest, ok := strings.CutPrefix(l, "bangerd: "); ok {
			msg = rest
			break
		}
	}
	if len(msg) > 1024 {
		msg = msg[:1024] + "…"
	}
	return termtext.Escape(msg)
}

// transient reports connection errors that a retry can cure: a daemon
// that closed the connection while stopping or starting. EPIPE is the
// same close seen while the request was still being written (CLIs that
// raced to start a daemon right after one was killed saw it in CI). Only
// the version check retries, which changes nothing.
func transient(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

// daemonBinary finds bangerd: $BANGERD, then beside this executable, then
// PATH.
func daemonBinary() (string, error) {
	if p := os.Getenv("BANGERD"); p != "" {
		return p, nil
	}
	if self, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(self), "bangerd")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	p, err := exec.LookPath("bangerd")
	if err != nil {
		return "", errors.New("bangerd not found beside banger or in PATH: install both binaries (make install) or set BANGERD=/path/to/bangerd")
	}
	return p, nil
}

// startDaemon launches bangerd in its own session, detached from this
// terminal, so it outlives the CLI and ignores the terminal's Ctrl-C. The
// channel gets its exit status if it exits while this CLI runs; logOff is
// where its log stood before it started.
func startDaemon(layout paths.Layout) (exited <-chan int, logOff int64, err error) {
	bin, err := daemonBinary()
	if err != nil {
		return nil, 0, err
	}
	if err := layout.Ensure(); err != nil {
		return nil, 0, err
	}
	logf, err := paths.OpenFile(layout.DaemonLog(), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, 0, fmt.Errorf("open daemon log: %w", err)
	}
	defer logf.Close()
	if fi, err := logf.Stat(); err == nil {
		logOff = fi.Size()
	}
	cmd := exec.Command(bin)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, 0, fmt.Errorf("start %s: %w", bin, err)
	}
	// Reaped if it exits early (lost a start race, or failed); otherwise
	// it lives on.
	ch := make(chan int, 1)
	go func() {
		cmd.Wait()
		ch <- cmd.ProcessState.ExitCode()
	}()
	return ch, logOff, nil
}
