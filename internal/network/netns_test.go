package network

import (
	"context"
	"io"
	"net"
	"net/netip"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bangervm/banger/internal/hostcmd"
	"github.com/bangervm/banger/internal/network/nettest"
)

// serve accepts connections on addr inside ns and answers each with the
// peer's address.
func serve(t *testing.T, ns, addr string) {
	t.Helper()
	var ln net.Listener
	nettest.Do(t, ns, func() {
		var err error
		if ln, err = net.Listen("tcp4", addr); err != nil {
			t.Fatalf("listen %s in %s: %v", addr, ns, err)
		}
	})
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, c.RemoteAddr().(*net.TCPAddr).IP.String())
			c.Close()
		}
	}()
}

// dial connects from ns to addr and returns what the server said, or
// the error.
func dial(t *testing.T, ns, addr string) (string, error) {
	t.Helper()
	var (
		out string
		err error
	)
	nettest.Do(t, ns, func() {
		var c net.Conn
		c, err = net.DialTimeout("tcp4", addr, 700*time.Millisecond)
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(2 * time.Second))
		var b []byte
		b, err = io.ReadAll(c)
		out = string(b)
	})
	return out, err
}

// snapshot is the namespace's ruleset and link list, counters removed.
func snapshot(t *testing.T, ns string) string {
	t.Helper()
	var save string
	nettest.Do(t, ns, func() {
		var err error
		if save, err = hostcmd.IPTablesSave(context.Background()); err != nil {
			t.Fatal(err)
		}
	})
	nft, err := nettest.Exec(ns, "nft", "list", "ruleset")
	if err != nil {
		t.Fatal(err)
	}
	nft = regexp.MustCompile(`counter packets \d+ bytes \d+`).ReplaceAllString(nft, "counter")
	links := nettest.MustIP(t, ns, "-o", "link")
	return "== iptables-save\n" + save + "== nft\n" + nft + "== links\n" + links
}

