package network

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/bangervm/banger/errdefs"
)

func TestValidateNames(t *testing.T) {
	for _, tc := range []struct {
		name string
		fn   func(string) error
		in   string
		ok   bool
	}{
		{"bridge default", ValidateBridgeName, "banger0", true},
		{"bridge custom", ValidateBridgeName, "bangertest1", true},
		{"bridge 15 chars", ValidateBridgeName, "banger123456789", true},
		{"bridge 16 chars", ValidateBridgeName, "banger1234567890", false},
		{"bridge foreign", ValidateBridgeName, "docker0", false},
		{"bridge foreign virbr", ValidateBridgeName, "virbr0", false},
		{"bridge empty", ValidateBridgeName, "", false},
		{"bridge upper", ValidateBridgeName, "BANGER0", false},
		{"bridge dash", ValidateBridgeName, "banger-0", false},
		{"bridge host if", ValidateBridgeName, "eth0", false},
		{"bridge slash", ValidateBridgeName, "banger0/x", false},
		{"tap ok", ValidateTapName, "bgr-abc123", true},
		{"tap 15 chars", ValidateTapName, "bgr-abcdefghijk", true},
		{"tap 16 chars", ValidateTapName, "bgr-abcdefghijkl", false},
		{"tap no id", ValidateTapName, "bgr-", false},
		{"tap foreign", ValidateTapName, "tap0", false},
		{"tap bridge", ValidateTapName, "banger0", false},
		{"tap host if", ValidateTapName, "eth0", false},
		{"tap dot", ValidateTapName, "bgr-../x", false},
		{"tap space", ValidateTapName, "bgr-a b", false},
		{"tap upper", ValidateTapName, "bgr-ABC", false},
		{"vmid ok", ValidateVMID, "x1", true},
		{"vmid long", ValidateVMID, "abcdefghijkl", false},
	} {
		err := tc.fn(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("%s: %q: err = %v", tc.name, tc.in, err)
		}
		if err != nil && !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("%s: %v is not InvalidArgument", tc.name, err)
		}
	}
}

func TestTapName(t *testing.T) {
	tap, err := TapName("k3x9")
	if err != nil || tap != "bgr-k3x9" {
		t.Fatalf("TapName = %q, %v", tap, err)
	}
	if id, err := VMIDFromTap(tap); err != nil || id != "k3x9" {
		t.Fatalf("VMIDFromTap = %q, %v", id, err)
	}
	if _, err := TapName("way-too-long-id"); err == nil {
		t.Fatal("long id accepted")
	}
}

func TestValidateAddresses(t *testing.T) {
	sub := netip.MustParsePrefix("172.30.4.0/24")
	for _, tc := range []struct {
		addr string
		ok   bool
	}{
		{"172.30.4.2", true},
		{"172.30.4.254", true},
		{"172.30.4.0", false},   // network
		{"172.30.4.1", false},   // gateway
		{"172.30.4.255", false}, // broadcast
		{"172.30.5.2", false},   // other subnet
		{"10.0.0.2", false},
		{"8.8.8.8", false},
		{"::ffff:172.30.4.2", false},
	} {
		err := ValidateVMAddr(sub, netip.MustParseAddr(tc.addr))
		if (err == nil) != tc.ok {
			t.Errorf("%s: err = %v", tc.addr, err)
		}
	}
	for _, tc := range []struct {
		subnet string
		ok     bool
	}{
		{"172.30.4.0/24", true},
		{"172.30.4.1/24", false}, // not masked
		{"172.30.0.0/16", false},
		{"172.30.4.0/25", false},
		{"fd00::/64", false},
	} {
		if err := ValidateSubnet(netip.MustParsePrefix(tc.subnet)); (err == nil) != tc.ok {
			t.Errorf("subnet %s: err = %v", tc.subnet, err)
		}
	}
	for _, tc := range []struct {
		gw string
		ok bool
	}{
		{"172.30.4.1/24", true},
		{"172.30.4.2/24", false},
		{"172.30.4.1/16", false},
		{"172.30.4.1/32", false},
	} {
		if err := ValidateGateway(netip.MustParsePrefix(tc.gw)); (err == nil) != tc.ok {
			t.Errorf("gateway %s: err = %v", tc.gw, err)
		}
	}
}

