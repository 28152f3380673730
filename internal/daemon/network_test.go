package daemon

import (
	"net/netip"
	"testing"
)

func TestConflicts(t *testing.T) {
	subnet := netip.MustParsePrefix("172.30.0.0/24")
	p := func(s string) netip.Prefix { return netip.MustParsePrefix(s) }
	for _, tt := range []struct {
		inUse []netip.Prefix
		want  int
	}{
		{[]netip.Prefix{p("172.30.0.0/24"), p("172.30.0.1/24"), p("0.0.0.0/0"), p("192.0.2.0/24")}, 0}, // banger's own bridge and the default route
		{[]netip.Prefix{p("172.30.0.0/16")}, 1},                                                        // a VPN route over it
		{[]netip.Prefix{p("172.30.0.128/25"), p("10.0.0.0/8")}, 1},
	} {
		if got := conflicts(subnet, tt.inUse); len(got) != tt.want {
			t.Errorf("conflicts(%v) = %v, want %d", tt.inUse, got, tt.want)
		}
	}
}
