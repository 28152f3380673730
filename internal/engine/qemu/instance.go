package qemu

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bangervm/banger/internal/engine"
	"github.com/bangervm/banger/internal/engine/proc"
)

// Instance is one QEMU VM, started or attached. See engine.Instance.
// proc.Runtime gives it PID, Kill, Wait and Stats.
type Instance struct {
	proc.Runtime
	st state
}

// newInstance returns the Instance of QEMU process p with state st.
func newInstance(id string, st state, p *proc.Process, log *slog.Logger) *Instance {
	return &Instance{st: st, Runtime: proc.Runtime{
		ID: id, P: p, Log: log.With("vm", id),
		PIDFile: st.PIDFile, Files: []string{st.QMPSocket, st.AgentSocket},
	}}
}

var (
	_ engine.Instance      = (*Instance)(nil)
	_ engine.ConsoleLogger = (*Instance)(nil)
	_ engine.Pauser        = (*Instance)(nil)
)

// ConsoleLog is the path of the guest console log (engine.ConsoleLogger).
func (i *Instance) ConsoleLog() string { return i.st.ConsoleLog }

// DialAgent connects to the agent channel: the virtio-serial port's unix
// socket, or vsock port engine.AgentVsockPort of the guest.
func (i *Instance) DialAgent(ctx context.Context) (net.Conn, error) {
	return i.DialAgentWith(ctx, func(ctx context.Context) (net.Conn, error) {
		if i.st.VsockCID != 0 {
			return dialVsock(ctx, i.st.VsockCID, engine.AgentVsockPort)
		}
		var d net.Dialer
		return d.DialContext(ctx, "unix", i.st.AgentSocket)
	})
}

// Shutdown presses the ACPI power button (QMP system_powerdown) and waits
// for QEMU to exit; at the deadline it sends QMP quit, and if QEMU still
// runs a moment later, SIGKILL. See engine.Instance.
func (i *Instance) Shutdown(ctx context.Context) error {
	if i.P.Exited() {
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
		err := i.P.Wait(wctx)
		cancel()
		if err == nil {
			i.Log.Info("vm powered off")
			i.Cleanup()
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
		qerr = i.P.Wait(qctx)
	}
	qcancel()
	if qerr != nil {
		how = "SIGKILL"
		if err := i.KillAndWait(fctx, "qemu"); err != nil {
			return err
		}
	}
	i.Cleanup()
	why := "guest did not power off before the deadline"
	if perr != nil {
		why = "power button failed: " + perr.Error()
	}
	i.Log.Warn("vm stopped by force", "how", how, "reason", why)
	return fmt.Errorf("vm %s: %s; stopped with %s: %w", i.ID, why, how, engine.ErrForced)
}

// qmpStatus is the reply of query-status.
type qmpStatus struct {
	Running bool   `json:"running"`
	Status  string `json:"status"`
}

// Status asks QMP query-status; an exited process is StateExited.
func (i *Instance) Status(ctx context.Context) (engine.State, error) {
	if i.P.Exited() {
		return engine.StateExited, nil
	}
	var st qmpStatus
	if err := qmpCall(ctx, i.st.QMPSocket, "query-status", nil, &st); err != nil {
		if i.P.Exited() {
			return engine.StateExited, nil
		}
		return engine.StateUnknown, fmt.Errorf("vm %s: status: %w", i.ID, err)
	}
	return mapStatus(st), nil
}

// mapStatus maps QEMU's RunState to engine.State.
func mapStatus(st qmpStatus) engine.State {
	switch {
	case st.Running:
		return engine.StateRunning
	case st.Status == "shutdown" || st.Status == "guest-panicked" || st.Status == "internal-error":
		return engine.StateExited
	}
	return engine.StatePaused
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

// qmpBlock is one entry of query-block's reply.
type qmpBlock struct {
	Device   string `json:"device"`
	IOStatus string `json:"io-status"` // ok, failed, nospace; absent when not tracked
	Inserted *struct {
		File string `json:"file"`
	} `json:"inserted"`
}

// PauseReason asks QMP why the guest is paused (engine.Pauser): for a disk
// error (status io-error), query-block names the disk and whether the host
// ran out of space.
func (i *Instance) PauseReason(ctx context.Context) (string, error) {
	var st qmpStatus
	if err := qmpCall(ctx, i.st.QMPSocket, "query-status", nil, &st); err != nil {
		return "", fmt.Errorf("vm %s: status: %w", i.ID, err)
	}
	if mapStatus(st) != engine.StatePaused {
		return "", nil
	}
	if st.Status != "io-error" {
		return "paused by QEMU (status " + st.Status + ")", nil
	}
	var blocks []qmpBlock
	if err := qmpCall(ctx, i.st.QMPSocket, "query-block", nil, &blocks); err != nil {
		return "", fmt.Errorf("vm %s: block status: %w", i.ID, err)
	}
	return ioErrorReason(blocks), nil
}

// ioErrorReason explains an io-error pause from query-block's reply.
func ioErrorReason(blocks []qmpBlock) string {
	for _, b := range blocks {
		file := b.Device
		if b.Inserted != nil && b.Inserted.File != "" {
			file = b.Inserted.File
		}
		switch b.IOStatus {
		case "nospace":
			return "paused by QEMU: no space left on the host's file system for disk " + file
		case "failed":
			return "paused by QEMU: a host I/O error on disk " + file
		}
	}
	return "paused by QEMU after a disk I/O error"
}

// Resume continues a paused guest with QMP cont (engine.Pauser); QEMU
// retries the write that failed.
func (i *Instance) Resume(ctx context.Context) error {
	if err := qmpCall(ctx, i.st.QMPSocket, "cont", nil, nil); err != nil {
		return fmt.Errorf("vm %s: resume: %w", i.ID, err)
	}
	return nil
}
