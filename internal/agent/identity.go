package agent

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/agentproto"
	"github.com/bangervm/banger/internal/buildinfo"
)

// maxEntropy bounds the host entropy the agent takes (the kernel accepts
// any size; more adds nothing).
const maxEntropy = 4096

// bootGate is the agent's handler at the ready point: it waits for the
// host's Identity, then, once the boot has finished, passes every
// operation to the real handler. Operations other than Health that arrive
// before then wait for it (within their context).
type bootGate struct {
	log *slog.Logger
	// handover is true when the agent hands PID 1 to the image's init
	// after the boot: the host must then reconnect.
	handover bool
	srv      *agentproto.Server
	ids      chan agentproto.Identity
	taken    atomic.Bool
	once     sync.Once
	ready    chan struct{}
	h        agentproto.Handler
}

func newBootGate(log *slog.Logger, handover bool) *bootGate {
	return &bootGate{log: log, handover: handover, ids: make(chan agentproto.Identity, 1), ready: make(chan struct{})}
}

// wait blocks until the host sends an identity.
func (g *bootGate) wait() agentproto.Identity { return <-g.ids }

// open passes operations to h from now on.
func (g *bootGate) open(h agentproto.Handler) {
	g.once.Do(func() { g.h = h; close(g.ready) })
}

func (g *bootGate) handler(ctx context.Context) (agentproto.Handler, error) {
	select {
	case <-g.ready:
		return g.h, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("the guest is still booting: %w", errdefs.ErrUnavailable)
	}
}

func (g *bootGate) Identify(ctx context.Context, id agentproto.Identity) (agentproto.IdentifyResult, error) {
	if err := validateIdentity(id); err != nil {
		return agentproto.IdentifyResult{}, err
	}
	if !g.taken.CompareAndSwap(false, true) {
		return agentproto.IdentifyResult{}, fmt.Errorf("identify: this guest already has its identity: %w", errdefs.ErrFailedPrecondition)
	}
	if g.handover && g.srv != nil {
		// The next host connection must reach the serving child.
		g.srv.Refuse()
	}
	g.ids <- id
	return agentproto.IdentifyResult{Reconnect: g.handover}, nil
}

func (g *bootGate) Health(ctx context.Context) (agentproto.Info, error) {
	if !g.taken.Load() {
		hn, _ := os.Hostname()
		return agentproto.Info{AgentVersion: buildinfo.Version, ProtocolVersion: agentproto.ProtocolVersion,
			Hostname: hn, PID: os.Getpid(), AwaitingIdentity: true}, nil
	}
	h, err := g.handler(ctx)
	if err != nil {
		return agentproto.Info{}, err
	}
	return h.Health(ctx)
}

// SetClock passes to the serving handler once the boot has finished.
func (g *bootGate) SetClock(ctx context.Context, t time.Time) error {
	h, err := g.handler(ctx)
	if err != nil {
		return err
	}
	cs, ok := h.(agentproto.ClockSetter)
	if !ok {
		return fmt.Errorf("set clock: this agent cannot: %w", errdefs.ErrFailedPrecondition)
	}
	return cs.SetClock(ctx, t)
}

// setClock sets the machine's wall clock.
func setClock(t time.Time) error {
	tv := unix.NsecToTimeval(t.UnixNano())
	return unix.Settimeofday(&tv)
}

func (g *bootGate) Stats(ctx context.Context) (agentproto.Stats, error) {
	h, err := g.handler(ctx)
	if err != nil {
		return agentproto.Stats{}, err
	}
	return h.Stats(ctx)
}

func (g *bootGate) Start(ctx context.Context, req agentproto.ExecRequest, stdout, stderr io.Writer) (agentproto.GuestProcess, error) {
	h, err := g.handler(ctx)
	if err != nil {
		return nil, err
	}
	return h.Start(ctx, req, stdout, stderr)
}

func (g *bootGate) Open(ctx context.Context, path string) (io.ReadCloser, agentproto.FileInfo, error) {
	h, err := g.handler(ctx)
	if err != nil {
		return nil, agentproto.FileInfo{}, err
	}
	return h.Open(ctx, path)
}

func (g *bootGate) Create(ctx context.Context, path string, mode fs.FileMode) (agentproto.PendingFile, error) {
	h, err := g.handler(ctx)
	if err != nil {
		return nil, err
	}
	return h.Create(ctx, path, mode)
}

// TarOut and TarIn pass copies on (agentproto.Archiver) once the boot
// has finished.
func (g *bootGate) TarOut(ctx context.Context, path string) (io.ReadCloser, error) {
	a, err := g.archiver(ctx)
	if err != nil {
		return nil, err
	}
	return a.TarOut(ctx, path)
}

func (g *bootGate) TarIn(ctx context.Context, dir string) (agentproto.PendingFile, error) {
	a, err := g.archiver(ctx)
	if err != nil {
		return nil, err
	}
	return a.TarIn(ctx, dir)
}

func (g *bootGate) archiver(ctx context.Context) (agentproto.Archiver, error) {
	h, err := g.handler(ctx)
	if err != nil {
		return nil, err
	}
	a, ok := h.(agentproto.Archiver)
	if !ok {
		return nil, fmt.Errorf("this agent cannot copy files: %w", errdefs.ErrFailedPrecondition)
	}
	return a, nil
}

var _ agentproto.Archiver = (*bootGate)(nil)

// Shutdown before the boot finished has nothing mounted to make safe.
func (g *bootGate) Shutdown(ctx context.Context) error {
	select {
	case <-g.ready:
		return g.h.Shutdown(ctx)
	default:
		unix.Sync()
		return nil
	}
}

