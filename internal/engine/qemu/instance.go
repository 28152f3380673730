package qemu

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/engine"
	"github.com/bangervm/banger/internal/engine/proc"
)

// Instance is one QEMU VM, started or attached. See engine.Instance.
type Instance struct {
	id  string
	st  state
	p   *proc.Process
	log *slog.Logger

	mu        sync.Mutex
	agentBusy bool
}

var (
	_ engine.Instance      = (*Instance)(nil)
	_ engine.ConsoleLogger = (*Instance)(nil)
)

// PID returns QEMU's pid.
func (i *Instance) PID() int { return i.p.PID() }

// ConsoleLog is the path of the guest console log (engine.ConsoleLogger).
func (i *Instance) ConsoleLog() string { return i.st.ConsoleLog }

// DialAgent connects to the agent channel: the virtio-serial port's unix
// socket, or vsock port engine.AgentVsockPort of the guest.
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
	var c net.Conn
	var err error
	if i.st.VsockCID != 0 {
		c, err = dialVsock(ctx, i.st.VsockCID, engine.AgentVsockPort)
	} else {
		var d net.Dialer
		c, err = d.DialContext(ctx, "unix", i.st.AgentSocket)
	}
	if err != nil {
		release()
		if i.p.Exited() {
			return nil, fmt.Errorf("vm %s: dial agent: vm is not running: %w", i.id, errdefs.ErrFailedPrecondition)
		}
		return nil, fmt.Errorf("vm %s: dial agent: %w: %w", i.id, err, errdefs.ErrUnavailable)
	}
	return &agentConn{Conn: c, release: sync.OnceFunc(release)}, nil
}

// agentConn frees the Instance's single agent slot on Close.
type agentConn struct {
	net.Conn
	release func()
}

func (c *agentConn) Close() error {
	err := c.Conn.Close()
	c.release()
	return err
}

// Shutdown presses the ACPI power button (QMP system_powerdown) and waits
// for QEMU to exit; at the deadline it sends QMP quit, and if QEMU still
// runs a moment later, SIGKILL. See engine.Instance.
func (i *Instance) Shutdown(ctx context.Context) error {
	if i.p.Exited() {
		return i.Wait(ctx)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, engine.DefaultShutdownTimeout)
		defer cancel()
	}
	// The button is pressed again every few seconds: a press that came
	// while the guest was still booting, before anything listened for
	// it, is otherwise lost.
	var perr error
	for ctx.Err() == nil {
		perr = qmpCall(ctx, i.st.QMPSocket, "system_powerdown", nil, nil)
		if perr != nil {
			break
		}
		wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := i.p.Wait(wctx)
		cancel()
		if err == nil {
			i.log.Info("vm powered off")
			i.cleanup()
			return nil
		}
	}
	// The guest ignored the button (or QMP failed): stop QEMU ourselves,
	// with a budget of our own since ctx is spent.
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	how := "QMP quit"
	qctx, qcancel := context.WithTimeout(fctx, 2*time.Second)
	qerr := qmpCall(qctx, i.st.QMPSocket, "quit", nil, nil)
	if qerr == nil {
		qerr = i.p.Wait(qctx)
	}
	qcancel()
	if qerr != nil {
		how = "SIGKILL"
		if err := i.p.Signal(syscall.SIGKILL); err != nil {
			return fmt.Errorf("vm %s: shutdown: %w", i.id, err)
		}
		if err := i.p.Wait(fctx); err != nil {
			return fmt.Errorf("vm %s: shutdown: qemu survived SIGKILL: %w", i.id, err)
		}
	}
	i.cleanup()
	why := "guest did not power off before the deadline"
	if perr != nil {
		why = "power button failed: " + perr.Error()
	}
	i.log.Warn("vm stopped by force", "how", how, "reason", why)
	return fmt.Errorf("vm %s: %s; stopped with %s: %w", i.id, why, how, engine.ErrForced)
}

