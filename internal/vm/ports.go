package vm

import (
	"bufio"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/store"
)

// Ports lists the TCP sockets listening in a running VM, read from the
// guest's /proc/net/tcp{,6} through the agent (no network needed).
func (m *Manager) Ports(ctx context.Context, ref string) ([]api.Port, error) {
	c, v, err := m.Agent(ctx, ref)
	if err != nil {
		return nil, err
	}
	out := []api.Port{}
	seen := map[string]bool{}
	for _, f := range []struct{ path, proto string }{{"/proc/net/tcp", "tcp"}, {"/proc/net/tcp6", "tcp6"}} {
		rc, _, err := c.ReadFile(ctx, f.path)
		if err != nil {
			if errdefs.IsNotFound(err) {
				continue // no IPv6 in the guest
			}
			return nil, err
		}
		ports, err := parseProcNet(rc, f.proto)
		rc.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f.path, err)
		}
		for _, p := range ports {
			key := fmt.Sprint(p.Proto, p.Address, p.Port)
			if seen[key] {
				continue
			}
			seen[key] = true
			if v.IP != "" && !strings.HasPrefix(p.Address, "127.") && p.Address != "::1" {
				p.URL = fmt.Sprintf("%s.vm:%d", v.Name, p.Port)
			}
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Port < out[j].Port })
	return out, nil
}

// parseProcNet reads the listening sockets of /proc/net/tcp or tcp6.
func parseProcNet(r io.Reader, proto string) ([]api.Port, error) {
	rows, err := procNetRows(r)
	var out []api.Port
	for _, row := range rows {
		if row.state == tcpListen {
			out = append(out, api.Port{Proto: proto, Address: row.addr.String(), Port: row.port})
		}
	}
	return out, err
}

// TCP states in /proc/net/tcp (include/net/tcp_states.h).
const (
	tcpEstablished = "01"
	tcpListen      = "0A"
)

// procNetRow is a socket of /proc/net/tcp{,6}: its state, local end and
// remote address.
type procNetRow struct {
	state  string
	addr   netip.Addr
	port   int
	remote netip.Addr
}

// procNetRows reads /proc/net/tcp or tcp6: after a header line,
// "sl local_address rem_address st ...", addresses as HEX:PORT.
func procNetRows(r io.Reader) ([]procNetRow, error) {
	var out []procNetRow
	sc := bufio.NewScanner(r)
	first := true
	for sc.Scan() {
		if first {
			first = false
			continue
		}
		f := strings.Fields(sc.Text())
		if len(f) < 4 {
			continue
		}
		hostHex, portHex, ok := strings.Cut(f[1], ":")
		if !ok {
			continue
		}
		port, err := strconv.ParseUint(portHex, 16, 16)
		if err != nil {
			continue
		}
		addr, err := procAddr(hostHex)
		if err != nil {
			continue
		}
		remHex, _, _ := strings.Cut(f[2], ":")
		remote, _ := procAddr(remHex)
		out = append(out, procNetRow{state: f[3], addr: addr, port: int(port), remote: remote})
	}
	return out, sc.Err()
}

// procAddr decodes /proc/net's address: 32-bit words in host (little-
// endian) order.
func procAddr(h string) (netip.Addr, error) {
	b, err := hex.DecodeString(h)
	if err != nil || (len(b) != 4 && len(b) != 16) {
		return netip.Addr{}, errors.New("bad address")
	}
	for i := 0; i < len(b); i += 4 {
		b[i], b[i+1], b[i+2], b[i+3] = b[i+3], b[i+2], b[i+1], b[i]
	}
	a, _ := netip.AddrFromSlice(b)
	return a.Unmap(), nil
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
