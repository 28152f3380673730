package vm

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/agentproto"
	"github.com/bangervm/banger/internal/engine"
	"github.com/bangervm/banger/internal/network"
	"github.com/bangervm/banger/internal/store"
)

// Network is the host side of VM networking: banger's bridge and subnet
// and the firewall that applies each VM's mode. A nil *Network means VMs
// get no NIC (the daemon cannot do what needs root).
type Network struct {
	Bridge   string
	Subnet   netip.Prefix
	Firewall network.Firewall
	// OwnerUID owns the taps, so an engine running as that user can open
	// them by name.
	OwnerUID int
	// Ops performs what needs root: in-process when the daemon is root,
	// else through the root helper.
	Ops network.Ops
}

// addrs maps running VMs' names to their addresses, for the DNS server.
type addrs struct {
	mu sync.RWMutex
	m  map[string]netip.Addr
}

func (a *addrs) set(name string, addr netip.Addr) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.m == nil {
		a.m = map[string]netip.Addr{}
	}
	a.m[name] = addr
}

func (a *addrs) remove(name string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.m, name)
}

// Lookup returns the address of the running VM called name; it is the DNS
// server's lookup function.
func (m *Manager) Lookup(name string) (netip.Addr, bool) {
	m.addrs.mu.RLock()
	defer m.addrs.mu.RUnlock()
	a, ok := m.addrs.m[strings.ToLower(name)]
	return a, ok
}

// netMode decides a new VM's network mode.
func (m *Manager) netMode(req string) (string, error) {
	mode := req
	if mode == "" {
		// The default is public; with networking turned off by choice,
		// none. Networking that failed is an error, not a silent none.
		mode = api.NetPublic
		if m.cfg.Network == nil && m.cfg.NetworkErr == nil {
			mode = api.NetNone
		}
	}
	switch mode {
	case api.NetNone:
		return mode, nil
	case api.NetPublic, api.NetFull:
		if m.cfg.Network == nil {
			why := "see the daemon log"
			if m.cfg.NetworkErr != nil {
				why = m.cfg.NetworkErr.Error()
			}
			return "", fmt.Errorf("--net %s: host networking is unavailable: %s; or use --net none: %w", mode, why, errdefs.ErrFailedPrecondition)
		}
		return mode, nil
	}
	return "", fmt.Errorf("network mode %q: want none, public or full: %w", mode, errdefs.ErrInvalidArgument)
}

// vmAddr returns a VM's address, if it has a network.
func (m *Manager) vmAddr(v store.VM) (netip.Addr, bool) {
	if m.cfg.Network == nil || v.Net == api.NetNone || v.NetIndex == 0 {
		return netip.Addr{}, false
	}
	a, err := network.AddrFor(m.cfg.Network.Subnet, v.NetIndex-1)
	return a, err == nil
}

func (m *Manager) vmRules(v store.VM) (network.VMRules, error) {
	addr, ok := m.vmAddr(v)
	if !ok {
		return network.VMRules{}, errors.New("vm has no address")
	}
	tap, err := network.TapName(v.ID)
	if err != nil {
		return network.VMRules{}, err
	}
	return network.VMRules{Tap: tap, Addr: addr, Subnet: m.cfg.Network.Subnet, Mode: v.Net}, nil
}

// netUp creates the VM's tap and firewall rules before its engine starts,
// and returns what the engine and the guest need to use them.
func (m *Manager) netUp(ctx context.Context, v store.VM) (*engine.NetSpec, *agentproto.NetworkConfig, error) {
	if _, ok := m.vmAddr(v); !ok {
		return nil, nil, nil
	}
	n := m.cfg.Network
	r, err := m.vmRules(v)
	if err != nil {
		return nil, nil, err
	}
	tapFD, err := n.Ops.CreateTap(ctx, r.Tap, n.Bridge, n.OwnerUID)
	if err != nil {
		return nil, nil, fmt.Errorf("vm %s network: %w", v.Name, err)
	}
	if err := n.Ops.ApplyVMRules(ctx, n.Firewall, r); err != nil {
		if tapFD != nil {
			tapFD.Close()
		}
		n.Ops.DeleteTap(context.WithoutCancel(ctx), r.Tap)
		return nil, nil, fmt.Errorf("vm %s network: %w", v.Name, err)
	}
	gw := network.Gateway(n.Subnet)
	return &engine.NetSpec{TapName: r.Tap, TapFD: tapFD, MAC: network.MACFor(v.ID).String()},
		&agentproto.NetworkConfig{
			Interface: "eth0",
			Address:   netip.PrefixFrom(r.Addr, n.Subnet.Bits()).String(),
			Gateway:   gw.Addr().String(),
		}, nil
}

// netDown removes the VM's rules and tap; every step runs.
func (m *Manager) netDown(ctx context.Context, v store.VM) error {
	if _, ok := m.vmAddr(v); !ok {
		return nil
	}
	r, err := m.vmRules(v)
	if err != nil {
		return err
	}
	ctx = context.WithoutCancel(ctx)
	n := m.cfg.Network
	return errors.Join(n.Ops.RemoveVMRules(ctx, n.Firewall, r), n.Ops.DeleteTap(ctx, r.Tap))
}
