package network

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/hostcmd"
)

// DefaultRanges returns the ranges banger takes its subnet from unless
// configured otherwise, in order of preference: 172.30.0.0/16,
// 10.213.0.0/16, 192.168.213.0/24. They are also the root helper's
// default allowed ranges.
func DefaultRanges() []netip.Prefix {
	return []netip.Prefix{
		netip.MustParsePrefix("172.30.0.0/16"),
		netip.MustParsePrefix("10.213.0.0/16"),
		netip.MustParsePrefix("192.168.213.0/24"),
	}
}

// DefaultCandidates returns the /24s ChooseSubnet tries by default: those
// of DefaultRanges, in order.
func DefaultCandidates() []netip.Prefix {
	var c []netip.Prefix
	for _, r := range DefaultRanges() {
		c = append(c, Split24(r)...)
	}
	return c
}

// Split24 splits an IPv4 prefix of length 24 or shorter into its /24s.
func Split24(p netip.Prefix) []netip.Prefix {
	p = p.Masked()
	if !p.Addr().Is4() || p.Bits() > 24 {
		return nil
	}
	n := 1 << (24 - p.Bits())
	out := make([]netip.Prefix, 0, n)
	b := p.Addr().As4()
	base := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8
	for i := range n {
		v := base + uint32(i)<<8
		out = append(out, netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), 0}), 24))
	}
	return out
}

// ChooseSubnet returns the first candidate /24 that overlaps none of inUse
// (the host's routes and interface addresses, from HostPrefixes). Routes of
// length 0 or 1 (a default route, or a VPN's 0/1 + 128/1 pair) are ignored:
// they overlap everything and do not make a subnet unusable.
func ChooseSubnet(inUse []netip.Prefix, candidates []netip.Prefix) (netip.Prefix, error) {
	for _, c := range candidates {
		if ValidateSubnet(c) != nil {
			continue
		}
		if !slices.ContainsFunc(inUse, func(u netip.Prefix) bool { return occupies(u, c) }) {
			return c, nil
		}
	}
	return netip.Prefix{}, fmt.Errorf("choose subnet: all %d candidates overlap the host's networks: %w", len(candidates), errdefs.ErrFailedPrecondition)
}

// occupies reports whether the host network u makes subnet c unusable: it
// overlaps c and is not a route of length 0 or 1 (a default route, or a
// VPN's 0/1 + 128/1 pair), which overlaps everything.
func occupies(u, c netip.Prefix) bool {
	return u.IsValid() && u.Bits() > 1 && u.Overlaps(c)
}

// HostNet is one IPv4 network of a network namespace: a route's
// destination, or an interface address's network, with the interface it
// belongs to.
type HostNet struct {
	Prefix netip.Prefix
	// Dev is the interface; "" for a route without one (unreachable,
	// blackhole, or several next hops).
	Dev string
}

func (n HostNet) String() string {
	if n.Dev == "" {
		return n.Prefix.String()
	}
	return n.Prefix.String() + " on " + n.Dev
}

// HostNets returns the IPv4 networks of every route (in all routing
// tables) and every interface address of the calling thread's network
// namespace, default routes excluded.
func HostNets(ctx context.Context) ([]HostNet, error) {
	var routes []struct {
		Dst string `json:"dst"`
		Dev string `json:"dev"`
	}
	if err := hostcmd.IPJSON(ctx, &routes, "-4", "route", "show", "table", "all"); err != nil {
		return nil, fmt.Errorf("host networks: %w", err)
	}
	addrs, err := addrNets(ctx)
	if err != nil {
		return nil, err
	}
	var out []HostNet
	for _, r := range routes {
		if p, ok := parseDst(r.Dst); ok {
			out = append(out, HostNet{Prefix: p, Dev: r.Dev})
		}
	}
	out = append(out, addrs...)
	slices.SortFunc(out, func(a, b HostNet) int {
		if c := a.Prefix.Addr().Compare(b.Prefix.Addr())*64 + a.Prefix.Bits() - b.Prefix.Bits(); c != 0 {
			return c
		}
		return strings.Compare(a.Dev, b.Dev)
	})
	return slices.Compact(out), nil
}