// Kill sends SIGKILL to QEMU.
func (i *Instance) Kill() error {
	if err := i.p.Signal(syscall.SIGKILL); err != nil {
		return fmt.Errorf("vm %s: kill: %w", i.id, err)
	}
	return nil
}

// Wait blocks until QEMU has exited, then removes its pidfile and sockets.
func (i *Instance) Wait(ctx context.Context) error {
	if err := i.p.Wait(ctx); err != nil {
		return fmt.Errorf("vm %s: %w", i.id, err)
	}
	i.cleanup()
	return nil
}

// cleanup removes the runtime files of an exited QEMU; engine.json and the
// logs stay for the caller. It does nothing unless the pidfile still names
// this process: a stale handle must not remove the files of a VM started
// again in the same directory.
func (i *Instance) cleanup() {
	b, err := os.ReadFile(i.st.PIDFile)
	if err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(i.p.PID()) {
		return
	}
	for _, p := range []string{i.st.PIDFile, i.st.QMPSocket, i.st.AgentSocket} {
		if p != "" {
			os.Remove(p)
		}
	}
}

// qmpStatus is the reply of query-status.
type qmpStatus struct {
	Running bool   `json:"running"`
	Status  string `json:"status"`
}

// Status asks QMP query-status; an exited process is StateExited.
func (i *Instance) Status(ctx context.Context) (engine.State, error) {
	if i.p.Exited() {
		return engine.StateExited, nil
	}
	var st qmpStatus
	if err := qmpCall(ctx, i.st.QMPSocket, "query-status", nil, &st); err != nil {
		if i.p.Exited() {
			return engine.StateExited, nil
		}
		return engine.StateUnknown, fmt.Errorf("vm %s: status: %w", i.id, err)
	}
	return mapStatus(st), nil
}

// mapStatus maps QEMU's RunState to engine.State.
func mapStatus(st qmpStatus) engine.State {
	switch {
	case st.Running:
		return engine.StateRunning
	case st.Status == "shutdown" || st.Status == "guest-panicked" || st.Status == "internal-error" || st.Status == "io-error":
		return engine.StateExited
	}
	return engine.StatePaused
}

// Stats reads QEMU's CPU time and memory from /proc.
func (i *Instance) Stats(ctx context.Context) (engine.Stats, error) {
	s, err := i.p.Stats()
	if err != nil {
		return engine.Stats{}, fmt.Errorf("vm %s: stats: %w", i.id, err)
	}
	return s, nil
}

// dialVsock connects to port on the guest with context id cid.
func dialVsock(ctx context.Context, cid, port uint32) (net.Conn, error) {
	fd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("vsock socket: %w", err)
	}
	err = unix.Connect(fd, &unix.SockaddrVM{CID: cid, Port: port})
	if errors.Is(err, unix.EINPROGRESS) {
		err = waitWritable(ctx, fd)
	}
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("vsock connect %d:%d: %w", cid, port, err)
	}
	// A non-blocking fd joins Go's poller, so deadlines work.
	f := os.NewFile(uintptr(fd), fmt.Sprintf("vsock:%d:%d", cid, port))
	return &vsockConn{File: f, remote: vsockAddr{cid, port}}, nil
}

func waitWritable(ctx context.Context, fd int) error {
	for {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
		n, err := unix.Poll(fds, 50)
		if err != nil && !errors.Is(err, unix.EINTR) {
			return err
		}
		if n > 0 {
			soerr, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
			if err != nil {
				return err
			}
			if soerr != 0 {
				return unix.Errno(soerr)
			}
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}

// vsockConn is a net.Conn over a connected AF_VSOCK socket (the net
// package does not know the family).
type vsockConn struct {
	*os.File
	remote vsockAddr
}

func (c *vsockConn) LocalAddr() net.Addr  { return vsockAddr{unix.VMADDR_CID_HOST, 0} }
func (c *vsockConn) RemoteAddr() net.Addr { return c.remote }

type vsockAddr struct{ cid, port uint32 }

func (a vsockAddr) Network() string { return "vsock" }
func (a vsockAddr) String() string  { return fmt.Sprintf("%d:%d", a.cid, a.port) }