func TestHostPrefixesChooseSubnet(t *testing.T) {
	nettest.Require(t)
	ns := nettest.NewNS(t)
	nettest.Script(t, ns, `
		link add veth0 type veth peer name veth1
		addr add 172.30.0.5/24 dev veth0
		link set veth0 up
		link set veth1 up
		route add 172.30.1.0/24 via 172.30.0.9
	`)
	nettest.Do(t, ns, func() {
		got, err := HostPrefixes(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		sub, err := ChooseSubnet(got, DefaultCandidates())
		if err != nil || sub.String() != "172.30.2.0/24" {
			t.Fatalf("ChooseSubnet(%v) = %v, %v; want 172.30.2.0/24", got, sub, err)
		}
	})
}

func TestCreateTap(t *testing.T) {
	nettest.Require(t)
	ns := nettest.NewNS(t)
	ctx := context.Background()
	sub := netip.MustParsePrefix("172.30.0.0/24")
	nettest.Do(t, ns, func() {
		if err := EnsureBridge(ctx, "bangertest", Gateway(sub)); err != nil {
			t.Fatal(err)
		}
		if err := EnsureBridge(ctx, "bangertest", Gateway(sub)); err != nil {
			t.Fatalf("second EnsureBridge: %v", err)
		}
		for range 2 {
			if err := CreateTap(ctx, "bgr-tap1", "bangertest", 4242); err != nil {
				t.Fatal(err)
			}
		}
		if err := CreateTap(ctx, "tap0", "bangertest", 0); err == nil {
			t.Fatal("CreateTap accepted a foreign tap name")
		}
	})
	d := nettest.MustIP(t, ns, "-d", "link", "show", "dev", "bgr-tap1")
	for _, want := range []string{"master bangertest", "tun type tap", "user 4242", "persist", "isolated on"} {
		if !strings.Contains(d, want) {
			t.Errorf("tap details lack %q:\n%s", want, d)
		}
	}
	if a := nettest.MustIP(t, ns, "-o", "-4", "addr", "show", "dev", "bangertest"); !strings.Contains(a, "172.30.0.1/24") {
		t.Errorf("bridge address: %s", a)
	}
	nettest.Do(t, ns, func() {
		for range 2 {
			if err := DeleteTap(ctx, "bgr-tap1"); err != nil {
				t.Fatal(err)
			}
		}
	})
	if out, _ := nettest.IP(ns, "link", "show", "dev", "bgr-tap1"); out != "" {
		t.Errorf("tap still present: %s", out)
	}
}

// TestTopology checks the --net modes with real traffic. Namespaces:
// "host" (banger's side) with an uplink to "inet" (203.0.113.10, default
// route) and a link to "lan" (10.77.0.10); "vm1" and "vm2" each hold one
// end of a veth whose other end is a port of banger's bridge.
func TestTopology(t *testing.T) {
	nettest.Require(t)
	host, inet, lan, vm1, vm2 := nettest.NewNS(t), nettest.NewNS(t), nettest.NewNS(t), nettest.NewNS(t), nettest.NewNS(t)
	ctx := context.Background()

	nettest.Script(t, host, `
		link add up0 type veth peer name eth0 netns `+inet+`
		addr add 198.51.100.1/24 dev up0
		link set up0 up
		link add lan0 type veth peer name eth0 netns `+lan+`
		addr add 10.77.0.1/24 dev lan0
		link set lan0 up
		route add default via 198.51.100.2
	`)
	nettest.Script(t, inet, `
		addr add 198.51.100.2/24 dev eth0
		addr add 203.0.113.10/32 dev eth0
		link set eth0 up
	`)
	nettest.Script(t, lan, `
		addr add 10.77.0.10/24 dev eth0
		link set eth0 up
		route add default via 10.77.0.1
	`)
	// Rules of the host's own that banger must leave alone.
	for _, args := range [][]string{
		{"-t", "filter", "-N", "HOSTCHAIN"},
		{"-t", "filter", "-A", "INPUT", "-i", "lan0", "-p", "tcp", "--dport", "9999", "-j", "HOSTCHAIN"},
		{"-t", "filter", "-A", "FORWARD", "-i", "lan0", "-o", "up0", "-j", "ACCEPT"},
		{"-t", "nat", "-A", "POSTROUTING", "-s", "10.77.0.0/24", "-o", "up0", "-j", "MASQUERADE"},
	} {
		if _, err := nettest.Exec(host, append([]string{"iptables", "-w"}, args...)...); err != nil {
			t.Fatal(err)
		}
	}

	serve(t, inet, "203.0.113.10:80")
	serve(t, lan, "10.77.0.10:80")
	serve(t, host, "0.0.0.0:53")   // a banger service: allowed on the gateway only
	serve(t, host, "0.0.0.0:8081") // some other host service

	before := snapshot(t, host)

	var sub netip.Prefix
	nettest.Do(t, host, func() {
		inUse, err := HostPrefixes(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if sub, err = ChooseSubnet(inUse, DefaultCandidates()); err != nil {
			t.Fatal(err)
		}
	})
	gw := Gateway(sub)
	fw := Firewall{Bridge: "bangert0", Subnet: sub}
	vms := map[string]VMRules{}
	for i, ns := range []string{vm1, vm2} {
		addr, err := AddrFor(sub, i)
		if err != nil {
			t.Fatal(err)
		}
		tap := []string{"bgr-vm1", "bgr-vm2"}[i]
		vms[ns] = VMRules{Tap: tap, Addr: addr, Subnet: sub, Mode: ModePublic}
		nettest.MustIP(t, host, "link", "add", tap, "type", "veth", "peer", "name", "eth0", "netns", ns)
		// A VM's NIC has the MAC banger gives it; no IPv6 duplicate
		// detection, so a link-local address is usable at once.
		if _, err := nettest.Exec(ns, "sysctl", "-qw", "net.ipv6.conf.eth0.accept_dad=0"); err != nil {
			t.Fatal(err)
		}
		id, _ := VMIDFromTap(tap)
		nettest.Script(t, ns, `
			link set eth0 address `+MACFor(id).String()+`
			addr add `+netip.PrefixFrom(addr, 24).String()+` dev eth0
			link set eth0 up
		`)
	}
	serve(t, vm2, vms[vm2].Addr.String()+":80")

	nettest.Do(t, host, func() {
		if err := EnsureBridge(ctx, fw.Bridge, gw); err != nil {
			t.Fatal(err)
		}
		if st, err := EnsureForwarding(ctx, false); err != nil || !st.PolicyDrop {
			t.Fatalf("EnsureForwarding = %+v, %v; want the FORWARD policy DROP", st, err)
		}
		for _, vm := range vms {
			if err := AttachPort(ctx, vm.Tap, fw.Bridge); err != nil {
				t.Fatal(err)
			}
			if err := fw.ApplyVMRules(ctx, vm); err != nil {
				t.Fatal(err)
			}
		}
	})
	for _, ns := range []string{vm1, vm2} {
		nettest.MustIP(t, ns, "route", "add", "default", "via", gw.Addr().String())
	}

	type probe struct {
		what, addr string
		ok         bool
	}
	check := func(mode string, probes []probe) {
		t.Helper()
		if _, err := nettest.Exec(host, "conntrack", "-F"); err != nil {
			t.Logf("conntrack -F: %v", err)
		}
		var wg sync.WaitGroup
		for _, p := range probes {
			wg.Go(func() {
				out, err := dial(t, vm1, p.addr)
				switch {
				case p.ok && err != nil:
					t.Errorf("%s: vm1 → %s (%s): %v, want reachable", mode, p.what, p.addr, err)
				case !p.ok && err == nil:
					t.Errorf("%s: vm1 → %s (%s): reachable, want blocked", mode, p.what, p.addr)
				case p.ok && p.what == "internet" && out != "198.51.100.1":
					t.Errorf("%s: internet server saw %q, want the masqueraded 198.51.100.1", mode, out)
				}
			})
		}
		wg.Wait()
	}
	gwAddr := gw.Addr().String()
	check("public", []probe{
		{"internet", "203.0.113.10:80", true},
		{"gateway service", gwAddr + ":53", true},
		{"lan", "10.77.0.10:80", false},
		{"host's lan address", "10.77.0.1:8081", false},
		{"host's lan address, service port", "10.77.0.1:53", false},
		{"host's uplink address", "198.51.100.1:8081", false},
		{"gateway other port", gwAddr + ":8081", false},
		{"vm2", vms[vm2].Addr.String() + ":80", false},
	})

	full := vms[vm1]
	full.Mode = ModeFull
	nettest.Do(t, host, func() {
		if err := fw.ApplyVMRules(ctx, full); err != nil {
			t.Fatal(err)
		}
	})
	check("full", []probe{
		{"internet", "203.0.113.10:80", true},
		{"lan", "10.77.0.10:80", true},
		{"host's lan address", "10.77.0.1:8081", true},
		{"vm2", vms[vm2].Addr.String() + ":80", false}, // isolated bridge ports
	})

	// The guard: vm2 (public) may not borrow vm1's (full) address to
	// reach the LAN, nor send with another MAC, nor speak IPv6 to the
	// host.
	checkGuard(t, host, inet, lan, vm1, vm2, vms[vm1].Addr, vms[vm2].Addr)

	// Removing one VM leaves the other's rules; removing all and tearing
	// down restores the namespace exactly, but for forwarding: banger
	// turned it on, and leaves it on with the FORWARD policy DROP.
	nettest.Do(t, host, func() {
		if err := fw.RemoveVMRules(ctx, full); err != nil {
			t.Fatal(err)
		}
		if err := fw.RemoveVMRules(ctx, full); err != nil {
			t.Fatalf("second RemoveVMRules: %v", err)
		}
		rules, err := hostcmd.IPTablesRules(ctx, "filter", ChainForward)
		if err != nil {
			t.Fatal(err)
		}
		var n1, n2 int
		for _, r := range rules {
			n1 += btoi(hasComment(r, "banger:vm=vm1"))
			n2 += btoi(hasComment(r, "banger:vm=vm2"))
		}
		if n1 != 0 || n2 == 0 {
			t.Fatalf("after removing vm1: %d vm1 rules, %d vm2 rules", n1, n2)
		}
		if err := fw.RemoveVMRules(ctx, vms[vm2]); err != nil {
			t.Fatal(err)
		}
		for _, vm := range vms {
			if err := DeleteTap(ctx, vm.Tap); err != nil {
				t.Fatal(err)
			}
		}
		if err := fw.Teardown(ctx); err != nil {
			t.Fatal(err)
		}
		if err := fw.Teardown(ctx); err != nil {
			t.Fatalf("second Teardown: %v", err)
		}
	})
	before = strings.NewReplacer(":FORWARD ACCEPT\n", ":FORWARD DROP\n",
		"hook forward priority filter; policy accept;", "hook forward priority filter; policy drop;").Replace(before)
	if after := snapshot(t, host); after != before {
		t.Errorf("namespace changed by banger:\n--- before\n%s\n--- after\n%s", before, after)
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// udpSink receives datagrams on addr inside ns; seen reports whether a
// datagram with payload arrived, and from which source address.
func udpSink(t *testing.T, ns, addr string) (seen func(payload string) (from string, ok bool)) {
	t.Helper()
	var pc net.PacketConn
	nettest.Do(t, ns, func() {
		var err error
		if pc, err = net.ListenPacket("udp", addr); err != nil {
			t.Fatalf("listen udp %s in %s: %v", addr, ns, err)
		}
	})
	t.Cleanup(func() { pc.Close() })
	var mu sync.Mutex
	got := map[string]string{}
	go func() {
		buf := make([]byte, 512)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			mu.Lock()
			got[string(buf[:n])] = from.(*net.UDPAddr).IP.String()
			mu.Unlock()
		}
	}()
	return func(payload string) (string, bool) {
		mu.Lock()
		defer mu.Unlock()
		from, ok := got[payload]
		return from, ok
	}
}

// sendUDP sends payload from src (an address of ns, or "" for any) to dst
// a few times; errors are the test's.
func sendUDP(t *testing.T, ns, src, dst, payload string) {
	t.Helper()
	nettest.Do(t, ns, func() {
		var laddr *net.UDPAddr
		if src != "" {
			laddr = &net.UDPAddr{IP: net.ParseIP(src)}
		}
		raddr, err := net.ResolveUDPAddr("udp", dst)
		if err != nil {
			t.Fatal(err)
		}
		c, err := net.DialUDP("udp", laddr, raddr)
		if err != nil {
			t.Fatalf("udp %s → %s in %s: %v", src, dst, ns, err)
		}
		defer c.Close()
		for range 3 {
			c.Write([]byte(payload))
			time.Sleep(20 * time.Millisecond)
		}
	})
}

// checkGuard sends from vm2 (public) what the guard must drop, with
// controls that show the same paths carry honest traffic.
func checkGuard(t *testing.T, host, inet, lan, vm1, vm2 string, addr1, addr2 netip.Addr) {
	t.Helper()
	lanSeen := udpSink(t, lan, "10.77.0.10:5001")
	inetSeen := udpSink(t, inet, "203.0.113.10:5001")
	hostSeen := udpSink(t, host, "[::]:5002")

	sendUDP(t, vm1, "", "10.77.0.10:5001", "vm1-honest")
	sendUDP(t, vm2, "", "203.0.113.10:5001", "vm2-honest")
	// vm2 takes vm1's address as its own and sends from it: without the
	// guard, vm1's full-mode rules would pass it to the LAN.
	nettest.MustIP(t, vm2, "addr", "add", addr1.String()+"/32", "dev", "eth0")
	sendUDP(t, vm2, addr1.String(), "10.77.0.10:5001", "vm2-as-vm1")
	sendUDP(t, vm2, addr1.String(), "203.0.113.10:5001", "vm2-as-vm1-inet")
	nettest.MustIP(t, vm2, "addr", "del", addr1.String()+"/32", "dev", "eth0")
	// IPv6 to the host's link-local address on the bridge.
	var ll string
	for i := 0; i < 50 && ll == ""; i++ {
		out := nettest.MustIP(t, host, "-6", "-o", "addr", "show", "dev", "bangert0", "scope", "link")
		if f := strings.Fields(out); len(f) >= 4 && !strings.Contains(out, "tentative") {
			ll = strings.Split(f[3], "/")[0]
		} else {
			time.Sleep(100 * time.Millisecond)
		}
	}
	if ll == "" {
		t.Fatal("bridge has no usable IPv6 link-local address")
	}
	sendUDP(t, vm2, "", "["+ll+"%eth0]:5002", "vm2-ipv6")
	// Another MAC, its own address.
	nettest.MustIP(t, vm2, "link", "set", "eth0", "address", "02:00:00:00:be:ef")
	sendUDP(t, vm2, "", "203.0.113.10:5001", "vm2-other-mac")
	time.Sleep(500 * time.Millisecond)

	for _, c := range []struct {
		what    string
		seen    func(string) (string, bool)
		payload string
		from    string // "" = must not arrive
	}{
		{"vm1 (full) to the LAN", lanSeen, "vm1-honest", "10.77.0.1"}, // masqueraded
		{"vm2 (public) to the internet", inetSeen, "vm2-honest", "198.51.100.1"},
		{"vm2 with vm1's address to the LAN", lanSeen, "vm2-as-vm1", ""},
		{"vm2 with vm1's address to the internet", inetSeen, "vm2-as-vm1-inet", ""},
		{"vm2 over IPv6 to the host", hostSeen, "vm2-ipv6", ""},
		{"vm2 with another MAC", inetSeen, "vm2-other-mac", ""},
	} {
		from, ok := c.seen(c.payload)
		switch {
		case c.from != "" && !ok:
			t.Errorf("%s: not received, want it through", c.what)
		case c.from != "" && from != c.from:
			t.Errorf("%s: received from %s, want %s", c.what, from, c.from)
		case c.from == "" && ok:
			t.Errorf("%s: received (from %s), want it dropped by the guard", c.what, from)
		}
	}
}
