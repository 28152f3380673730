package roothelper

import (
	"context"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bangervm/banger/internal/dns"
	"github.com/bangervm/banger/internal/network"
	"github.com/bangervm/banger/internal/network/nettest"
	"github.com/bangervm/banger/internal/testutil"
)

// TestRouteDNSResolved routes .vm through a real systemd-resolved, run
// with its own system bus in a sandbox (network and mount namespaces the
// test creates), through the root helper as bangerd would, and checks that
// a name under .vm is answered by banger's DNS server on 127.0.0.1:42069
// of that namespace; then reverts and checks the routing is gone.
func TestRouteDNSResolved(t *testing.T) {
	sb := nettest.NewSandbox(t)
	testutil.RequireTool(t, "dig", "dnsutils")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	const bridge = "banger0"
	subnet := netip.MustParsePrefix("172.30.9.0/24")
	web := netip.MustParseAddr("172.30.9.2")
	var asked atomic.Int32
	nettest.Do(t, sb.NS, func() {
		srv, err := dns.Listen(dns.Config{Addr: dns.DefaultAddr, Lookup: func(name string) (netip.Addr, bool) {
			asked.Add(1)
			return web, name == "web"
		}})
		if err != nil {
			t.Fatal(err)
		}
		go srv.Serve(context.Background())
		t.Cleanup(func() { srv.Close() })
	})
	server := netip.MustParseAddrPort(dns.DefaultAddr)

	c := New(startHelper(t, sb.Command(os.Args[0], "-test.run=^TestHelperProcess$")))
	if err := c.EnsureBridge(ctx, bridge, network.Gateway(subnet)); err != nil {
		t.Fatal(err)
	}

	// No resolved yet (the bus is there): nothing routed, and why.
	r, err := c.RouteDNS(ctx, bridge, server)
	if err != nil || r.Routed || !strings.Contains(r.Reason, "not running") {
		t.Fatalf("RouteDNS without resolved = %+v, %v; want not routed, saying why", r, err)
	}
	if err := c.UnrouteDNS(ctx, bridge); err != nil {
		t.Fatalf("UnrouteDNS without resolved: %v", err)
	}

	sb.StartResolved(t)
	for range 2 { // idempotent, as after a daemon's kill -9 and restart
		if r, err := c.RouteDNS(ctx, bridge, server); err != nil || !r.Routed {
			t.Fatalf("RouteDNS = %+v, %v; want routed", r, err)
		}
	}
	status, err := sb.Resolvectl("status", bridge)
	if err != nil {
		t.Fatalf("resolvectl status: %v\n%s", err, status)
	}
	for _, want := range []string{"127.0.0.1:42069", "~vm", "-DefaultRoute"} {
		if !strings.Contains(status, want) {
			t.Errorf("resolvectl status %s lacks %q:\n%s", bridge, want, status)
		}
	}
	if out, err := sb.Resolvectl("query", "web.vm"); err != nil || !strings.Contains(out, web.String()) {
		t.Errorf("resolvectl query web.vm: %v\n%s", err, out)
	}
	// What any program on the host gets through resolved's stub.
	if out := dig(t, sb.NS, "web.vm"); out != web.String() {
		t.Errorf("dig @127.0.0.53 web.vm = %q, want %s", out, web)
	}
	if asked.Load() == 0 {
		t.Error("banger's DNS server was never asked")
	}

	// A helper in another network namespace, on the same bus, must not
	// touch this resolved: a link index there names another link here.
	other := nettest.NewNS(t)
	c2 := New(startHelper(t, sb.CommandIn(other, os.Args[0], "-test.run=^TestHelperProcess$")))
	if err := c2.EnsureBridge(ctx, bridge, network.Gateway(subnet)); err != nil {
		t.Fatal(err)
	}
	if r, err := c2.RouteDNS(ctx, bridge, server); err != nil || r.Routed || !strings.Contains(r.Reason, "another network namespace") {
		t.Errorf("RouteDNS from another network namespace = %+v, %v; want not routed", r, err)
	}
	if err := c2.UnrouteDNS(ctx, bridge); err != nil {
		t.Errorf("UnrouteDNS from another network namespace: %v", err)
	}
	if s, _ := sb.Resolvectl("status", bridge); !strings.Contains(s, "127.0.0.1:42069") {
		t.Errorf("routing changed by a helper in another namespace:\n%s", s)
	}

	if err := c.UnrouteDNS(ctx, bridge); err != nil {
		t.Fatal(err)
	}
	status, _ = sb.Resolvectl("status", bridge)
	for _, gone := range []string{"42069", "~vm"} {
		if strings.Contains(status, gone) {
			t.Errorf("after UnrouteDNS, resolvectl status %s still shows %q:\n%s", bridge, gone, status)
		}
	}
	// resolved now has no server for .vm: the sandbox's global servers
	// (copied from the host's resolv.conf) have no route out of it, so
	// the query fails there, and banger's server is not asked.
	before := asked.Load()
	if out := dig(t, sb.NS, "web.vm"); out == web.String() {
		t.Errorf("web.vm still resolves after UnrouteDNS")
	}
	if n := asked.Load(); n != before {
		t.Errorf("banger's DNS server asked %d more times after UnrouteDNS", n-before)
	}
}

// dig asks resolved's stub in ns for name's A record and returns the
// answer, "" if none.
func dig(t *testing.T, ns, name string) string {
	t.Helper()
	out, _ := exec.Command("ip", "netns", "exec", ns, "dig", "+short", "+time=3", "+tries=1", "@127.0.0.53", name).Output()
	return strings.TrimSpace(string(out))
}
