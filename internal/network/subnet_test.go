package network

import (
	"net/netip"
	"slices"
	"testing"
)

func pfx(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func TestChooseSubnet(t *testing.T) {
	cands := DefaultCandidates()
	for _, tc := range []struct {
		name  string
		inUse []netip.Prefix
		cands []netip.Prefix
		want  string
	}{
		{"empty host", nil, cands, "172.30.0.0/24"},
		{"default route ignored", pfx("0.0.0.0/0", "192.0.2.0/24"), cands, "172.30.0.0/24"},
		{"vpn split default ignored", pfx("0.0.0.0/1", "128.0.0.0/1"), cands, "172.30.0.0/24"},
		{"address in first", pfx("172.30.0.5/32"), cands, "172.30.1.0/24"},
		{"docker bridge", pfx("172.17.0.0/16", "172.30.0.0/24", "172.30.1.0/24"), cands, "172.30.2.0/24"},
		{"docker pool /12 covers 172.30", pfx("172.16.0.0/12"), cands, "10.213.0.0/24"},
		{"vpn 10/8 too", pfx("172.16.0.0/12", "10.0.0.0/8"), cands, "192.168.213.0/24"},
		{"everything taken", pfx("172.16.0.0/12", "10.0.0.0/8", "192.168.0.0/16"), cands, ""},
		{"invalid candidates skipped", nil, pfx("172.30.0.0/16", "10.1.2.0/24"), "10.1.2.0/24"},
	} {
		got, err := ChooseSubnet(tc.inUse, tc.cands)
		if tc.want == "" {
			if err == nil {
				t.Errorf("%s: got %s, want error", tc.name, got)
			}
			continue
		}
		if err != nil || got.String() != tc.want {
			t.Errorf("%s: got %s, %v, want %s", tc.name, got, err, tc.want)
		}
	}
}

func TestSplit24(t *testing.T) {
	s := Split24(netip.MustParsePrefix("10.213.0.0/16"))
	if len(s) != 256 || s[0].String() != "10.213.0.0/24" || s[255].String() != "10.213.255.0/24" {
		t.Fatalf("Split24 /16: %d %v %v", len(s), s[0], s[len(s)-1])
	}
	if s := Split24(netip.MustParsePrefix("10.0.0.0/25")); s != nil {
		t.Fatalf("Split24 /25 = %v", s)
	}
}

func TestParseDst(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string
	}{
		{"default", ""},
		{"", ""},
		{"10.77.0.0/24", "10.77.0.0/24"},
		{"10.77.0.1", "10.77.0.1/32"},
		{"fe80::/64", ""},
	} {
		p, ok := parseDst(tc.in)
		if (tc.want == "") == ok || (ok && p.String() != tc.want) {
			t.Errorf("%q: %v %v, want %q", tc.in, p, ok, tc.want)
		}
	}
}

func TestConflicts(t *testing.T) {
	subnet := netip.MustParsePrefix("172.30.0.0/24")
	n := func(p, dev string) HostNet { return HostNet{Prefix: netip.MustParsePrefix(p), Dev: dev} }
	for _, tt := range []struct {
		name string
		nets []HostNet
		want []HostNet
	}{
		{"banger's own bridge and default routes", []HostNet{n("172.30.0.0/24", "banger0"), n("172.30.0.1/32", "banger0"), n("0.0.0.0/1", "tun0"), n("128.0.0.0/1", "tun0"), n("192.0.2.0/24", "eth0")}, nil},
		{"a VPN route over it", []HostNet{n("172.30.0.0/16", "tun0")}, []HostNet{n("172.30.0.0/16", "tun0")}},
		{"the same /24 on another interface", []HostNet{n("172.30.0.0/24", "eth0")}, []HostNet{n("172.30.0.0/24", "eth0")}},
		{"an unreachable route", []HostNet{n("172.30.0.128/25", ""), n("10.0.0.0/8", "eth0")}, []HostNet{n("172.30.0.128/25", "")}},
	} {
		if got := Conflicts(subnet, tt.nets, "banger0"); !slices.Equal(got, tt.want) {
			t.Errorf("%s: Conflicts = %v, want %v", tt.name, got, tt.want)
		}
	}
}
