package network

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/bangervm/banger/internal/hostcmd"
	"github.com/bangervm/banger/internal/network/nettest"
)

// fwdTopology is a host namespace with an uplink to "inet" (203.0.113.10
// behind 198.51.100.2, the default route), two other networks, "lan" and
// "tool" (whose forwarding to the uplink another tool's FORWARD rule
// accepts), and banger's bridge with one public VM, "vm".
type fwdTopology struct {
	host, inet, lan, tool, vm string
	fw                        Firewall
	rules                     VMRules
}

const fwdSink = "203.0.113.10:5001"

func newFwdTopology(t *testing.T) fwdTopology {
	t.Helper()
	tp := fwdTopology{host: nettest.NewNS(t), inet: nettest.NewNS(t), lan: nettest.NewNS(t), tool: nettest.NewNS(t), vm: nettest.NewNS(t)}
	nettest.Script(t, tp.host, `
		link add up0 type veth peer name eth0 netns `+tp.inet+`
		addr add 198.51.100.1/24 dev up0
		link set up0 up
		link add lan0 type veth peer name eth0 netns `+tp.lan+`
		addr add 10.81.0.1/24 dev lan0
		link set lan0 up
		link add tool0 type veth peer name eth0 netns `+tp.tool+`
		addr add 10.83.0.1/24 dev tool0
		link set tool0 up
		route add default via 198.51.100.2
	`)
	// inet routes back through the host, so that reverse-path filtering
	// passes whatever the host forwards.
	nettest.Script(t, tp.inet, `
		addr add 198.51.100.2/24 dev eth0
		addr add 203.0.113.10/32 dev eth0
		link set eth0 up
		route add default via 198.51.100.1
	`)
	for ns, addr := range map[string]string{tp.lan: "10.81.0", tp.tool: "10.83.0"} {
		nettest.Script(t, ns, `
			addr add `+addr+`.10/24 dev eth0
			link set eth0 up
			route add default via `+addr+`.1
		`)
	}
	if _, err := nettest.Exec(tp.host, "iptables", "-w", "-A", "FORWARD", "-i", "tool0", "-o", "up0", "-j", "ACCEPT"); err != nil {
		t.Fatal(err)
	}

	sub := netip.MustParsePrefix("172.30.90.0/24")
	addr, _ := AddrFor(sub, 0)
	tp.fw = Firewall{Bridge: "bangerf0", Subnet: sub}
	tp.rules = VMRules{Tap: "bgr-f1", Addr: addr, Subnet: sub, Mode: ModePublic}
	nettest.MustIP(t, tp.host, "link", "add", tp.rules.Tap, "type", "veth", "peer", "name", "eth0", "netns", tp.vm)
	nettest.Script(t, tp.vm, `
		link set eth0 address `+MACFor("f1").String()+`
		addr add `+netip.PrefixFrom(addr, 24).String()+` dev eth0
		link set eth0 up
		route add default via `+Gateway(sub).Addr().String()+`
	`)
	ctx := context.Background()
	nettest.Do(t, tp.host, func() {
		if err := EnsureBridge(ctx, tp.fw.Bridge, Gateway(sub)); err != nil {
			t.Fatal(err)
		}
		if err := AttachPort(ctx, tp.rules.Tap, tp.fw.Bridge); err != nil {
			t.Fatal(err)
		}
		if err := tp.fw.Ensure(ctx); err != nil {
			t.Fatal(err)
		}
		if err := tp.fw.ApplyVMRules(ctx, tp.rules); err != nil {
			t.Fatal(err)
		}
	})
	return tp
}

func (tp fwdTopology) ensureForwarding(t *testing.T, ours bool) Forwarding {
	t.Helper()
	var st Forwarding
	nettest.Do(t, tp.host, func() {
		var err error
		if st, err = EnsureForwarding(context.Background(), ours); err != nil {
			t.Fatal(err)
		}
	})
	return st
}

