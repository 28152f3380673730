package roothelper

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/network"
)

var (
	testSubnet = netip.MustParsePrefix("172.30.4.0/24")
	testGW     = netip.MustParsePrefix("172.30.4.1/24")
)

func goodFW() *firewall { return &firewall{Bridge: "banger0", Subnet: testSubnet} }

func goodVM() *vmRules {
	return &vmRules{Tap: "bgr-a1", Addr: netip.MustParseAddr("172.30.4.2"), Subnet: testSubnet, Mode: network.ModePublic}
}

func TestRefusedBeforeAnyOp(t *testing.T) {
	const user = 1000
	vm := func(mod func(*vmRules)) *vmRules { v := goodVM(); mod(v); return v }
	for _, tc := range []struct {
		name  string
		peer  int
		req   request
		class error
		says  string // part of the message naming what was refused
	}{
		{"unknown op", user, request{Op: "exec"}, errdefs.ErrInvalidArgument, `"exec"`},
		{"empty op", user, request{}, errdefs.ErrInvalidArgument, "unknown"},
		{"deleteBridge is not an op", 0, request{Op: "deleteBridge", Bridge: "banger0"}, errdefs.ErrInvalidArgument, "unknown"},
		{"bridge eth0", user, request{Op: OpEnsureBridge, Bridge: "eth0", Gateway: testGW}, errdefs.ErrInvalidArgument, "eth0"},
		{"bridge docker0", 0, request{Op: OpEnsureBridge, Bridge: "docker0", Gateway: testGW}, errdefs.ErrInvalidArgument, "docker0"},
		{"bridge no gateway", user, request{Op: OpEnsureBridge, Bridge: "banger0"}, errdefs.ErrInvalidArgument, "gateway"},
		{"gateway not .1", user, request{Op: OpEnsureBridge, Bridge: "banger0", Gateway: netip.MustParsePrefix("172.30.4.2/24")}, errdefs.ErrInvalidArgument, "172.30.4.2"},
		{"gateway /16", user, request{Op: OpEnsureBridge, Bridge: "banger0", Gateway: netip.MustParsePrefix("172.30.0.1/16")}, errdefs.ErrInvalidArgument, "gateway"},
		{"firewall missing", user, request{Op: OpEnsureFirewall}, errdefs.ErrInvalidArgument, "firewall"},
		{"firewall docker0", user, request{Op: OpEnsureFirewall, Firewall: &firewall{Bridge: "docker0", Subnet: testSubnet}}, errdefs.ErrInvalidArgument, "docker0"},
		{"firewall /16", user, request{Op: OpEnsureFirewall, Firewall: &firewall{Bridge: "banger0", Subnet: netip.MustParsePrefix("10.0.0.0/16")}}, errdefs.ErrInvalidArgument, "10.0.0.0/16"},
		{"firewall port 0", user, request{Op: OpEnsureFirewall, Firewall: &firewall{Bridge: "banger0", Subnet: testSubnet, ServicePorts: []uint16{0}}}, errdefs.ErrInvalidArgument, "port"},
		{"tap eth0", user, request{Op: OpCreateTap, Tap: "eth0", Bridge: "banger0", UID: user}, errdefs.ErrInvalidArgument, "eth0"},
		{"tap traversal", user, request{Op: OpCreateTap, Tap: "bgr-../x", Bridge: "banger0", UID: user}, errdefs.ErrInvalidArgument, "bgr-../x"},
		{"tap too long", user, request{Op: OpCreateTap, Tap: "bgr-abcdefghijkl", Bridge: "banger0", UID: user}, errdefs.ErrInvalidArgument, "bgr-abcdefghijkl"},
		{"tap on docker0", user, request{Op: OpCreateTap, Tap: "bgr-a1", Bridge: "docker0", UID: user}, errdefs.ErrInvalidArgument, "docker0"},
		{"tap for root", user, request{Op: OpCreateTap, Tap: "bgr-a1", Bridge: "banger0", UID: 0}, errdefs.ErrPermissionDenied, "uid 0"},
		{"tap for another user", user, request{Op: OpCreateTap, Tap: "bgr-a1", Bridge: "banger0", UID: 1001}, errdefs.ErrPermissionDenied, "uid 1001"},
		{"tap negative uid from root", 0, request{Op: OpCreateTap, Tap: "bgr-a1", Bridge: "banger0", UID: -1}, errdefs.ErrInvalidArgument, "uid -1"},
		{"delete eth0", user, request{Op: OpDeleteTap, Tap: "eth0"}, errdefs.ErrInvalidArgument, "eth0"},
		{"delete bridge as tap", 0, request{Op: OpDeleteTap, Tap: "banger0"}, errdefs.ErrInvalidArgument, "banger0"},
		{"rules without vm", user, request{Op: OpApplyVMRules, Firewall: goodFW()}, errdefs.ErrInvalidArgument, "vm"},
		{"rules foreign tap", user, request{Op: OpApplyVMRules, Firewall: goodFW(), VM: vm(func(v *vmRules) { v.Tap = "vnet0" })}, errdefs.ErrInvalidArgument, "vnet0"},
		{"rules addr outside", user, request{Op: OpApplyVMRules, Firewall: goodFW(), VM: vm(func(v *vmRules) { v.Addr = netip.MustParseAddr("10.0.0.2") })}, errdefs.ErrInvalidArgument, "10.0.0.2"},
		{"rules addr gateway", user, request{Op: OpApplyVMRules, Firewall: goodFW(), VM: vm(func(v *vmRules) { v.Addr = netip.MustParseAddr("172.30.4.1") })}, errdefs.ErrInvalidArgument, "172.30.4.1"},
		{"rules other subnet", user, request{Op: OpApplyVMRules, Firewall: goodFW(), VM: vm(func(v *vmRules) { v.Subnet = netip.MustParsePrefix("172.30.5.0/24") })}, errdefs.ErrInvalidArgument, "172.30.5.0/24"},
		{"rules bad mode", user, request{Op: OpApplyVMRules, Firewall: goodFW(), VM: vm(func(v *vmRules) { v.Mode = "bridge" })}, errdefs.ErrInvalidArgument, "bridge"},
		{"rules empty mode", user, request{Op: OpApplyVMRules, Firewall: goodFW(), VM: vm(func(v *vmRules) { v.Mode = "" })}, errdefs.ErrInvalidArgument, "mode"},
		{"rules uplink injection", user, request{Op: OpApplyVMRules, Firewall: goodFW(), VM: vm(func(v *vmRules) { v.Uplink = "eth0 -j ACCEPT" })}, errdefs.ErrInvalidArgument, "uplink"},
		{"rules docker0", user, request{Op: OpApplyVMRules, Firewall: &firewall{Bridge: "docker0", Subnet: testSubnet}, VM: goodVM()}, errdefs.ErrInvalidArgument, "docker0"},
		{"remove foreign tap", user, request{Op: OpRemoveVMRules, Firewall: goodFW(), VM: vm(func(v *vmRules) { v.Tap = "eth0" })}, errdefs.ErrInvalidArgument, "eth0"},
		{"remove bad mode", user, request{Op: OpRemoveVMRules, Firewall: goodFW(), VM: vm(func(v *vmRules) { v.Mode = "x" })}, errdefs.ErrInvalidArgument, "mode"},
		// Subnets outside the allowed ranges (banger's defaults here):
		// refused, naming the subnet and both fixes.
		{"bridge on the LAN", user, request{Op: OpEnsureBridge, Bridge: "banger0", Gateway: lanGW}, errdefs.ErrPermissionDenied, "192.168.1.0/24"},
		{"bridge next to the default ranges", 0, request{Op: OpEnsureBridge, Bridge: "banger0", Gateway: netip.MustParsePrefix("172.31.0.1/24")}, errdefs.ErrPermissionDenied, "--allow-subnet 172.31.0.0/24"},
		{"firewall on the LAN", user, request{Op: OpEnsureFirewall, Firewall: lanFW()}, errdefs.ErrPermissionDenied, "subnet = "},
		{"rules on the LAN", user, request{Op: OpApplyVMRules, Firewall: lanFW(), VM: lanVM()}, errdefs.ErrPermissionDenied, "192.168.1.0/24"},
		{"remove rules on the LAN", user, request{Op: OpRemoveVMRules, Firewall: lanFW(), VM: lanVM()}, errdefs.ErrPermissionDenied, "192.168.1.0/24"},
		// DNS routing: banger's bridges, and a server on loopback or a
		// gateway of an allowed subnet only.
		{"route dns eth0", user, request{Op: OpRouteDNS, Bridge: "eth0", Server: dnsAddr}, errdefs.ErrInvalidArgument, "eth0"},
		{"route dns no server", user, request{Op: OpRouteDNS, Bridge: "banger0"}, errdefs.ErrInvalidArgument, "dns server"},
		{"route dns port 0", user, request{Op: OpRouteDNS, Bridge: "banger0", Server: netip.MustParseAddrPort("127.0.0.1:0")}, errdefs.ErrInvalidArgument, "dns server"},
		{"route dns off the host", user, request{Op: OpRouteDNS, Bridge: "banger0", Server: netip.MustParseAddrPort("8.8.8.8:53")}, errdefs.ErrInvalidArgument, "8.8.8.8"},
		{"route dns to a VM", user, request{Op: OpRouteDNS, Bridge: "banger0", Server: netip.MustParseAddrPort("172.30.4.2:53")}, errdefs.ErrInvalidArgument, "172.30.4.2"},
		{"route dns to a LAN gateway", user, request{Op: OpRouteDNS, Bridge: "banger0", Server: netip.MustParseAddrPort("192.168.1.1:53")}, errdefs.ErrPermissionDenied, "192.168.1.0/24"},
		{"unroute dns eth0", user, request{Op: OpUnrouteDNS, Bridge: "eth0"}, errdefs.ErrInvalidArgument, "eth0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ops := &fakeOps{}
			s := &server{owner: user, ops: ops, allowed: network.DefaultRanges(), log: slog.New(slog.DiscardHandler)}
			resp, f := s.handle(context.Background(), s.log, tc.peer, &tc.req, nil)
			if f != nil {
				f.Close()
				t.Error("refused request returned a file")
			}
			if calls := ops.Calls(); len(calls) > 0 {
				t.Fatalf("ops ran: %v", calls)
			}
			err := errdefs.FromCode(resp.Class, resp.Error)
			if resp.Error == "" || !errors.Is(err, tc.class) {
				t.Fatalf("reply %+v: want class %v", resp, tc.class)
			}
			if !strings.Contains(resp.Error, "refused") || !strings.Contains(resp.Error, tc.says) {
				t.Errorf("reply %q does not say what was refused (%q)", resp.Error, tc.says)
			}
		})
	}
}

