package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"

	"github.com/bangervm/banger/internal/config"
	"github.com/bangervm/banger/internal/network"
	"github.com/bangervm/banger/internal/roothelper"
	"github.com/bangervm/banger/internal/store"
	"github.com/bangervm/banger/internal/vm"
)

// setupNetwork prepares banger's bridge, subnet and forwarding, when the
// daemon can (root). The subnet is chosen once, avoiding every route and
// address the host has, and then kept in the state store; a later
// conflict is reported rather than silently moved.
func setupNetwork(ctx context.Context, db *store.Store, s config.Config, log *slog.Logger) (*vm.Network, error) {
	if !s.Network {
		return nil, nil // off by choice: VMs get no NIC, and that is no error
	}
	var ops network.Ops = network.Local{}
	if os.Geteuid() != 0 {
		// An unprivileged daemon asks the root helper; without one, VMs
		// get no NIC.
		if _, err := os.Stat(s.RootHelper); err != nil {
			return nil, fmt.Errorf("bangerd is not root and no root helper answers at %s (config root_helper): start one as root with bangerd --root-helper --owner %d, or run bangerd as root", s.RootHelper, os.Getuid())
		}
		ops = roothelper.New(s.RootHelper)
	}
	subnet, err := chooseSubnet(ctx, db, s)
	if err != nil {
		return nil, err
	}
	gw := network.Gateway(subnet)
	if err := ops.EnsureBridge(ctx, s.Bridge, gw); err != nil {
		return nil, err
	}
	wasOn, err := ops.EnsureForwarding(ctx)
	if err != nil {
		return nil, err
	}
	if !wasOn {
		log.Info("turned on IPv4 forwarding (net.ipv4.ip_forward=1) for VM traffic")
	}
	fw := network.Firewall{Bridge: s.Bridge, Subnet: subnet}
	if err := ops.EnsureFirewall(ctx, fw); err != nil {
		return nil, err
	}
	log.Info("host networking", "bridge", s.Bridge, "subnet", subnet.String(), "gateway", gw.Addr().String())
	return &vm.Network{
		Bridge:   s.Bridge,
		Subnet:   subnet,
		Firewall: fw,
		Ops:      ops,
		OwnerUID: os.Getuid(),
	}, nil
}

func chooseSubnet(ctx context.Context, db *store.Store, s config.Config) (netip.Prefix, error) {
	if s.Subnet != "" {
		p, err := netip.ParsePrefix(s.Subnet)
		if err != nil {
			return p, fmt.Errorf("config subnet %q: %w", s.Subnet, err)
		}
		return p, network.ValidateSubnet(p)
	}
	inUse, err := network.HostPrefixes(ctx)
	if err != nil {
		return netip.Prefix{}, err
	}
	if v, err := db.Setting(ctx, "subnet"); err != nil {
		return netip.Prefix{}, err
	} else if v != "" {
		p, err := netip.ParsePrefix(v)
		if err != nil {
			return p, err
		}
		// The subnet is kept once chosen; a network that appeared on the
		// host since (a VPN, a Docker bridge) is reported, not moved
		// around silently.
		if c := conflicts(p, inUse); len(c) > 0 {
			return p, fmt.Errorf("banger's subnet %s now overlaps %v on this host: VMs would be unreachable or shadow that network; set subnet = \"<free /24>\" in config.toml (or remove the conflicting network) and restart bangerd", p, c)
		}
		return p, nil
	}
	p, err := network.ChooseSubnet(inUse, network.DefaultCandidates())
	if err != nil {
		return p, err
	}
	return p, db.SetSetting(ctx, "subnet", p.String())
}

// conflicts returns the host's prefixes that overlap subnet, other than
// banger's own bridge's (the subnet itself).
func conflicts(subnet netip.Prefix, inUse []netip.Prefix) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range inUse {
		// banger's own bridge: its network, and the local and broadcast
		// host routes of its address.
		if p.Masked() == subnet.Masked() || p.Bits() == 0 || (p.Bits() == 32 && subnet.Contains(p.Addr())) {
			continue
		}
		if p.Overlaps(subnet) {
			out = append(out, p)
		}
	}
	return out
}
