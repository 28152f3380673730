package network

import (
	"context"
	"fmt"
	"net/netip"
	"slices"

	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/hostcmd"
)

// DefaultCandidates returns the /24s ChooseSubnet tries by default, in
// order: 172.30.0.0/16, then 10.213.0.0/16, then 192.168.213.0/24.
func DefaultCandidates() []netip.Prefix {
	var c []netip.Prefix
	c = append(c, Split24(netip.MustParsePrefix("172.30.0.0/16"))...)
	c = append(c, Split24(netip.MustParsePrefix("10.213.0.0/16"))...)
	c = append(c, netip.MustParsePrefix("192.168.213.0/24"))
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
		if !slices.ContainsFunc(inUse, func(u netip.Prefix) bool {
			return u.IsValid() && u.Bits() > 1 && u.Overlaps(c)
		}) {
			return c, nil
		}
	}
	return netip.Prefix{}, fmt.Errorf("choose subnet: all %d candidates overlap the host's networks: %w", len(candidates), errdefs.ErrFailedPrecondition)
}

// HostPrefixes returns the IPv4 prefixes of every route (in all routing
// tables) and every interface address of the current network namespace,
// default routes excluded.
func HostPrefixes(ctx context.Context) ([]netip.Prefix, error) {
	var routes []struct {
		Dst string `json:"dst"`
	}
	if err := hostcmd.IPJSON(ctx, &routes, "-4", "route", "show", "table", "all"); err != nil {
		return nil, fmt.Errorf("host prefixes: %w", err)
	}
	addrs, err := hostAddrPrefixes(ctx)
	if err != nil {
		return nil, err
	}
	var out []netip.Prefix
	for _, r := range routes {
		if p, ok := parseDst(r.Dst); ok {
			out = append(out, p)
		}
	}
	out = append(out, addrs...)
	slices.SortFunc(out, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr())*64 + a.Bits() - b.Bits() })
	return slices.Compact(out), nil
}

// hostAddrPrefixes returns the networks of the namespace's IPv4 interface
// addresses (masked, e.g. 10.77.0.0/24 for 10.77.0.1/24).
func hostAddrPrefixes(ctx context.Context) ([]netip.Prefix, error) {
	var links []struct {
		AddrInfo []struct {
			Family    string `json:"family"`
			Local     string `json:"local"`
			PrefixLen int    `json:"prefixlen"`
		} `json:"addr_info"`
	}
	if err := hostcmd.IPJSON(ctx, &links, "-4", "addr", "show"); err != nil {
		return nil, fmt.Errorf("host addresses: %w", err)
	}
	var out []netip.Prefix
	for _, l := range links {
		for _, a := range l.AddrInfo {
			addr, err := netip.ParseAddr(a.Local)
			if err != nil || !addr.Is4() {
				continue
			}
			if p, err := addr.Prefix(a.PrefixLen); err == nil {
				out = append(out, p)
			}
		}
	}
	return out, nil
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