var (
	lanSubnet = netip.MustParsePrefix("192.168.1.0/24")
	lanGW     = netip.MustParsePrefix("192.168.1.1/24")
	dnsAddr   = netip.MustParseAddrPort("127.0.0.1:42069")
)

func lanFW() *firewall { return &firewall{Bridge: "banger0", Subnet: lanSubnet} }

func lanVM() *vmRules {
	return &vmRules{Tap: "bgr-a1", Addr: netip.MustParseAddr("192.168.1.2"), Subnet: lanSubnet, Mode: network.ModePublic}
}

func TestAccepted(t *testing.T) {
	const user = 1000
	for _, tc := range []struct {
		peer int
		req  request
	}{
		{user, request{Op: OpEnsureBridge, Bridge: "banger0", Gateway: testGW}},
		{user, request{Op: OpEnsureBridge, Bridge: "banger0", Gateway: netip.MustParsePrefix("10.213.255.1/24")}},
		{user, request{Op: OpEnsureBridge, Bridge: "banger0", Gateway: netip.MustParsePrefix("192.168.213.1/24")}},
		{user, request{Op: OpRouteDNS, Bridge: "banger0", Server: dnsAddr}},
		{user, request{Op: OpRouteDNS, Bridge: "banger0", Server: netip.MustParseAddrPort("[::1]:53")}},
		{user, request{Op: OpRouteDNS, Bridge: "banger0", Server: netip.MustParseAddrPort("172.30.4.1:53")}},
		{user, request{Op: OpUnrouteDNS, Bridge: "banger0"}},
		{user, request{Op: OpEnsureForwarding}},
		{user, request{Op: OpEnsureFirewall, Firewall: goodFW()}},
		{user, request{Op: OpCreateTap, Tap: "bgr-a1", Bridge: "banger0", UID: user}},
		{0, request{Op: OpCreateTap, Tap: "bgr-a1", Bridge: "banger0", UID: 4242}},
		{user, request{Op: OpDeleteTap, Tap: "bgr-a1"}},
		{user, request{Op: OpApplyVMRules, Firewall: goodFW(), VM: goodVM()}},
		{user, request{Op: OpRemoveVMRules, Firewall: goodFW(), VM: goodVM()}},
	} {
		ops := &fakeOps{}
		s := &server{owner: user, ops: ops, allowed: network.DefaultRanges(), log: slog.New(slog.DiscardHandler)}
		resp, f := s.handle(context.Background(), s.log, tc.peer, &tc.req, nil)
		if f != nil {
			f.Close()
		}
		if resp.Error != "" {
			t.Errorf("%s from %d: %s", tc.req.Op, tc.peer, resp.Error)
		}
		if calls := ops.Calls(); len(calls) != 1 || calls[0] != tc.req.Op {
			t.Errorf("%s: calls %v", tc.req.Op, calls)
		}
		if (tc.req.Op == OpCreateTap) != resp.FD {
			t.Errorf("%s: fd %v", tc.req.Op, resp.FD)
		}
	}
}