func TestAddrFor(t *testing.T) {
	sub := netip.MustParsePrefix("10.213.7.0/24")
	for _, tc := range []struct {
		index int
		want  string
	}{{0, "10.213.7.2"}, {1, "10.213.7.3"}, {252, "10.213.7.254"}, {253, ""}, {-1, ""}} {
		got, err := AddrFor(sub, tc.index)
		if tc.want == "" {
			if err == nil {
				t.Errorf("index %d: got %s, want error", tc.index, got)
			}
			continue
		}
		if err != nil || got.String() != tc.want {
			t.Errorf("index %d: got %s, %v, want %s", tc.index, got, err, tc.want)
		}
		if err := ValidateVMAddr(sub, got); err != nil {
			t.Errorf("AddrFor result rejected: %v", err)
		}
	}
	if _, err := AddrFor(netip.MustParsePrefix("10.213.0.0/16"), 0); err == nil {
		t.Error("AddrFor accepted a /16")
	}
}

func TestMACFor(t *testing.T) {
	a, b := MACFor("vm1"), MACFor("vm2")
	if a.String() != MACFor("vm1").String() {
		t.Fatal("MACFor not stable")
	}
	if a.String() == b.String() {
		t.Fatal("MACFor collides for vm1 and vm2")
	}
	for _, m := range []string{a.String(), b.String()} {
		if len(a) != 6 {
			t.Fatalf("%s: length %d", m, len(a))
		}
	}
	for _, m := range [][]byte{a, b} {
		if m[0]&0x02 == 0 || m[0]&0x01 != 0 {
			t.Errorf("%x: not locally administered unicast", m)
		}
	}
}

func TestValidateVMRules(t *testing.T) {
	sub := netip.MustParsePrefix("172.30.0.0/24")
	fw := Firewall{Bridge: "banger0", Subnet: sub}
	good := VMRules{Tap: "bgr-a1", Addr: netip.MustParseAddr("172.30.0.2"), Subnet: sub, Mode: ModePublic}
	for _, tc := range []struct {
		name string
		fw   Firewall
		mod  func(*VMRules)
		ok   bool
	}{
		{"good", fw, func(*VMRules) {}, true},
		{"full with uplink", fw, func(v *VMRules) { v.Mode, v.Uplink = ModeFull, "eth0" }, true},
		{"foreign bridge", Firewall{Bridge: "docker0", Subnet: sub}, func(*VMRules) {}, false},
		{"foreign tap", fw, func(v *VMRules) { v.Tap = "vnet0" }, false},
		{"addr outside subnet", fw, func(v *VMRules) { v.Addr = netip.MustParseAddr("10.77.0.2") }, false},
		{"addr is gateway", fw, func(v *VMRules) { v.Addr = netip.MustParseAddr("172.30.0.1") }, false},
		{"other subnet", fw, func(v *VMRules) { v.Subnet = netip.MustParsePrefix("172.30.1.0/24") }, false},
		{"unknown mode", fw, func(v *VMRules) { v.Mode = "none" }, false},
		{"empty mode", fw, func(v *VMRules) { v.Mode = "" }, false},
		{"uplink is bridge", fw, func(v *VMRules) { v.Uplink = "banger0" }, false},
		{"uplink is tap", fw, func(v *VMRules) { v.Uplink = "bgr-x" }, false},
		{"uplink injection", fw, func(v *VMRules) { v.Uplink = "eth0 -j ACCEPT" }, false},
		{"zero port", Firewall{Bridge: "banger0", Subnet: sub, ServicePorts: []uint16{0}}, func(*VMRules) {}, false},
	} {
		vm := good
		tc.mod(&vm)
		if err := tc.fw.ValidateVMRules(vm); (err == nil) != tc.ok {
			t.Errorf("%s: err = %v", tc.name, err)
		}
	}
}
