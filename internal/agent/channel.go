package agent

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bangervm/banger/internal/agentproto"
)

// channelWait is how long the agent looks for its channel before it
// complains; it keeps looking afterwards.
const channelWait = 10 * time.Second

// serveChannel finds the host channel and serves it until ctx ends: the
// virtio-serial port named portName if there is one, else vsock when a vsock
// device is bound.
func serveChannel(ctx context.Context, log *slog.Logger, srv *agentproto.Server, portName string) error {
	start := time.Now()
	warned := false
	for ctx.Err() == nil {
		if dev := findPort(portName); dev != "" {
			// A port can be opened only once: keep it for good.
			f, err := os.OpenFile(dev, os.O_RDWR, 0)
			if err != nil {
				return fmt.Errorf("open agent port %s: %w", dev, err)
			}
			log.Info("serving on virtio-serial", "port", portName, "dev", dev)
			err = srv.ServePort(ctx, f)
			if ctx.Err() != nil {
				// Handed to another process (see runInit), which opens
				// the port itself.
				f.Close()
			}
			return err
		}
		if vsockBound() {
			log.Info("serving on vsock", "port", agentproto.VsockPort)
			return serveVsock(ctx, log, srv)
		}
		if !warned && time.Since(start) > channelWait {
			log.Warn("no agent channel yet: no virtio-serial port and no vsock device", "port", portName)
			warned = true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return ctx.Err()
}

// findPort returns the device of the virtio-serial port called name. There
// is no udev to make /dev/virtio-ports/<name>, so sysfs is searched.
func findPort(name string) string {
	names, _ := filepath.Glob("/sys/class/virtio-ports/*/name")
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err != nil || strings.TrimSpace(string(b)) != name {
			continue
		}
		dev := "/dev/" + filepath.Base(filepath.Dir(n))
		if _, err := os.Stat(dev); err == nil {
			return dev
		}
	}
	return ""
}

// vsockBound reports whether a virtio vsock device has a driver, which
// /dev/vsock alone does not tell (it exists once the module is loaded).
func vsockBound() bool {
	m, _ := filepath.Glob("/sys/bus/virtio/drivers/vmw_vsock_virtio_transport/virtio*")
	return len(m) > 0
}

// serveVsock accepts host connections on the agent's vsock port; each is a
// session of its own.
func serveVsock(ctx context.Context, log *slog.Logger, srv *agentproto.Server) error {
	fd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("vsock socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrVM{CID: unix.VMADDR_CID_ANY, Port: agentproto.VsockPort}); err != nil {
		unix.Close(fd)
		return fmt.Errorf("vsock bind: %w", err)
	}
	if err := unix.Listen(fd, 8); err != nil {
		unix.Close(fd)
		return fmt.Errorf("vsock listen: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { unix.Close(fd) })
	defer stop()
	for {
		nfd, _, err := unix.Accept4(fd, unix.SOCK_CLOEXEC)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if err == unix.EINTR || err == unix.ECONNABORTED {
				continue
			}
			return fmt.Errorf("vsock accept: %w", err)
		}
		conn := os.NewFile(uintptr(nfd), "vsock")
		go func() {
			if err := srv.ServeConn(ctx, conn); err != nil {
				log.Info("vsock session ended", "err", err)
			}
		}()
	}
}
