package network

import (
	"net/netip"
	"strings"
	"testing"
)

func ruleLines(rs []rule) string {
	var b strings.Builder
	for _, r := range rs {
		b.WriteString(r.table + " " + r.chain + " " + strings.Join(r.args, " ") + "\n")
	}
	return b.String()
}

func TestVMRuleSet(t *testing.T) {
	sub := netip.MustParsePrefix("172.30.0.0/24")
	fw := Firewall{Bridge: "banger0", Subnet: sub, ServicePorts: []uint16{53}}
	vm := VMRules{Tap: "bgr-a1", Addr: netip.MustParseAddr("172.30.0.2"), Subnet: sub, Mode: ModePublic}
	tag := "-m comment --comment banger:vm=a1"
	hostNets := pfx("198.51.100.0/24", "10.77.0.0/24", "127.0.0.0/8", "172.30.0.0/24")

	got := ruleLines(fw.vmRuleSet(vm, "a1", hostNets))
	want := "" +
		"filter BANGER-INPUT -i banger0 -s 172.30.0.2/32 -d 172.30.0.1/32 -p tcp -m tcp --dport 53 " + tag + " -j ACCEPT\n" +
		"filter BANGER-INPUT -i banger0 -s 172.30.0.2/32 -d 172.30.0.1/32 -p udp -m udp --dport 53 " + tag + " -j ACCEPT\n" +
		"filter BANGER-FORWARD -i banger0 -s 172.30.0.2/32 -d 172.30.0.0/24 " + tag + " -j DROP\n" +
		"filter BANGER-FORWARD -i banger0 -s 172.30.0.2/32 -d 0.0.0.0/8 " + tag + " -j DROP\n" +
		"filter BANGER-FORWARD -i banger0 -s 172.30.0.2/32 -d 10.0.0.0/8 " + tag + " -j DROP\n" +
		"filter BANGER-FORWARD -i banger0 -s 172.30.0.2/32 -d 100.64.0.0/10 " + tag + " -j DROP\n" +
		"filter BANGER-FORWARD -i banger0 -s 172.30.0.2/32 -d 127.0.0.0/8 " + tag + " -j DROP\n" +
		"filter BANGER-FORWARD -i banger0 -s 172.30.0.2/32 -d 169.254.0.0/16 " + tag + " -j DROP\n" +
		"filter BANGER-FORWARD -i banger0 -s 172.30.0.2/32 -d 172.16.0.0/12 " + tag + " -j DROP\n" +
		"filter BANGER-FORWARD -i banger0 -s 172.30.0.2/32 -d 192.168.0.0/16 " + tag + " -j DROP\n" +
		"filter BANGER-FORWARD -i banger0 -s 172.30.0.2/32 -d 224.0.0.0/4 " + tag + " -j DROP\n" +
		"filter BANGER-FORWARD -i banger0 -s 172.30.0.2/32 -d 198.51.100.0/24 " + tag + " -j DROP\n" +
		"filter BANGER-FORWARD -i banger0 -s 172.30.0.2/32 " + tag + " -j ACCEPT\n" +
		"nat BANGER-POSTROUTING -s 172.30.0.2/32 ! -o banger0 " + tag + " -j MASQUERADE\n"
	if got != want {
		t.Errorf("public rules:\n%s\nwant:\n%s", got, want)
	}

	vm.Mode, vm.Uplink = ModeFull, "eth0"
	got = ruleLines(fw.vmRuleSet(vm, "a1", nil))
	want = "" +
		"filter BANGER-INPUT -i banger0 -s 172.30.0.2/32 " + tag + " -j ACCEPT\n" +
		"filter BANGER-FORWARD -i banger0 -s 172.30.0.2/32 -o eth0 " + tag + " -j ACCEPT\n" +
		"nat BANGER-POSTROUTING -s 172.30.0.2/32 -o eth0 " + tag + " -j MASQUERADE\n"
	if got != want {
		t.Errorf("full rules:\n%s\nwant:\n%s", got, want)
	}

	// A launcher's: full reaches the host only on the service ports.
	fw.ServicesOnly = true
	got = ruleLines(fw.vmRuleSet(vm, "a1", nil))
	want = "" +
		"filter BANGER-INPUT -i banger0 -s 172.30.0.2/32 -d 172.30.0.1/32 -p tcp -m tcp --dport 53 " + tag + " -j ACCEPT\n" +
		"filter BANGER-INPUT -i banger0 -s 172.30.0.2/32 -d 172.30.0.1/32 -p udp -m udp --dport 53 " + tag + " -j ACCEPT\n" +
		"filter BANGER-FORWARD -i banger0 -s 172.30.0.2/32 -o eth0 " + tag + " -j ACCEPT\n" +
		"nat BANGER-POSTROUTING -s 172.30.0.2/32 -o eth0 " + tag + " -j MASQUERADE\n"
	if got != want {
		t.Errorf("full rules, services only:\n%s\nwant:\n%s", got, want)
	}
}

func TestChainRules(t *testing.T) {
	head, tail := Firewall{Bridge: "banger0"}.chainRules()
	want := "" +
		"filter BANGER-INPUT -i banger0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n" +
		"filter BANGER-FORWARD -o banger0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n" +
		"filter BANGER-INPUT -i banger0 -j DROP\n" +
		"filter BANGER-FORWARD -i banger0 -j DROP\n" +
		"filter BANGER-FORWARD -o banger0 -j DROP\n"
	if got := ruleLines(head) + ruleLines(tail); got != want {
		t.Errorf("chain rules:\n%s\nwant:\n%s", got, want)
	}
}
