package doctor

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"

	"github.com/miekg/dns"

	"github.com/bangervm/banger/api"
	vmdns "github.com/bangervm/banger/internal/dns"
	"github.com/bangervm/banger/internal/network"
)

func TestNetworkCheck(t *testing.T) {
	env, d := testEnv(t)
	expect(t, one(t, env, "network"), Pass, "bridge banger0, subnet 172.30.0.0/24, gateway 172.30.0.1; root operations in-process (bangerd is root); IPv4 forwarding turned on by bangerd, with the iptables FORWARD policy DROP", "")
	d.net.Ops, d.net.RootHelper, d.net.ForwardingWasOn, d.net.ForwardPolicyDrop = api.OpsRootHelper, "/run/banger/root.sock", true, false
	expect(t, one(t, env, "network"), Pass, "through the root helper at /run/banger/root.sock; IPv4 forwarding was already on, its FORWARD policy left as it was", "")

	d.net = api.NetworkInfo{Reason: "host networking is off: BANGER_NETWORK=off in bangerd's environment"}
	expect(t, one(t, env, "network"), Warn, "BANGER_NETWORK=off", "unset BANGER_NETWORK")
	d.net = api.NetworkInfo{Reason: "host networking is off: network = false in config.toml"}
	expect(t, one(t, env, "network"), Warn, "network = false", "set network = true in "+env.Layout.ConfigFile())
	d.net = api.NetworkInfo{Configured: true, Reason: "bangerd is not root and no root helper answers at /run/banger/root.sock"}
	expect(t, one(t, env, "network"), Warn, "failed at start, VMs get no NIC: bangerd is not root", "banger daemon stop")

	env.Daemon, env.DaemonErr = nil, errors.New("down")
	expect(t, one(t, env, "network"), Skip, "needs the daemon", "")
}

func TestNetworkTools(t *testing.T) {
	env, d := testEnv(t)
	expect(t, one(t, env, "network-tools"), Pass, "ip, iptables and nft found", "")
	env.LookPath = func(file string) (string, error) {
		if file == "nft" || file == "ip" {
			return "", errors.New("not found")
		}
		return "/usr/sbin/" + file, nil
	}
	expect(t, one(t, env, "network-tools"), Fail, "ip, nft not found", "sudo apt-get install iproute2 nftables")
	d.net = api.NetworkInfo{Reason: "host networking is off"}
	expect(t, one(t, env, "network-tools"), Skip, "it is off", "")
}

func TestSubnet(t *testing.T) {
	env, d := testEnv(t)
	// banger0's own address and route are no conflict.
	expect(t, one(t, env, "subnet"), Pass, "172.30.0.0/24 on banger0 overlaps no other network", "")

	env.HostNets = func(context.Context) ([]network.HostNet, error) {
		return []network.HostNet{
			{Prefix: netip.MustParsePrefix("172.30.0.0/24"), Dev: "banger0"},
			{Prefix: netip.MustParsePrefix("172.16.0.0/12"), Dev: "tun0"}, // a VPN came up since
			{Prefix: netip.MustParsePrefix("0.0.0.0/1"), Dev: "wg0"},      // VPN catch-all: not a conflict
		}, nil
	}
	expect(t, one(t, env, "subnet"), Fail, "overlaps 172.16.0.0/12 on tun0 on this host", network.SubnetConflictFix)

	env.HostNets = func(context.Context) ([]network.HostNet, error) { return nil, errors.New("ip not found") }
	expect(t, one(t, env, "subnet"), Fail, "ip not found", "iproute2")

	d.net = api.NetworkInfo{Configured: true, Reason: "no root helper"}
	expect(t, one(t, env, "subnet"), Skip, "no subnet chosen", "")
	d.net = api.NetworkInfo{Reason: "off"}
	expect(t, one(t, env, "subnet"), Skip, "host networking is off", "")
}

// TestDNS queries a real banger DNS server, which knows no doctor-*.vm
// name.
func TestDNS(t *testing.T) {
	srv, err := vmdns.Listen(vmdns.Config{Addr: "127.0.0.1:0", Lookup: func(string) (netip.Addr, bool) { return netip.Addr{}, false }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go srv.Serve(ctx)

	env, d := testEnv(t)
	d.net.DNSAddr = srv.Addr().String()
	expect(t, one(t, env, "dns"), Pass, srv.Addr().String()+" answers NXDOMAIN for doctor-", "")
	// A server on every address is asked on loopback.
	d.net.DNSAddr = netip.AddrPortFrom(netip.IPv4Unspecified(), srv.Addr().Port()).String()
	expect(t, one(t, env, "dns"), Pass, srv.Addr().String()+" answers NXDOMAIN", "")

	d.net.DNSAddr, d.net.DNSError = "", "dns server: 127.0.0.1:42069 is in use by another program"
	expect(t, one(t, env, "dns"), Fail, "serves no .vm DNS: dns server: 127.0.0.1:42069 is in use", "set dns_addr")

	// Something else on the port, answering for everything.
	d.net.DNSAddr, d.net.DNSError = answerEverything(t), ""
	expect(t, one(t, env, "dns"), Fail, "answered NOERROR", "set dns_addr")

	// Nothing on the port at all.
	d.net.DNSAddr = closedUDPPort(t)
	expect(t, one(t, env, "dns"), Fail, "no DNS answer from "+d.net.DNSAddr, env.Layout.DaemonLog())
}

// answerEverything serves a resolver that says NOERROR to any query.
func answerEverything(t *testing.T) string {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		w.WriteMsg(m)
	})}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
	return pc.LocalAddr().String()
}

func closedUDPPort(t *testing.T) string {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close()
	return addr
}

func TestDNSRouting(t *testing.T) {
	env, d := testEnv(t)
	d.net.DNSAddr = "127.0.0.1:42069"
	expect(t, one(t, env, "dns-routing"), Pass, "routed through systemd-resolved on banger0 to 127.0.0.1:42069", "")
	d.net.DNSRouted, d.net.DNSRouteReason = false, "systemd-resolved is not running"
	expect(t, one(t, env, "dns-routing"), Warn, "resolve only at 127.0.0.1:42069, not system-wide: systemd-resolved is not running", "server=/vm/127.0.0.1#42069")
	d.net.DNSAddr = "0.0.0.0:53"
	expect(t, one(t, env, "dns-routing"), Warn, "", "server=/vm/127.0.0.1#53")
	d.net.DNSAddr = ""
	expect(t, one(t, env, "dns-routing"), Skip, "no .vm DNS server", "")
	d.net = api.NetworkInfo{DNSRouteReason: "host networking is off"}
	expect(t, one(t, env, "dns-routing"), Skip, "host networking is off", "")
}