func (g *bootGate) PowerOff() { powerOff(g.log) }

// validateIdentity checks what the agent will apply; the host is trusted
// but a malformed identity must fail the boot loudly, not half-apply.
func validateIdentity(id agentproto.Identity) error {
	if n := len(id.Entropy); n < agentproto.IdentityEntropy || n > maxEntropy {
		return fmt.Errorf("identify: %d bytes of entropy, want %d to %d: %w", n, agentproto.IdentityEntropy, maxEntropy, errdefs.ErrInvalidArgument)
	}
	if id.Time.IsZero() {
		return fmt.Errorf("identify: no host time: %w", errdefs.ErrInvalidArgument)
	}
	if id.MAC != "" {
		if _, err := parseUnicastMAC(id.MAC); err != nil {
			return err
		}
	}
	return nil
}

func parseUnicastMAC(s string) (net.HardwareAddr, error) {
	mac, err := net.ParseMAC(s)
	if err != nil || len(mac) != 6 || mac[0]&1 != 0 {
		return nil, fmt.Errorf("identify: MAC %q is not a unicast Ethernet address: %w", s, errdefs.ErrInvalidArgument)
	}
	return mac, nil
}

// applyIdentity makes this guest the VM the identity names, in the order
// that keeps the template's state from leaking: the kernel's random pool
// is reseeded first (nothing VM-specific has read it yet), the clock set,
// the MAC set while the link is still down. It returns cfg with the VM's
// hostname, network and SSH. Failures to reseed or set the MAC are
// returned: a clone must not run with the template's identity.
func applyIdentity(log *slog.Logger, cfg agentproto.BootConfig, id agentproto.Identity) (agentproto.BootConfig, error) {
	if err := addEntropy(id.Entropy); err != nil {
		return cfg, err
	}
	if err := setClock(id.Time); err != nil {
		log.Warn("set the clock from the host", "err", err)
	}
	if id.MAC != "" {
		if err := setMAC(defaultInterface, id.MAC, linkWait); err != nil {
			return cfg, err
		}
	}
	if cfg.Root != nil {
		// A clone's block devices may have a different file behind them
		// than the template's, whose first blocks the kernel read (and
		// cached) while probing: drop those before mounting.
		for _, dev := range []string{cfg.Root.Image, cfg.Root.Disk} {
			if err := flushBlockCache(dev); err != nil {
				return cfg, err
			}
		}
	}
	cfg.Hostname, cfg.Network, cfg.SSH = id.Hostname, id.Network, id.SSH
	cfg.AwaitIdentity = false
	log.Info("identity applied", "hostname", id.Hostname, "mac", id.MAC)
	return cfg, nil
}

// addEntropy mixes b into the kernel's input pool, credited, and forces
// the kernel's generator to reseed from it, so that two clones of one
// template read different bytes from here on.
func addEntropy(b []byte) error {
	f, err := os.OpenFile("/dev/urandom", os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("reseed the kernel's random pool: %w", err)
	}
	defer f.Close()
	buf := rndPoolInfo(b)
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.RNDADDENTROPY, uintptr(unsafe.Pointer(&buf[0]))); e != 0 {
		return fmt.Errorf("reseed the kernel's random pool: RNDADDENTROPY: %w", e)
	}
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.RNDRESEEDCRNG, 0); e != 0 {
		return fmt.Errorf("reseed the kernel's random pool: RNDRESEEDCRNG: %w", e)
	}
	return nil
}

// flushBlockCache drops the kernel's cached blocks of the block device
// dev (BLKFLSBUF). A device that is not there yet has nothing cached.
func flushBlockCache(dev string) error {
	f, err := os.Open(dev)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("flush the cache of %s: %w", dev, err)
	}
	defer f.Close()
	if err := unix.IoctlSetInt(int(f.Fd()), unix.BLKFLSBUF, 0); err != nil {
		return fmt.Errorf("flush the cache of %s: %w", dev, err)
	}
	return nil
}

// rndPoolInfo lays out struct rand_pool_info (random(4)): the entropy
// credited in bits, the buffer size in bytes, the buffer.
func rndPoolInfo(b []byte) []byte {
	buf := make([]byte, 8+len(b))
	binary.NativeEndian.PutUint32(buf[0:], uint32(len(b)*8))
	binary.NativeEndian.PutUint32(buf[4:], uint32(len(b)))
	copy(buf[8:], b)
	return buf
}

// setMAC gives the interface name the hardware address mac. The link must
// be down (it is at the ready point), which is also why it runs before the
// network is configured: nothing has used the template's address.
func setMAC(name, mac string, wait time.Duration) error {
	hw, err := parseUnicastMAC(mac)
	if err != nil {
		return err
	}
	index, err := waitLink(name, wait)
	if err != nil {
		return err
	}
	nl, err := dialRoute()
	if err != nil {
		return err
	}
	defer nl.close()
	if err := nl.do(setMACMsg(nl.next(), index, hw)); err != nil {
		return fmt.Errorf("set MAC %s on %s: %w", hw, name, err)
	}
	return nil
}

// setMACMsg is RTM_NEWLINK setting IFLA_ADDRESS on the link index.
func setMACMsg(seq uint32, index int, hw net.HardwareAddr) []byte {
	body := make([]byte, ifInfoLen)
	body[0] = unix.AF_UNSPEC
	binary.NativeEndian.PutUint32(body[4:], uint32(index))
	return nlMessage(unix.RTM_NEWLINK, requestAck, seq, body, rtAttr(unix.IFLA_ADDRESS, hw))
}