// HostPrefixes returns the prefixes of HostNets without duplicates, for
// ChooseSubnet.
func HostPrefixes(ctx context.Context) ([]netip.Prefix, error) {
	nets, err := HostNets(ctx)
	if err != nil {
		return nil, err
	}
	return Prefixes(nets, ""), nil
}

// Prefixes returns the prefixes of nets without duplicates, leaving out
// those on interface except ("" for none): banger's bridge, whose subnet
// is no reason to choose another.
func Prefixes(nets []HostNet, except string) []netip.Prefix {
	var out []netip.Prefix
	for _, n := range nets {
		if except == "" || n.Dev != except {
			out = append(out, n.Prefix)
		}
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr())*64 + a.Bits() - b.Bits() })
	return slices.Compact(out)
}

// addrNets returns the networks of the namespace's IPv4 interface
// addresses (masked, e.g. 10.77.0.0/24 for 10.77.0.1/24).
func addrNets(ctx context.Context) ([]HostNet, error) {
	var links []struct {
		Name     string `json:"ifname"`
		AddrInfo []struct {
			Local     string `json:"local"`
			PrefixLen int    `json:"prefixlen"`
		} `json:"addr_info"`
	}
	if err := hostcmd.IPJSON(ctx, &links, "-4", "addr", "show"); err != nil {
		return nil, fmt.Errorf("host addresses: %w", err)
	}
	var out []HostNet
	for _, l := range links {
		for _, a := range l.AddrInfo {
			addr, err := netip.ParseAddr(a.Local)
			if err != nil || !addr.Is4() {
				continue
			}
			if p, err := addr.Prefix(a.PrefixLen); err == nil {
				out = append(out, HostNet{Prefix: p, Dev: l.Name})
			}
		}
	}
	return out, nil
}

// hostAddrPrefixes returns the prefixes of addrNets.
func hostAddrPrefixes(ctx context.Context) ([]netip.Prefix, error) {
	nets, err := addrNets(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]netip.Prefix, len(nets))
	for i, n := range nets {
		out[i] = n.Prefix
	}
	return out, nil
}

// Conflicts returns the nets that make subnet unusable for bridge: those
// that overlap it, other than bridge's own (its address and routes) and
// routes of length 0 or 1, which overlap everything.
func Conflicts(subnet netip.Prefix, nets []HostNet, bridge string) []HostNet {
	var out []HostNet
	for _, n := range nets {
		if (n.Dev == "" || n.Dev != bridge) && occupies(n.Prefix, subnet) {
			out = append(out, n)
		}
	}
	return out
}

// SubnetConflictFix is what to do when banger's subnet overlaps another
// network of the host.
const SubnetConflictFix = `set subnet = "<free /24>" in config.toml (or remove the conflicting network) and restart bangerd`

// CheckSubnetFree refuses subnet for bridge if it overlaps an address or a
// route of another interface of the calling thread's network namespace: a
// bridge there would shadow that network (the user's LAN, a VPN, a Docker
// bridge) for the whole host. The error is errdefs.ErrFailedPrecondition
// and names the networks and the fix.
func CheckSubnetFree(ctx context.Context, bridge string, subnet netip.Prefix) error {
	nets, err := HostNets(ctx)
	if err != nil {
		return fmt.Errorf("bridge %s: %w", bridge, err)
	}
	if c := Conflicts(subnet, nets, bridge); len(c) > 0 {
		return fmt.Errorf("bridge %s: subnet %s overlaps %s on this host, which the bridge would shadow: %s: %w",
			bridge, subnet, joinNets(c), SubnetConflictFix, errdefs.ErrFailedPrecondition)
	}
	return nil
}

func joinNets(nets []HostNet) string {
	s := make([]string, len(nets))
	for i, n := range nets {
		s[i] = n.String()
	}
	return strings.Join(s, ", ")
}

// parseDst parses the dst of ip -json route: "default", "10.0.0.0/8", or a
// bare address for a host route.
func parseDst(s string) (netip.Prefix, bool) {
	if s == "" || s == "default" {
		return netip.Prefix{}, false
	}
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), p.Addr().Is4() && p.Bits() > 0
	}
	if a, err := netip.ParseAddr(s); err == nil && a.Is4() {
		return netip.PrefixFrom(a, 32), true
	}
	return netip.Prefix{}, false
}
