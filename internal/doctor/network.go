package doctor

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/internal/network"
)

// restartDaemon ends the fixes that need the daemon to read its settings
// again.
const restartDaemon = "banger daemon stop (the next banger command starts it again)"

func checkNetwork(_ context.Context, f *facts) Result {
	if f.netErr != nil {
		return needsDaemon(f.netErr)
	}
	n := f.net
	switch {
	case !n.Configured && strings.Contains(n.Reason, "BANGER_NETWORK"):
		return warn(n.Reason+": VMs get no NIC", "unset BANGER_NETWORK (or set it to on) where bangerd starts, then "+restartDaemon)
	case !n.Configured:
		return warn(n.Reason+": VMs get no NIC", "set network = true in "+f.Layout.ConfigFile()+" (needs bangerd as root, or the root helper), then "+restartDaemon)
	case !n.Enabled:
		return warn("host networking failed at start, VMs get no NIC: "+n.Reason, "do what the error says, then "+restartDaemon)
	}
	ops := "root operations in-process (bangerd is root)"
	if n.Ops == api.OpsRootHelper {
		ops = "root operations through the root helper at " + n.RootHelper
	}
	fwd := "IPv4 forwarding turned on by bangerd"
	switch {
	case n.ForwardingWasOn:
		fwd = "IPv4 forwarding was already on, its FORWARD policy left as it was"
	case n.ForwardPolicyDrop:
		fwd += ", with the iptables FORWARD policy DROP (the host forwards only what a rule accepts)"
	}
	return pass("bridge %s, subnet %s, gateway %s; %s; %s", n.Bridge, n.Subnet, n.Gateway, ops, fwd)
}

// networkTools are the host programs that bridge, taps and firewall need,
// with the Debian package of each.
var networkTools = []struct{ name, pkg string }{
	{"ip", "iproute2"},
	{"iptables", "iptables"},
	{"nft", "nftables"},
}

func checkNetworkTools(_ context.Context, f *facts) Result {
	var missing, pkgs []string
	for _, t := range networkTools {
		if _, err := f.LookPath(t.name); err != nil {
			missing = append(missing, t.name)
			pkgs = append(pkgs, t.pkg)
		}
	}
	switch {
	case len(missing) == 0:
		return pass("ip, iptables and nft found")
	case !f.networkWanted():
		return skip("%s not found; only host networking needs them, and it is off", strings.Join(missing, ", "))
	}
	return fail(strings.Join(missing, ", ")+" not found: host networking cannot work", "sudo apt-get install "+strings.Join(pkgs, " "))
}

// checkSubnet looks again, now, for networks that appeared on the host
// since the daemon chose its subnet (a VPN, a Docker bridge).
func checkSubnet(ctx context.Context, f *facts) Result {
	if f.netErr != nil {
		return needsDaemon(f.netErr)
	}
	if f.net.Subnet == "" {
		if !f.net.Configured {
			return skip("host networking is off")
		}
		return skip("no subnet chosen: host networking stopped before that (see the network check)")
	}
	p, err := netip.ParsePrefix(f.net.Subnet)
	if err != nil {
		return fail(fmt.Sprintf("the daemon's subnet %q: %v", f.net.Subnet, err), network.SubnetConflictFix)
	}
	nets, err := f.HostNets(ctx)
	if err != nil {
		return fail(fmt.Sprintf("list this host's networks: %v", err), "sudo apt-get install iproute2")
	}
	if c := network.Conflicts(p, nets, f.net.Bridge); len(c) > 0 {
		names := make([]string, len(c))
		for i, n := range c {
			names[i] = n.String()
		}
		return fail(fmt.Sprintf("banger's subnet %s overlaps %s on this host", p, strings.Join(names, ", ")), network.SubnetConflictFix)
	}
	return pass("subnet %s on %s overlaps no other network on this host", p, f.net.Bridge)
}

// dnsTimeout bounds the query to the daemon's DNS server, which answers
// from memory.
const dnsTimeout = 3 * time.Second

// checkDNS asks the daemon's DNS server for a name no VM has and expects
// NXDOMAIN: proof that banger's own server, not something else on that
// port, answers for .vm.
func checkDNS(ctx context.Context, f *facts) Result {
	if f.netErr != nil {
		return needsDaemon(f.netErr)
	}
	const fix = "set dns_addr in config.toml to a free address (e.g. 127.0.0.1:42070), then " + restartDaemon
	if f.net.DNSAddr == "" {
		return fail("bangerd serves no .vm DNS: "+f.net.DNSError, fix)
	}
	addr, err := netip.ParseAddrPort(f.net.DNSAddr)
	if err != nil {
		return fail(fmt.Sprintf("the daemon's DNS address %q: %v", f.net.DNSAddr, err), fix)
	}
	addr = dnsServer(addr)
	b := make([]byte, 6)
	rand.Read(b)
	name := "doctor-" + hex.EncodeToString(b) + ".vm."
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeA)
	c := dns.Client{Timeout: dnsTimeout}
	ctx, cancel := context.WithTimeout(ctx, dnsTimeout)
	defer cancel()
	resp, _, err := c.ExchangeContext(ctx, m, addr.String())
	switch {
	case err != nil:
		return fail(fmt.Sprintf("no DNS answer from %s for %s: %v", addr, name, err), "see the daemon log: "+f.Layout.DaemonLog())
	case resp.Rcode != dns.RcodeNameError:
		return fail(fmt.Sprintf("%s answered %s for %s, want NXDOMAIN: is another server on that port?", addr, dns.RcodeToString[resp.Rcode], name), fix)
	}
	return pass("%s answers NXDOMAIN for %s", addr, strings.TrimSuffix(name, "."))
}

// dnsServer is where to ask a server listening on addr: loopback for a
// server on every address.
func dnsServer(addr netip.AddrPort) netip.AddrPort {
	switch a := addr.Addr(); {
	case a.Is4() && a.IsUnspecified():
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), addr.Port())
	case a.IsUnspecified():
		return netip.AddrPortFrom(netip.IPv6Loopback(), addr.Port())
	}
	return addr
}

func checkDNSRouting(_ context.Context, f *facts) Result {
	if f.netErr != nil {
		return needsDaemon(f.netErr)
	}
	n := f.net
	switch {
	case !n.Enabled:
		return skip("%s: VMs have no addresses for .vm names", n.DNSRouteReason)
	case n.DNSRouted:
		return pass(".vm is routed through systemd-resolved on %s to %s: every program resolves NAME.vm", n.Bridge, n.DNSAddr)
	case n.DNSAddr == "":
		return skip("no .vm DNS server to route to (see the dns check)")
	}
	server, port := n.DNSAddr, "53"
	if ap, err := netip.ParseAddrPort(n.DNSAddr); err == nil {
		ap = dnsServer(ap)
		server, port = ap.Addr().String(), fmt.Sprint(ap.Port())
	}
	return warn(fmt.Sprintf(".vm names resolve only at %s, not system-wide: %s", n.DNSAddr, n.DNSRouteReason),
		fmt.Sprintf("point your resolver at it for .vm, e.g. a dnsmasq line server=/vm/%s#%s (ssh NAME.vm works anyway after banger ssh-config --install)", server, port))
}
