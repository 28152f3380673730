package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/internal/config"
	"github.com/bangervm/banger/internal/network"
	"github.com/bangervm/banger/internal/roothelper"
	"github.com/bangervm/banger/internal/store"
	"github.com/bangervm/banger/internal/vm"
)

// setupNetwork prepares banger's bridge, subnet and forwarding, when the
// daemon can (root). The subnet is chosen once, avoiding every route and
// address the host has, and then kept in the state store; a later
// conflict is reported rather than silently moved. What it found and did
// goes into info, for GET /v1/network (banger doctor), as far as it got.
func setupNetwork(ctx context.Context, db *store.Store, s config.Config, log *slog.Logger, info *api.NetworkInfo) (*vm.Network, error) {
	info.Configured = s.Network
	if !s.Network {
		return nil, nil // off by choice: VMs get no NIC, and that is no error
	}
	info.Bridge = s.Bridge
	var ops network.Ops = network.Local{}
	info.Ops = api.OpsLocal
	if os.Geteuid() != 0 || !effectiveCap(capNetAdmin) {
		// An unprivileged daemon asks the root helper; without one, VMs
		// get no NIC. So does root without CAP_NET_ADMIN: the daemon of
		// a system install for root, whose unit keeps no capability.
		info.Ops, info.RootHelper = api.OpsRootHelper, s.RootHelper
		if _, err := os.Stat(s.RootHelper); err != nil {
			return nil, fmt.Errorf("bangerd is not root and no root helper answers at %s (config root_helper): start one as root with bangerd --root-helper --owner %d, or run bangerd as root", s.RootHelper, os.Getuid())
		}
		ops = roothelper.New(s.RootHelper)
	}
	subnet, err := chooseSubnet(ctx, db, s)
	if subnet.IsValid() {
		// Known even when it now conflicts, so doctor can name it.
		info.Subnet = subnet.String()
	}
	if err != nil {
		return nil, err
	}
	gw := network.Gateway(subnet)
	info.Gateway = gw.Addr().String()
	if err := ops.EnsureBridge(ctx, s.Bridge, gw); err != nil {
		return nil, fmt.Errorf("bridge %s with subnet %s: %w", s.Bridge, subnet, err)
	}
	if err := ensureForwarding(ctx, db, ops, log, info); err != nil {
		return nil, err
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

// settingForwardingBoot is the settings key holding the kernel boot id
// (/proc/sys/kernel/random/boot_id) of the boot in which bangerd turned IPv4
// forwarding on. Within that boot, forwarding found on after a daemon
// restart is still banger's, and keeps the FORWARD policy DROP; after a
// reboot, forwarding found on is someone else's choice.
const settingForwardingBoot = "forwarding_boot"

// bootIDPath is a variable for tests.
var bootIDPath = "/proc/sys/kernel/random/boot_id"

// ensureForwarding turns IPv4 forwarding on (see network.EnsureForwarding)
// and records in the state store when bangerd is the one that did.
func ensureForwarding(ctx context.Context, db *store.Store, ops network.Ops, log *slog.Logger, info *api.NetworkInfo) error {
	b, err := os.ReadFile(bootIDPath)
	if err != nil {
		return fmt.Errorf("read boot id: %w", err)
	}
	boot := strings.TrimSpace(string(b))
	recorded, err := db.Setting(ctx, settingForwardingBoot)
	if err != nil {
		return err
	}
	ours := recorded == boot
	st, err := ops.EnsureForwarding(ctx, ours)
	if err != nil {
		return err
	}
	info.ForwardingWasOn = st.WasOn && !ours
	info.ForwardPolicyDrop = st.PolicyDrop
	if !st.WasOn {
		if err := db.SetSetting(ctx, settingForwardingBoot, boot); err != nil {
			return fmt.Errorf("record that bangerd turned on IPv4 forwarding: %w", err)
		}
		log.Info("turned on IPv4 forwarding (net.ipv4.ip_forward=1) for VM traffic, with the iptables FORWARD policy DROP: the host forwards only what a rule accepts")
	}
	return nil
}

// networkOffReason says who turned host networking off, for
// NetworkInfo.Reason: the environment overrides the config file.
func networkOffReason() string {
	if os.Getenv("BANGER_NETWORK") == "off" {
		return "host networking is off: BANGER_NETWORK=off in bangerd's environment"
	}
	return "host networking is off: network = false in config.toml"
}

func chooseSubnet(ctx context.Context, db *store.Store, s config.Config) (netip.Prefix, error) {
	if s.Subnet != "" {
		p, err := netip.ParsePrefix(s.Subnet)
		if err != nil {
			return p, fmt.Errorf("config subnet %q: %w", s.Subnet, err)
		}
		return p, network.ValidateSubnet(p)
	}
	nets, err := network.HostNets(ctx)
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
		if c := network.Conflicts(p, nets, s.Bridge); len(c) > 0 {
			return p, fmt.Errorf("banger's subnet %s now overlaps %v on this host: VMs would be unreachable or shadow that network; %s", p, c, network.SubnetConflictFix)
		}
		return p, nil
	}
	p, err := network.ChooseSubnet(network.Prefixes(nets, ""), network.DefaultCandidates())
	if err != nil {
		return p, err
	}
	return p, db.SetSetting(ctx, "subnet", p.String())
}

// dnsRevertTimeout bounds reverting the resolver's settings at shutdown.
const dnsRevertTimeout = 10 * time.Second

// routeDNS has the host's resolver send queries for .vm names to banger's
// DNS server at addr (automatic where systemd-resolved runs) and returns
// what reverts it at shutdown, or nil and why not when nothing was routed.
// It only logs: .vm names still resolve at addr itself, and the daemon
// runs on. Routing again after a crash just sets the same settings.
func routeDNS(ctx context.Context, netw *vm.Network, addr netip.AddrPort, log *slog.Logger) (revert func(), whyNot string) {
	server := addr
	if a := addr.Addr(); a.IsUnspecified() {
		// Listening on every address, loopback among them.
		lo := netip.IPv6Loopback()
		if a.Is4() {
			lo = netip.AddrFrom4([4]byte{127, 0, 0, 1})
		}
		server = netip.AddrPortFrom(lo, addr.Port())
	}
	r, err := netw.Ops.RouteDNS(ctx, netw.Bridge, server)
	switch {
	case err != nil:
		log.Warn(".vm names are not routed through systemd-resolved: point your resolver at banger's DNS server for the vm domain (README, DNS)", "dns", server.String(), "err", err)
		return nil, err.Error()
	case !r.Routed:
		log.Info(".vm names are not routed system-wide: point your resolver at banger's DNS server for the vm domain (README, DNS)", "dns", server.String(), "reason", r.Reason)
		return nil, r.Reason
	}
	log.Info("routing .vm through systemd-resolved", "link", netw.Bridge, "dns", server.String())
	return func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), dnsRevertTimeout)
		defer cancel()
		if err := netw.Ops.UnrouteDNS(ctx, netw.Bridge); err != nil {
			log.Warn("revert systemd-resolved settings; see resolvectl status "+netw.Bridge, "link", netw.Bridge, "err", err)
			return
		}
		log.Info("reverted .vm routing in systemd-resolved", "link", netw.Bridge)
	}, ""
}

// capNetAdmin is CAP_NET_ADMIN's bit in the capability sets.
const capNetAdmin = 12

// effectiveCap reports whether this process has capability bit in its
// effective set (the CapEff line of /proc/self/status).
func effectiveCap(bit uint) bool {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false
	}
	return capInStatus(string(b), bit)
}

func capInStatus(status string, bit uint) bool {
	for _, line := range strings.Split(status, "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			set, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && set&(1<<bit) != 0
		}
	}
	return false
}