func (tp fwdTopology) policy(t *testing.T) string {
	t.Helper()
	var p string
	nettest.Do(t, tp.host, func() {
		var err error
		if p, err = hostcmd.IPTablesPolicy(context.Background(), "filter", "FORWARD"); err != nil {
			t.Fatal(err)
		}
	})
	return p
}

// send has lan, tool and the VM each send a datagram to inet's sink and
// returns where each arrived from, "" for not at all. lan's goes first:
// once the later ones arrive over the same uplink, a forwarded lan
// datagram would have too.
func (tp fwdTopology) send(t *testing.T) map[string]string {
	t.Helper()
	seen := udpSink(t, tp.inet, fwdSink)
	sendUDP(t, tp.lan, "", fwdSink, "lan")
	sendUDP(t, tp.tool, "", fwdSink, "tool")
	sendUDP(t, tp.vm, "", fwdSink, "vm")
	got := map[string]string{}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		_, tool := seen("tool")
		_, vm := seen("vm")
		if tool && vm {
			break
		}
	}
	for _, p := range []string{"lan", "tool", "vm"} {
		got[p], _ = seen(p)
	}
	return got
}

// Forwarding turned on by banger routes only what a rule accepts: banger's
// VM and another tool's accepted network, not the host's other networks.
func TestForwardingTurnedOnDropsOthers(t *testing.T) {
	nettest.Require(t)
	tp := newFwdTopology(t)
	if st := tp.ensureForwarding(t, false); st.WasOn || !st.PolicyDrop {
		t.Errorf("EnsureForwarding = %+v; want it turned on with the FORWARD policy DROP", st)
	}
	if !nettest.Forwarding(t, tp.host) {
		t.Fatal("ip_forward still off")
	}
	if p := tp.policy(t); p != "DROP" {
		t.Errorf("FORWARD policy %s, want DROP", p)
	}
	got := tp.send(t)
	want := map[string]string{
		"lan":  "",             // the host is no router for its other networks
		"tool": "10.83.0.10",   // another tool's ACCEPT rule in FORWARD works
		"vm":   "198.51.100.1", // banger's VM, masqueraded
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s → inet: from %q, want %q (\"\": dropped)", k, got[k], w)
		}
	}
	// Again, as a restarted daemon that turned it on earlier.
	if st := tp.ensureForwarding(t, true); !st.WasOn || !st.PolicyDrop {
		t.Fatalf("EnsureForwarding(ours) = %+v; want on with DROP", st)
	}
}

// Forwarding someone else turned on is theirs: the policy stays, and so
// does the host's routing.
func TestForwardingAlreadyOnUntouched(t *testing.T) {
	nettest.Require(t)
	tp := newFwdTopology(t)
	nettest.SetForwarding(t, tp.host, true)
	if st := tp.ensureForwarding(t, false); !st.WasOn || st.PolicyDrop {
		t.Fatalf("EnsureForwarding = %+v; want found on, policy untouched", st)
	}
	if p := tp.policy(t); p != "ACCEPT" {
		t.Errorf("FORWARD policy %s, want ACCEPT as it was", p)
	}
	got := tp.send(t)
	for k, w := range map[string]string{"lan": "10.81.0.10", "tool": "10.83.0.10", "vm": "198.51.100.1"} {
		if got[k] != w {
			t.Errorf("%s → inet: from %q, want %q", k, got[k], w)
		}
	}
}

// A restarted daemon that turned forwarding on earlier in this boot sets
// DROP again if it was changed.
func TestForwardingOursAfterRestart(t *testing.T) {
	nettest.Require(t)
	ns := nettest.NewNS(t)
	nettest.SetForwarding(t, ns, true)
	nettest.Do(t, ns, func() {
		st, err := EnsureForwarding(context.Background(), true)
		if err != nil || !st.WasOn || !st.PolicyDrop {
			t.Fatalf("EnsureForwarding(ours) = %+v, %v; want on with DROP", st, err)
		}
		if p, err := hostcmd.IPTablesPolicy(context.Background(), "filter", "FORWARD"); err != nil || p != "DROP" {
			t.Fatalf("FORWARD policy %s, %v; want DROP", p, err)
		}
	})
}
