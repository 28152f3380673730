package proc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/engine"
)

// Runtime is the part of a running VM that every engine has: the engine
// process, its pidfile and the runtime files (sockets, a jail) to remove
// once it has exited. Engines embed it in their engine.Instance for Kill
// and Wait.
type Runtime struct {
	ID  string // the VM's id, in errors
	P   *Process
	Log *slog.Logger
	// PIDFile names the process while it runs; Cleanup removes it last.
	PIDFile string
	// Files and Dirs are removed by Cleanup; empty entries are skipped.
	Files, Dirs []string
	// Release, when set, is Cleanup's last step: what the engine cannot
	// remove by path (a jail the root helper built).
	Release func() error

	mu        sync.Mutex
	agentBusy bool // the agent channel takes one client at a time
}

// PID returns the engine process's pid.
func (r *Runtime) PID() int { return r.P.PID() }

// Stats reads the engine process's CPU time and memory from /proc.
func (r *Runtime) Stats(ctx context.Context) (engine.Stats, error) {
	s, err := r.P.Stats()
	if err != nil {
		return engine.Stats{}, fmt.Errorf("vm %s: stats: %w", r.ID, err)
	}
	return s, nil
}

// DialAgentWith connects to the guest agent with dial, holding the VM's
// one agent slot until the returned connection is closed: the agent's
// channel serves a single client, and a second dial would only wait.
func (r *Runtime) DialAgentWith(ctx context.Context, dial func(context.Context) (net.Conn, error)) (net.Conn, error) {
	r.mu.Lock()
	if r.agentBusy {
		r.mu.Unlock()
		return nil, fmt.Errorf("vm %s: agent channel already in use: %w", r.ID, errdefs.ErrUnavailable)
	}
	r.agentBusy = true
	r.mu.Unlock()
	release := func() {
		r.mu.Lock()
		r.agentBusy = false
		r.mu.Unlock()
	}
	c, err := dial(ctx)
	if err != nil {
		release()
		if r.P.Exited() {
			return nil, fmt.Errorf("vm %s: dial agent: vm is not running: %w", r.ID, errdefs.ErrFailedPrecondition)
		}
		return nil, fmt.Errorf("vm %s: dial agent: %w: %w", r.ID, err, errdefs.ErrUnavailable)
	}
	return &slotConn{Conn: c, release: sync.OnceFunc(release)}, nil
}

// slotConn frees the agent slot on Close.
type slotConn struct {
	net.Conn
	release func()
}

func (c *slotConn) Close() error {
	err := c.Conn.Close()
	c.release()
	return err
}

// Exited reports whether the engine process is gone.
func (r *Runtime) Exited() bool { return r.P.Exited() }

// Kill sends SIGKILL to the engine process.
func (r *Runtime) Kill() error {
	if err := r.P.Signal(syscall.SIGKILL); err != nil {
		return fmt.Errorf("vm %s: kill: %w", r.ID, err)
	}
	return nil
}

// Wait blocks until the engine process has exited, then cleans up.
func (r *Runtime) Wait(ctx context.Context) error {
	if err := r.P.Wait(ctx); err != nil {
		return fmt.Errorf("vm %s: %w", r.ID, err)
	}
	r.Cleanup()
	return nil
}

// Cleanup removes the runtime files of the exited process; the engine's
// state file and logs stay for the caller. It does nothing unless the
// pidfile still names this process: a stale handle must not remove the
// files of a VM started again in the same directory.
func (r *Runtime) Cleanup() {
	b, err := os.ReadFile(r.PIDFile)
	if err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(r.P.PID()) {
		return
	}
	for _, p := range r.Files {
		if p != "" {
			os.Remove(p)
		}
	}
	for _, d := range r.Dirs {
		if d == "" {
			continue
		}
		if err := os.RemoveAll(d); err != nil && r.Log != nil {
			r.Log.Warn("remove runtime directory", "dir", d, "err", err)
		}
	}
	if r.Release != nil {
		if err := r.Release(); err != nil && r.Log != nil {
			r.Log.Warn("release runtime resources", "err", err)
		}
	}
	os.Remove(r.PIDFile)
}

// KillAndWait sends SIGKILL and waits for the exit (bounded by ctx), for
// the last phase of a Shutdown; what survives is an error naming the
// engine program.
func (r *Runtime) KillAndWait(ctx context.Context, program string) error {
	if err := r.P.Signal(syscall.SIGKILL); err != nil {
		return fmt.Errorf("vm %s: shutdown: %w", r.ID, err)
	}
	if err := r.P.Wait(ctx); err != nil {
		return fmt.Errorf("vm %s: shutdown: %s survived SIGKILL: %w", r.ID, program, err)
	}
	return nil
}

// ReadState reads an engine's JSON state file name in dir into v. A
// missing file is an ErrNotFound error.
func ReadState(dir, name string, v any) error {
	p := filepath.Join(dir, name)
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("no %s in %s: %w", name, dir, errdefs.ErrNotFound)
	}
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	return nil
}

// FindOwned returns the live process whose argv ours recognises: the pid
// in pidFile if it is such a process, else the first one found. It returns
// nil, nil when there is none. The argv is checked after the pid is pinned
// with a pidfd, so the argv and the handle belong to the same process.
func FindOwned(pidFile string, ours func(argv []string) bool) (*Process, error) {
	try := func(pid int) *Process {
		p, err := Open(pid)
		if err != nil {
			return nil
		}
		if argv, err := Cmdline(pid); err != nil || !ours(argv) {
			return nil
		}
		return p
	}
	if b, err := os.ReadFile(pidFile); err == nil {
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			if p := try(pid); p != nil {
				return p, nil
			}
		}
	}
	pids, err := Find(ours)
	if err != nil {
		return nil, err
	}
	for _, pid := range pids {
		if p := try(pid); p != nil {
			return p, nil
		}
	}
	return nil, nil
}
