package firecracker

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/engine"
	"github.com/bangervm/banger/internal/engine/proc"
)

// Instance is one Firecracker VM, started or attached. See engine.Instance.
type Instance struct {
	id  string
	st  state
	p   *proc.Process
	api *apiClient
	log *slog.Logger

	mu        sync.Mutex
	agentBusy bool
}

var (
	_ engine.Instance      = (*Instance)(nil)
	_ engine.ConsoleLogger = (*Instance)(nil)
)

// PID returns firecracker's pid.
func (i *Instance) PID() int { return i.p.PID() }

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
	i.mu.Lock()
	if i.agentBusy {
		i.mu.Unlock()
		return nil, fmt.Errorf("vm %s: agent channel already in use: %w", i.id, errdefs.ErrUnavailable)
	}
	i.agentBusy = true
	i.mu.Unlock()
	release := func() {
		i.mu.Lock()
		i.agentBusy = false
		i.mu.Unlock()
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, dialTimeout)
		defer cancel()
	}
	c, err := dialVsockUDS(ctx, i.st.VsockUDS, engine.AgentVsockPort)
	if err != nil {
		release()
		if i.p.Exited() {
			return nil, fmt.Errorf("vm %s: dial agent: vm is not running: %w", i.id, errdefs.ErrFailedPrecondition)
		}
		return nil, fmt.Errorf("vm %s: dial agent: %w: %w", i.id, err, errdefs.ErrUnavailable)
	}
	c.release = sync.OnceFunc(release)
	return c, nil
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
	return &agentConn{Conn: c, r: br, release: func() {}}, nil
}

// agentConn reads through the reader that consumed the OK line, so guest
// bytes that came with it are not lost, and frees the Instance's single
// agent slot on Close.
type agentConn struct {
	net.Conn
	r       *bufio.Reader
	release func()
}

func (c *agentConn) Read(p []byte) (int, error) { return c.r.Read(p) }

func (c *agentConn) Close() error {
	err := c.Conn.Close()
	c.release()
	return err
}

// Shutdown waits briefly for the guest to power off by itself, then sends
// SendCtrlAltDel (the guest's reboot=k makes that a power-off, and
// Firecracker exits on reset) and waits until the deadline, then SIGKILLs.
// See engine.Instance.
func (i *Instance) Shutdown(ctx context.Context) error {
	if i.p.Exited() {
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
	err := i.p.Wait(gctx)
	gcancel()
	if err == nil {
		i.log.Info("vm powered off")
		i.cleanup()
		return nil
	}
	// Phase 2: Ctrl+Alt+Del, the last graceful resort.
	cerr := i.api.action(ctx, "SendCtrlAltDel")
	if cerr == nil {
		if err := i.p.Wait(ctx); err == nil {
			i.log.Info("vm powered off after Ctrl+Alt+Del")
			i.cleanup()
			return nil
		}
	}
	// Phase 3: force, with a budget of our own since ctx is spent.
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := i.p.Signal(syscall.SIGKILL); err != nil {
		return fmt.Errorf("vm %s: shutdown: %w", i.id, err)
	}
	if err := i.p.Wait(fctx); err != nil {
		return fmt.Errorf("vm %s: shutdown: firecracker survived SIGKILL: %w", i.id, err)
	}
	i.cleanup()
	why := "guest did not power off before the deadline"
	if cerr != nil {
		why = "Ctrl+Alt+Del failed: " + cerr.Error()
	}
	i.log.Warn("vm stopped by force", "how", "SIGKILL", "reason", why)
	return fmt.Errorf("vm %s: %s; stopped with SIGKILL: %w", i.id, why, engine.ErrForced)
}

// Kill sends SIGKILL to firecracker.
func (i *Instance) Kill() error {
	if err := i.p.Signal(syscall.SIGKILL); err != nil {
		return fmt.Errorf("vm %s: kill: %w", i.id, err)
	}
	return nil
}

// Wait blocks until firecracker has exited, then removes its pidfile,
// sockets and jail.
func (i *Instance) Wait(ctx context.Context) error {
	if err := i.p.Wait(ctx); err != nil {
		return fmt.Errorf("vm %s: %w", i.id, err)
	}
	i.cleanup()
	return nil
}

// cleanup removes the runtime files of an exited firecracker; engine.json
// and the logs in Spec.Dir stay for the caller. It does nothing unless the
// pidfile still names this process: a stale handle must not remove the
// files of a VM started again in the same directory.
func (i *Instance) cleanup() {
	b, err := os.ReadFile(i.st.PIDFile)
	if err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(i.p.PID()) {
		return
	}
	for _, p := range []string{i.st.APISocket, i.st.VsockUDS, i.st.PIDFile} {
		os.Remove(p)
	}
	if i.st.JailDir != "" {
		if err := os.RemoveAll(i.st.JailDir); err != nil {
			i.log.Warn("remove jail", "err", err)
		}
	}
}

// Status asks GET / for the instance state; an exited process is
// StateExited.
func (i *Instance) Status(ctx context.Context) (engine.State, error) {
	if i.p.Exited() {
		return engine.StateExited, nil
	}
	ii, err := i.api.instanceInfo(ctx)
	if err != nil {
		if i.p.Exited() {
			return engine.StateExited, nil
		}
		return engine.StateUnknown, fmt.Errorf("vm %s: status: %w", i.id, err)
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

// Stats reads firecracker's CPU time and memory from /proc.
func (i *Instance) Stats(ctx context.Context) (engine.Stats, error) {
	s, err := i.p.Stats()
	if err != nil {
		return engine.Stats{}, fmt.Errorf("vm %s: stats: %w", i.id, err)
	}
	return s, nil
}
