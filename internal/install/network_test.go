package install

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/internal/hostcmd"
	"github.com/bangervm/banger/internal/network"
	"github.com/bangervm/banger/internal/network/nettest"
)

// netState is what banger may change in namespace ns: links, iptables
// rules and policies, and IPv4 forwarding.
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
	if nettest.Forwarding(t, ns) {
		b.WriteString("forwarding on\n")
	}
	return b.String()
}

// With the daemon gone (stopped, crashed or masked), uninstall undoes the
// host's network from the root helper's record alone: in a namespace the
// test creates, banger's set-up as the helper makes and records it, then
// TeardownNetwork of NetworkToUndo with no daemon leaves links, iptables
// and forwarding as before.
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
	subnet := netip.MustParsePrefix("172.30.91.0/24")
	fw := network.Firewall{Bridge: "bangerun0", Subnet: subnet}
	nettest.Do(t, ns, func() {
		var ops network.Local
		if err := ops.EnsureBridge(ctx, fw.Bridge, network.Gateway(subnet)); err != nil {
			t.Fatal(err)
		}
		st, err := ops.EnsureForwarding(ctx, false)
		if err != nil || st.WasOn {
			t.Fatalf("EnsureForwarding = %+v, %v; want it turned on", st, err)
		}
		if err := ops.EnsureFirewall(ctx, fw); err != nil {
			t.Fatal(err)
		}
	})
	if err := network.UpdateSetup(p.SetupRecord(), func(s *network.Setup) {
		*s = network.Setup{Bridge: fw.Bridge, Subnet: subnet, Forwarding: true}
	}); err != nil {
		t.Fatal(err)
	}
	if netState(t, ns) == before {
		t.Fatal("set-up changed nothing")
	}

	s, err := NetworkToUndo(p, nil)
	if err != nil || s.Bridge != fw.Bridge || !s.Forwarding {
		t.Fatalf("NetworkToUndo without the daemon = %+v, %v; want the helper's record", s, err)
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
// record's bridge wins; either one saying banger turned forwarding on
// undoes it; an install whose helper recorded nothing uses the daemon's.
func TestNetworkToUndo(t *testing.T) {
	p := DefaultPaths()
	p.HelperSocket = filepath.Join(t.TempDir(), "root.sock")
	daemon := &api.NetworkInfo{Enabled: true, Bridge: "banger1", Subnet: "172.30.5.0/24"}
	s, err := NetworkToUndo(p, daemon)
	if want := (network.Setup{Bridge: "banger1", Subnet: netip.MustParsePrefix("172.30.5.0/24"), Forwarding: true}); err != nil || s != want {
		t.Fatalf("no record, daemon answers: %+v, %v; want %+v", s, err, want)
	}
	if s, err := NetworkToUndo(p, nil); err != nil || s != (network.Setup{}) {
		t.Fatalf("no record, no daemon: %+v, %v; want nothing to undo", s, err)
	}
	rec := network.Setup{Bridge: "banger0", Subnet: netip.MustParsePrefix("172.30.9.0/24")}
	if err := network.UpdateSetup(p.SetupRecord(), func(s *network.Setup) { *s = rec }); err != nil {
		t.Fatal(err)
	}
	daemon.ForwardingWasOn = true
	if s, err := NetworkToUndo(p, daemon); err != nil || s != rec {
		t.Fatalf("record and daemon: %+v, %v; want the record's %+v", s, err, rec)
	}
	// A record naming something other than banger's bridge is refused,
	// not torn down.
	os.WriteFile(p.SetupRecord(), []byte(`{"bridge":"eth0","subnet":"172.30.9.0/24"}`), 0o644)
	if s, err := NetworkToUndo(p, nil); err == nil {
		t.Fatalf("record naming eth0: %+v, want an error", s)
	}
}
