package install

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/internal/hostcmd"
	"github.com/bangervm/banger/internal/network"
	"github.com/bangervm/banger/internal/network/nettest"
)

// netState is what banger may change in namespace ns: links, iptables
// rules and policies, the nftables ruleset, and IPv4 forwarding.
func netState(t *testing.T, ns string) string {
	t.Helper()
	var b strings.Builder
	b.WriteString(nettest.MustIP(t, ns, "-o", "link"))
	nettest.Do(t, ns, func() {
		out, err := hostcmd.IPTablesSave(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(out, "\n") {
			if !strings.HasPrefix(line, "#") {
				b.WriteString(line + "\n")
			}
		}
	})
	nft, err := nettest.Exec(ns, "nft", "list", "ruleset")
	if err != nil {
		t.Fatalf("nft list ruleset: %v %s", err, nft)
	}
	b.WriteString(nft)
	if nettest.Forwarding(t, ns) {
		b.WriteString("forwarding on\n")
	}
	return b.String()
}

// With the daemon gone (stopped, crashed or masked), uninstall undoes the
// host's network from the root helper's record alone, every bridge the
// helper set up since install: in a namespace the test creates, banger's
// set-up for one bridge, then for another (the owner changed the bridge
// and subnet in config.toml and restarted), with a VM's tap left on the
// first (its engine stopped without the daemon), each recorded as the
// helper records it; then TeardownNetwork of NetworkToUndo with no daemon
// leaves links, iptables, nftables and forwarding as before.
func TestTeardownFromHelperRecord(t *testing.T) {
	nettest.Require(t)
	ns := nettest.NewNS(t)
	ctx := context.Background()
	// Chains banger jumps from exist, as on any host that ran iptables.
	for _, argv := range [][]string{{"-P", "INPUT", "ACCEPT"}, {"-P", "FORWARD", "ACCEPT"}, {"-t", "nat", "-P", "POSTROUTING", "ACCEPT"}} {
		if out, err := nettest.Exec(ns, append([]string{"iptables", "-w"}, argv...)...); err != nil {
			t.Fatalf("iptables %v: %v %s", argv, err, out)
		}
	}
	before := netState(t, ns)

	p := DefaultPaths()
	p.HelperSocket = filepath.Join(t.TempDir(), "root.sock")
	first := network.Firewall{Bridge: "bangerun0", Subnet: netip.MustParsePrefix("172.30.91.0/24")}
	second := network.Firewall{Bridge: "bangerun1", Subnet: netip.MustParsePrefix("172.30.92.0/24")}
	vm := network.VMRules{Tap: "bgr-un1", Addr: netip.MustParseAddr("172.30.91.2"), Subnet: first.Subnet, Mode: network.ModePublic}
	nettest.Do(t, ns, func() {
		var ops network.Local
		if err := ops.EnsureBridge(ctx, first.Bridge, network.Gateway(first.Subnet)); err != nil {
			t.Fatal(err)
		}
		st, err := ops.EnsureForwarding(ctx, false)
		if err != nil || st.WasOn {
			t.Fatalf("EnsureForwarding = %+v, %v; want it turned on", st, err)
		}
		if err := ops.EnsureFirewall(ctx, first); err != nil {
			t.Fatal(err)
		}
		if _, err := ops.CreateTap(ctx, vm.Tap, first.Bridge, 65534); err != nil {
			t.Fatal(err)
		}
		if err := ops.ApplyVMRules(ctx, first, vm); err != nil {
			t.Fatal(err)
		}
		// The owner's next daemon, on another bridge.
		if err := ops.EnsureBridge(ctx, second.Bridge, network.Gateway(second.Subnet)); err != nil {
			t.Fatal(err)
		}
		if err := ops.EnsureFirewall(ctx, second); err != nil {
			t.Fatal(err)
		}
	})
	for _, fw := range []network.Firewall{first, second} {
		if err := network.UpdateSetup(p.SetupRecord(), func(s *network.Setup) {
			s.AddBridge(fw.Bridge, fw.Subnet)
			s.Forwarding = true
		}); err != nil {
			t.Fatal(err)
		}
	}
	if netState(t, ns) == before {
		t.Fatal("set-up changed nothing")
	}

	s, err := NetworkToUndo(p, nil)
	if err != nil || len(s.Bridges) != 2 || !s.Forwarding {
		t.Fatalf("NetworkToUndo without the daemon = %+v, %v; want the helper's record of both bridges", s, err)
	}
	nettest.Do(t, ns, func() {
		if err := TeardownNetwork(ctx, s); err != nil {
			t.Fatal(err)
		}
	})
	if after := netState(t, ns); after != before {
		t.Errorf("after teardown:\n%s\nbefore:\n%s", after, before)
	}
}

// NetworkToUndo joins the helper's record with the daemon's report: the
// record's bridges are kept, the record wins for a bridge both name, and
// the daemon's is added when the record lacks it; either one saying
// banger turned forwarding on undoes it.
func TestNetworkToUndo(t *testing.T) {
	p := DefaultPaths()
	p.HelperSocket = filepath.Join(t.TempDir(), "root.sock")
	daemon := &api.NetworkInfo{Enabled: true, Bridge: "banger1", Subnet: "172.30.5.0/24"}
	fromDaemon := network.Bridge{Name: "banger1", Subnet: netip.MustParsePrefix("172.30.5.0/24")}
	s, err := NetworkToUndo(p, daemon)
	if want := (network.Setup{Bridges: []network.Bridge{fromDaemon}, Forwarding: true}); err != nil || !reflect.DeepEqual(s, want) {
		t.Fatalf("no record, daemon answers: %+v, %v; want %+v", s, err, want)
	}
	if s, err := NetworkToUndo(p, nil); err != nil || !reflect.DeepEqual(s, network.Setup{}) {
		t.Fatalf("no record, no daemon: %+v, %v; want nothing to undo", s, err)
	}
	rec := network.Bridge{Name: "banger0", Subnet: netip.MustParsePrefix("172.30.9.0/24")}
	if err := network.UpdateSetup(p.SetupRecord(), func(s *network.Setup) { s.AddBridge(rec.Name, rec.Subnet) }); err != nil {
		t.Fatal(err)
	}
	daemon.ForwardingWasOn = true
	if s, err := NetworkToUndo(p, daemon); err != nil || !reflect.DeepEqual(s.Bridges, []network.Bridge{rec, fromDaemon}) || s.Forwarding {
		t.Fatalf("record and daemon: %+v, %v; want the record's %+v and the daemon's %+v, forwarding left", s, err, rec, fromDaemon)
	}
	daemon.Bridge, daemon.Subnet = "banger0", "172.30.44.0/24"
	if s, err := NetworkToUndo(p, daemon); err != nil || !reflect.DeepEqual(s.Bridges, []network.Bridge{rec}) {
		t.Fatalf("record and daemon on the same bridge: %+v, %v; want the record's %+v", s, err, rec)
	}
	// A record naming something other than banger's bridge is refused,
	// not torn down.
	os.WriteFile(p.SetupRecord(), []byte(`{"bridge":"eth0","subnet":"172.30.9.0/24"}`), 0o644)
	if s, err := NetworkToUndo(p, nil); err == nil {
		t.Fatalf("record naming eth0: %+v, want an error", s)
	}
}
