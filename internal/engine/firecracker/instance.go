package firecracker

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/bangervm/banger/internal/engine"
	"github.com/bangervm/banger/internal/engine/proc"
)

// Instance is one Firecracker VM, started or attached. See engine.Instance.
type Instance struct {
	proc.Runtime // PID, Kill, Wait, Stats
	st           state
	api          *apiClient
	launcher     Launcher // the engine's, when it started st's jailer
}

// newInstance returns the Instance of firecracker process p with state st.
func newInstance(id string, st state, p *proc.Process, log *slog.Logger) *Instance {
	return &Instance{st: st, api: newAPIClient(st.APISocket), Runtime: proc.Runtime{
		ID: id, P: p, Log: log.With("vm", id),
		PIDFile: st.PIDFile, Files: []string{st.APISocket, st.VsockUDS}, Dirs: []string{st.JailDir},
	}}
}

// newInstance is newInstance with the engine's logger; a jail its
// Launcher built (root's) is removed through the Launcher, not by path.
func (e *Engine) newInstance(id string, st state, p *proc.Process) *Instance {
	inst := newInstance(id, st, p, e.log)
	if l := e.cfg.Launcher; l != nil && st.JailDir != "" && launcherJail(st) {
		inst.launcher = l
		inst.Dirs = nil
		c := JailerConfig{ID: st.JailID, ChrootBase: filepath.Dir(filepath.Dir(st.JailDir))}
		inst.Release = func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			return l.RemoveJail(ctx, c)
		}
	}
	return inst
}

// launcherJail reports whether st's jail is one a Launcher built: in the
// VM's directory (see Launcher).
func launcherJail(st state) bool {
	dir, err := filepath.Abs(filepath.Dir(st.PIDFile))
	return err == nil && filepath.Base(filepath.Dir(filepath.Dir(st.JailDir))) == JailDirName &&
		filepath.Dir(filepath.Dir(filepath.Dir(st.JailDir))) == dir
}

var (
	_ engine.Instance      = (*Instance)(nil)
	_ engine.ConsoleLogger = (*Instance)(nil)
)

// ConsoleLog is the path of the guest console log (engine.ConsoleLogger).
func (i *Instance) ConsoleLog() string { return i.st.ConsoleLog }

// dialTimeout bounds DialAgent when its context has no deadline.
const dialTimeout = 10 * time.Second

// DialAgent connects to guest vsock port engine.AgentVsockPort through
// Firecracker's vsock unix socket: it sends "CONNECT <port>\n" and reads
// "OK <host port>\n". Firecracker closes the connection while nothing
// listens on the guest port, so DialAgent retries until ctx is done
// (dialTimeout without a deadline).
func (i *Instance) DialAgent(ctx context.Context) (net.Conn, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, dialTimeout)
		defer cancel()
	}
	return i.DialAgentWith(ctx, func(ctx context.Context) (net.Conn, error) {
		return dialVsockUDS(ctx, i.st.VsockUDS, engine.AgentVsockPort)
	})
}

// dialVsockUDS does Firecracker's host-initiated vsock handshake on uds,
// retrying refused or dropped attempts until ctx is done.
func dialVsockUDS(ctx context.Context, uds string, port uint32) (*agentConn, error) {
	backoff := 20 * time.Millisecond
	for {
		c, err := connectOnce(ctx, uds, port)
		if err == nil {
			return c, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("vsock %s port %d: %w (last attempt: %w)", uds, port, ctx.Err(), err)
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 500*time.Millisecond)
	}
}

func connectOnce(ctx context.Context, uds string, port uint32) (*agentConn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", uds)
	if err != nil {
		return nil, err
	}
	// One attempt may take at most 2 s (or what ctx leaves).
	dl := time.Now().Add(2 * time.Second)
	if cd, ok := ctx.Deadline(); ok && cd.Before(dl) {
		dl = cd
	}
	c.SetDeadline(dl)
	if _, err := fmt.Fprintf(c, "CONNECT %d\n", port); err != nil {
		c.Close()
		return nil, err
	}
	br := bufio.NewReader(c)
	line, err := br.ReadString('\n')
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("no answer to CONNECT (guest not listening yet?): %w", err)
	}
	f := strings.Fields(line)
	if len(f) != 2 || f[0] != "OK" {
		c.Close()
		return nil, fmt.Errorf("answer to CONNECT: %q", strings.TrimSpace(line))
	}
	if _, err := strconv.ParseUint(f[1], 10, 32); err != nil {
		c.Close()
		return nil, fmt.Errorf("answer to CONNECT: %q", strings.TrimSpace(line))
	}
	c.SetDeadline(time.Time{})
	return &agentConn{Conn: c, r: br}, nil
}

// agentConn reads through the reader that consumed the OK line, so guest
// bytes that came with it are not lost.
type agentConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *agentConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// Shutdown waits briefly for the guest to power off by itself, then sends
// SendCtrlAltDel (the guest's reboot=k makes that a power-off, and
// Firecracker exits on reset) and waits until the deadline, then SIGKILLs.
// See engine.Instance.
func (i *Instance) Shutdown(ctx context.Context) error {
	if i.P.Exited() {
		return i.Wait(ctx)
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, engine.DefaultShutdownTimeout)
		defer cancel()
		deadline, _ = ctx.Deadline()
	}
	// Phase 1: a quarter of the budget (at most 2 s) for a guest already
	// on its way down.
	grace := min(time.Until(deadline)/4, 2*time.Second)
	gctx, gcancel := context.WithTimeout(ctx, grace)
	err := i.P.Wait(gctx)
	gcancel()
	if err == nil {
		i.Log.Info("vm powered off")
		i.Cleanup()
		return nil
	}
	// Phase 2: Ctrl+Alt+Del, the last graceful resort.
	cerr := i.api.action(ctx, "SendCtrlAltDel")
	if cerr == nil {
		if err := i.P.Wait(ctx); err == nil {
			i.Log.Info("vm powered off after Ctrl+Alt+Del")
			i.Cleanup()
			return nil
		}
	}
	// Phase 3: force, with a budget of our own since ctx is spent.
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := i.KillAndWait(fctx, "firecracker"); err != nil {
		return err
	}
	i.Cleanup()
	why := "guest did not power off before the deadline"
	if cerr != nil {
		why = "Ctrl+Alt+Del failed: " + cerr.Error()
	}
	i.Log.Warn("vm stopped by force", "how", "SIGKILL", "reason", why)
	return fmt.Errorf("vm %s: %s; stopped with SIGKILL: %w", i.ID, why, engine.ErrForced)
}

// Status asks GET / for the instance state; an exited process is
// StateExited.
func (i *Instance) Status(ctx context.Context) (engine.State, error) {
	if i.P.Exited() {
		return engine.StateExited, nil
	}
	ii, err := i.api.instanceInfo(ctx)
	if err != nil {
		if i.P.Exited() {
			return engine.StateExited, nil
		}
		return engine.StateUnknown, fmt.Errorf("vm %s: status: %w", i.ID, err)
	}
	return mapState(ii.State), nil
}

// mapState maps InstanceInfo.state to engine.State.
func mapState(s string) engine.State {
	switch s {
	case "Running":
		return engine.StateRunning
	case "Paused":
		return engine.StatePaused
	}
	return engine.StateUnknown
}
