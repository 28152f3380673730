package vm

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/guestdata"
	"github.com/bangervm/banger/internal/store"
)

// Ports lists the TCP sockets listening in a running VM, read from the
// guest's /proc/net/tcp{,6} through the agent (no network needed), each
// read bounded in size and time (readGuest).
func (m *Manager) Ports(ctx context.Context, ref string) ([]api.Port, error) {
	c, v, err := m.Agent(ctx, ref)
	if err != nil {
		return nil, err
	}
	out := []api.Port{}
	seen := map[netip.AddrPort]bool{}
	for _, f := range []struct{ path, proto string }{{"/proc/net/tcp", "tcp"}, {"/proc/net/tcp6", "tcp6"}} {
		rows, err := readGuest(ctx, c, f.path, procNet(f.path))
		if errdefs.IsNotFound(err) {
			continue // no IPv6 in the guest
		}
		if err != nil {
			return nil, fmt.Errorf("vm %s: %w", v.Name, err)
		}
		for _, r := range rows {
			if r.State != guestdata.TCPListen || seen[r.Local] {
				continue
			}
			seen[r.Local] = true
			p := api.Port{Proto: f.proto, Address: r.Local.Addr().String(), Port: int(r.Local.Port())}
			if v.IP != "" && !r.Local.Addr().IsLoopback() {
				p.URL = fmt.Sprintf("%s.vm:%d", v.Name, p.Port)
			}
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Port < out[j].Port })
	return out, nil
}

// procNet is a readGuest parser of a /proc/net file, at the default limits.
func procNet(path string) func(io.Reader) ([]guestdata.Socket, error) {
	return func(r io.Reader) ([]guestdata.Socket, error) { return guestdata.ProcNet(path, r, guestdata.Limits{}) }
}

// forwarder runs the listeners of active forwards.
type forwarder struct {
	mu  sync.Mutex
	lns map[string]net.Listener // host addr:port
}

func fwdKey(f store.Forward) string { return net.JoinHostPort(f.HostAddr, strconv.Itoa(f.HostPort)) }

func (fw *forwarder) active(f store.Forward) bool {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	return fw.lns[fwdKey(f)] != nil
}

// open listens on the forward's host port and relays each connection to
// the guest's port over banger's bridge.
func (fw *forwarder) open(f store.Forward, guest netip.Addr) error {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	key := fwdKey(f)
	if fw.lns == nil {
		fw.lns = map[string]net.Listener{}
	}
	if fw.lns[key] != nil {
		return nil
	}
	ln, err := net.Listen("tcp", key)
	if err != nil {
		return fmt.Errorf("forward %s: %w", key, err)
	}
	fw.lns[key] = ln
	target := net.JoinHostPort(guest.String(), strconv.Itoa(f.GuestPort))
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go relay(c, target)
		}
	}()
	return nil
}

func relay(c net.Conn, target string) {
	defer c.Close()
	g, err := net.DialTimeout("tcp", target, 10*time.Second)
	if err != nil {
		return
	}
	defer g.Close()
	done := make(chan struct{}, 2)
	go func() { io.Copy(g, c); g.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
	go func() { io.Copy(c, g); c.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
	<-done
	<-done
}

func (fw *forwarder) close(f store.Forward) {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	if ln := fw.lns[fwdKey(f)]; ln != nil {
		ln.Close()
		delete(fw.lns, fwdKey(f))
	}
}

// openForwards starts the listeners of a running VM's forwards.
func (m *Manager) openForwards(ctx context.Context, v store.VM) {
	addr, ok := m.vmAddr(v)
	if !ok {
		return
	}
	fs, _ := m.cfg.DB.Forwards(ctx, v.ID)
	for _, f := range fs {
		if err := m.fwd.open(f, addr); err != nil {
			m.log.Warn("open forward", "vm", v.ID, "err", err)
		}
	}
}

// closeForwards stops the listeners of a VM's forwards (they stay
// defined, for its next start).
func (m *Manager) closeForwards(ctx context.Context, v store.VM) {
	fs, _ := m.cfg.DB.Forwards(ctx, v.ID)
	for _, f := range fs {
		m.fwd.close(f)
	}
}

func (m *Manager) forwardsOf(ctx context.Context, v store.VM) []api.Forward {
	fs, _ := m.cfg.DB.Forwards(ctx, v.ID)
	var out []api.Forward
	for _, f := range fs {
		out = append(out, api.Forward{HostAddr: f.HostAddr, HostPort: f.HostPort, GuestPort: f.GuestPort, Active: m.fwd.active(f)})
	}
	return out
}

// AddForward relays hostAddr:hostPort (127.0.0.1 by default) to the VM's
// guestPort. It is kept with the VM, active while the VM runs, and
// removed with it.
func (m *Manager) AddForward(ctx context.Context, ref string, f api.Forward) (api.Forward, error) {
	v, h, unlock, err := m.lockVM(ctx, ref)
	if err != nil {
		return api.Forward{}, err
	}
	defer unlock()
	if f.HostAddr == "" {
		f.HostAddr = "127.0.0.1"
	}
	if _, err := netip.ParseAddr(f.HostAddr); err != nil {
		return api.Forward{}, fmt.Errorf("host address %q: %w", f.HostAddr, errdefs.ErrInvalidArgument)
	}
	if f.HostPort < 1 || f.HostPort > 65535 || f.GuestPort < 1 || f.GuestPort > 65535 {
		return api.Forward{}, fmt.Errorf("ports %d:%d: want 1 to 65535: %w", f.HostPort, f.GuestPort, errdefs.ErrInvalidArgument)
	}
	addr, ok := m.vmAddr(v)
	if !ok {
		return api.Forward{}, fmt.Errorf("vm %s has no network (--net none, or bangerd is not root): forwards need one: %w", v.Name, errdefs.ErrFailedPrecondition)
	}
	rec := store.Forward{VM: v.ID, HostAddr: f.HostAddr, HostPort: f.HostPort, GuestPort: f.GuestPort}
	if err := m.cfg.DB.PutForward(ctx, rec); err != nil {
		return api.Forward{}, err
	}
	if m.alive(h) {
		if err := m.fwd.open(rec, addr); err != nil {
			m.cfg.DB.DeleteForward(context.WithoutCancel(ctx), v.ID, f.HostPort)
			return api.Forward{}, fmt.Errorf("%w: choose another host port", err)
		}
	}
	f.Active = m.fwd.active(rec)
	return f, nil
}

// RemoveForward removes a VM's forward of hostPort.
func (m *Manager) RemoveForward(ctx context.Context, ref string, hostPort int) error {
	v, _, unlock, err := m.lockVM(ctx, ref)
	if err != nil {
		return err
	}
	defer unlock()
	fs, _ := m.cfg.DB.Forwards(ctx, v.ID)
	for _, f := range fs {
		if f.HostPort == hostPort {
			m.fwd.close(f)
		}
	}
	return m.cfg.DB.DeleteForward(ctx, v.ID, hostPort)
}

// Forwards lists a VM's forwards.
func (m *Manager) Forwards(ctx context.Context, ref string) ([]api.Forward, error) {
	v, err := m.cfg.DB.GetVM(ctx, ref)
	if err != nil {
		return nil, err
	}
	out := m.forwardsOf(ctx, v)
	if out == nil {
		out = []api.Forward{}
	}
	return out, nil
}
