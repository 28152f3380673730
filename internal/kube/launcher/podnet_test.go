package launcher

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/bangervm/banger/internal/hostcmd"
	"github.com/bangervm/banger/internal/network"
	"github.com/bangervm/banger/internal/network/nettest"
	"github.com/bangervm/banger/internal/testutil"
)

// podNetwork, in a namespace standing in for a Pod's (eth0 with the
// default route), sets up banger's bridge on a subnet clear of the Pod's
// network, forwarding for the bridge and eth0 only (ip_forward stays 0),
// the FORWARD policy DROP, eth0 closed to new connections and a firewall
// that keeps full guests off the Pod; run again (nothing is left over in
// a Pod, but the set-up must not break on its own traces) it changes
// nothing.
func TestPodNetwork(t *testing.T) {
	nettest.Require(t)
	testutil.RequireTool(t, "nft", "nftables")
	pod, node := nettest.NewNS(t), nettest.NewNS(t)
	nettest.Script(t, pod, `
		link add eth0 type veth peer name veth1 netns `+node+`
		addr add 172.30.0.5/24 dev eth0
		link set eth0 up
		route add default via 172.30.0.1
	`)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	var netw1, netw2 string
	var snap1, snap2 string
	nettest.Do(t, pod, func() {
		ctx := context.Background()
		n, err := podNetwork(ctx, log)
		if err != nil {
			t.Fatal(err)
		}
		if n.Subnet.Contains(netip.MustParseAddr("172.30.0.5")) || n.Bridge != network.DefaultBridge || !n.Firewall.ServicesOnly || len(n.Firewall.ServicePorts) != 0 {
			t.Errorf("network %+v: want banger's bridge on a subnet clear of eth0's, services only, no service ports", n)
		}
		netw1 = n.Subnet.String()
		for dev, want := range map[string]string{n.Bridge: "1", "eth0": "1", "all": "0"} {
			b, err := os.ReadFile("/proc/sys/net/ipv4/conf/" + dev + "/forwarding")
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.TrimSpace(string(b)); got != want {
				t.Errorf("forwarding on %s: %s, want %s", dev, got, want)
			}
		}
		snap1, err = hostcmd.IPTablesSave(ctx)
		if err != nil {
			t.Fatal(err)
		}
		n2, err := podNetwork(ctx, log)
		if err != nil {
			t.Fatal(err)
		}
		netw2 = n2.Subnet.String()
		snap2, _ = hostcmd.IPTablesSave(ctx)
	})
	for _, want := range []string{":FORWARD DROP", "-A INPUT -i eth0 -m comment --comment banger -j BANGER-UPLINK", "-A FORWARD -i eth0 -m comment --comment banger -j BANGER-UPLINK"} {
		if !strings.Contains(snap1, want) {
			t.Errorf("ruleset lacks %q:\n%s", want, snap1)
		}
	}
	if netw1 != netw2 || snap1 != snap2 {
		t.Errorf("second set-up changed things: subnet %s then %s; rules\n%s\nthen\n%s", netw1, netw2, snap1, snap2)
	}
}
