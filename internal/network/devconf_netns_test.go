package network

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/bangervm/banger/internal/network/nettest"
)

// A router namespace with net.ipv4.ip_forward 0 forwards between two
// networks once SetLinkForwarding turns forwarding on for both of its
// interfaces, and not before; the global switch stays off.
func TestSetLinkForwarding(t *testing.T) {
	nettest.Require(t)
	router, a, b := nettest.NewNS(t), nettest.NewNS(t), nettest.NewNS(t)
	nettest.Script(t, router, `
		link add ra type veth peer name eth0 netns `+a+`
		link add rb type veth peer name eth0 netns `+b+`
		addr add 10.91.1.1/24 dev ra
		addr add 10.91.2.1/24 dev rb
		link set ra up
		link set rb up
	`)
	nettest.Script(t, a, `
		addr add 10.91.1.2/24 dev eth0
		link set eth0 up
		route add default via 10.91.1.1
	`)
	nettest.Script(t, b, `
		addr add 10.91.2.2/24 dev eth0
		link set eth0 up
		route add default via 10.91.2.1
	`)
	serve(t, b, "10.91.2.2:5001")
	if out, err := dial(t, a, "10.91.2.2:5001"); err == nil {
		t.Fatalf("forwarded with forwarding off (server saw %s)", out)
	}
	conf := func(dev string) string {
		var v []byte
		nettest.Do(t, router, func() {
			var err error
			if v, err = os.ReadFile("/proc/sys/net/ipv4/conf/" + dev + "/forwarding"); err != nil {
				t.Fatal(err)
			}
		})
		return strings.TrimSpace(string(v))
	}
	nettest.Do(t, router, func() {
		for _, dev := range []string{"ra", "rb"} {
			if err := SetLinkForwarding(dev, true); err != nil {
				t.Fatal(err)
			}
		}
	})
	if got := conf("ra") + conf("rb"); got != "11" {
		t.Errorf("forwarding of ra, rb: %s, want 11", got)
	}
	if out, err := dial(t, a, "10.91.2.2:5001"); err != nil || out != "10.91.1.2" {
		t.Errorf("through the router: %q, %v; want the server to see 10.91.1.2", out, err)
	}
	if nettest.Forwarding(t, router) {
		t.Error("net.ipv4.ip_forward turned on: want only the two interfaces")
	}
	nettest.Do(t, router, func() {
		if err := SetLinkForwarding("ra", false); err != nil {
			t.Fatal(err)
		}
		if err := SetLinkForwarding("nosuchlink", true); err == nil {
			t.Error("forwarding on a missing interface: no error")
		}
		if err := SetLinkForwarding("bad name!", true); err == nil {
			t.Error("forwarding on an invalid name: no error")
		}
	})
	if out, err := dial(t, a, "10.91.2.2:5001"); err == nil {
		t.Errorf("forwarded after forwarding off on ra (server saw %s)", out)
	}
}

// CloseUplink drops new connections into the namespace that arrive on
// the uplink, while connections the namespace opens get their replies;
// a second call changes nothing.
func TestCloseUplink(t *testing.T) {
	nettest.Require(t)
	pod, other := nettest.NewNS(t), nettest.NewNS(t)
	nettest.Script(t, pod, `
		link add eth0 type veth peer name eth0 netns `+other+`
		addr add 10.92.0.2/24 dev eth0
		link set eth0 up
	`)
	nettest.Script(t, other, `
		addr add 10.92.0.3/24 dev eth0
		link set eth0 up
	`)
	serve(t, pod, "10.92.0.2:5001")
	serve(t, other, "10.92.0.3:5001")
	if _, err := dial(t, other, "10.92.0.2:5001"); err != nil {
		t.Fatalf("control: into the pod before closing: %v", err)
	}
	var before string
	for range 2 {
		nettest.Do(t, pod, func() {
			if err := CloseUplink(context.Background(), "eth0"); err != nil {
				t.Fatal(err)
			}
		})
		s := snapshot(t, pod)
		if before != "" && s != before {
			t.Errorf("second CloseUplink changed the ruleset:\n%s\nthen:\n%s", before, s)
		}
		before = s
	}
	if out, err := dial(t, other, "10.92.0.2:5001"); err == nil {
		t.Errorf("into the pod after closing: answered %q", out)
	}
	if out, err := dial(t, pod, "10.92.0.3:5001"); err != nil || out != "10.92.0.2" {
		t.Errorf("out of the pod after closing: %q, %v", out, err)
	}
	nettest.Do(t, pod, func() {
		for _, bad := range []string{"banger0", "bgr-a1", "bad name"} {
			if err := CloseUplink(context.Background(), bad); err == nil {
				t.Errorf("CloseUplink(%q): no error", bad)
			}
		}
	})
}