// TestAllowSubnet: a subnet outside banger's default ranges is accepted
// once the helper allows its range, and only that range.
func TestAllowSubnet(t *testing.T) {
	allowed := []netip.Prefix{netip.MustParsePrefix("192.168.0.0/16")}
	for _, tc := range []struct {
		req request
		ok  bool
	}{
		{request{Op: OpEnsureBridge, Bridge: "banger0", Gateway: lanGW}, true},
		{request{Op: OpEnsureFirewall, Firewall: lanFW()}, true},
		{request{Op: OpApplyVMRules, Firewall: lanFW(), VM: lanVM()}, true},
		{request{Op: OpRemoveVMRules, Firewall: lanFW(), VM: lanVM()}, true},
		{request{Op: OpRouteDNS, Bridge: "banger0", Server: netip.MustParseAddrPort("192.168.1.1:53")}, true},
		// The defaults no longer apply once ranges are given.
		{request{Op: OpEnsureBridge, Bridge: "banger0", Gateway: testGW}, false},
		{request{Op: OpEnsureFirewall, Firewall: goodFW()}, false},
	} {
		ops := &fakeOps{}
		s := &server{owner: 1000, ops: ops, allowed: allowed, log: slog.New(slog.DiscardHandler)}
		resp, _ := s.handle(context.Background(), s.log, 1000, &tc.req, nil)
		if tc.ok && resp.Error != "" {
			t.Errorf("%s: %s", tc.req.Op, resp.Error)
		}
		if !tc.ok && (resp.Error == "" || !errors.Is(errdefs.FromCode(resp.Class, resp.Error), errdefs.ErrPermissionDenied)) {
			t.Errorf("%s: reply %+v, want permission denied", tc.req.Op, resp)
		}
	}
}
