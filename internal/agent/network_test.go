package agent

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bangervm/banger/internal/agentproto"
	"github.com/bangervm/banger/internal/network/nettest"
	"github.com/bangervm/banger/internal/testutil"
)

// parsed is one netlink message decoded with the standard library's
// parsers, independent of the builders under test.
type parsed struct {
	hdr   syscall.NlMsghdr
	body  []byte
	attrs map[uint16][]byte
}

func parseOne(t *testing.T, b []byte, bodyLen int) parsed {
	t.Helper()
	msgs, err := syscall.ParseNetlinkMessage(b)
	if err != nil || len(msgs) != 1 {
		t.Fatalf("ParseNetlinkMessage: %d messages, %v", len(msgs), err)
	}
	m := msgs[0]
	if int(m.Header.Len) != len(b) {
		t.Fatalf("header length %d, message %d bytes", m.Header.Len, len(b))
	}
	p := parsed{hdr: m.Header, body: m.Data[:bodyLen], attrs: map[uint16][]byte{}}
	if len(m.Data) > bodyLen {
		attrs, err := syscall.ParseNetlinkRouteAttr(&m)
		if err != nil {
			t.Fatalf("ParseNetlinkRouteAttr: %v", err)
		}
		for _, a := range attrs {
			p.attrs[a.Attr.Type] = a.Value
		}
	}
	return p
}

func TestLinkUpMsg(t *testing.T) {
	m := parseOne(t, linkUpMsg(7, 3), ifInfoLen)
	if m.hdr.Type != unix.RTM_NEWLINK || m.hdr.Flags != unix.NLM_F_REQUEST|unix.NLM_F_ACK || m.hdr.Seq != 7 {
		t.Errorf("header = %+v", m.hdr)
	}
	ne := binary.NativeEndian
	if idx, flags, change := ne.Uint32(m.body[4:]), ne.Uint32(m.body[8:]), ne.Uint32(m.body[12:]); idx != 3 || flags != unix.IFF_UP || change != unix.IFF_UP {
		t.Errorf("ifinfomsg index %d flags %#x change %#x", idx, flags, change)
	}
	if len(m.attrs) != 0 {
		t.Errorf("attributes = %v, want none", m.attrs)
	}
	if binary.NativeEndian.Uint16([]byte{1, 0}) == 1 { // the kernel's own bytes, on little-endian hosts
		want := "20000000100005000700000000000000" + "00000000030000000100000001000000"
		if got := fmt.Sprintf("%x", linkUpMsg(7, 3)); got != want {
			t.Errorf("bytes = %s, want %s", got, want)
		}
	}
}

func TestAddrMsg(t *testing.T) {
	ne := binary.NativeEndian
	tests := []struct {
		prefix    string
		family    byte
		broadcast string // "" for none
		nodad     bool
	}{
		{"172.30.0.5/24", unix.AF_INET, "172.30.0.255", false},
		{"10.1.2.3/20", unix.AF_INET, "10.1.15.255", false},
		{"10.1.2.3/31", unix.AF_INET, "", false},
		{"fd00::5/64", unix.AF_INET6, "", true},
	}
	for _, tt := range tests {
		p := netip.MustParsePrefix(tt.prefix)
		m := parseOne(t, addrMsg(9, 4, p), ifAddrLen)
		if m.hdr.Type != unix.RTM_NEWADDR || m.hdr.Seq != 9 ||
			m.hdr.Flags != unix.NLM_F_REQUEST|unix.NLM_F_ACK|unix.NLM_F_CREATE|unix.NLM_F_REPLACE {
			t.Errorf("%s: header = %+v", tt.prefix, m.hdr)
		}
		if m.body[0] != tt.family || int(m.body[1]) != p.Bits() || m.body[3] != unix.RT_SCOPE_UNIVERSE || ne.Uint32(m.body[4:]) != 4 {
			t.Errorf("%s: ifaddrmsg = %v", tt.prefix, m.body)
		}
		for _, k := range []uint16{unix.IFA_LOCAL, unix.IFA_ADDRESS} {
			if a, _ := netip.AddrFromSlice(m.attrs[k]); a != p.Addr() {
				t.Errorf("%s: attribute %d = %v", tt.prefix, k, a)
			}
		}
		brd, ok := m.attrs[unix.IFA_BROADCAST]
		if a, _ := netip.AddrFromSlice(brd); ok != (tt.broadcast != "") || (ok && a.String() != tt.broadcast) {
			t.Errorf("%s: broadcast = %v, want %q", tt.prefix, a, tt.broadcast)
		}
		fl, ok := m.attrs[unix.IFA_FLAGS]
		if ok != tt.nodad || (ok && ne.Uint32(fl) != unix.IFA_F_NODAD) {
			t.Errorf("%s: IFA_FLAGS = %v, want nodad %v", tt.prefix, fl, tt.nodad)
		}
	}
}

func TestDefaultRouteMsg(t *testing.T) {
	for _, gw := range []string{"172.30.0.1", "fd00::1"} {
		a := netip.MustParseAddr(gw)
		m := parseOne(t, defaultRouteMsg(11, 5, a), rtMsgLen)
		if m.hdr.Type != unix.RTM_NEWROUTE || m.hdr.Seq != 11 ||
			m.hdr.Flags != unix.NLM_F_REQUEST|unix.NLM_F_ACK|unix.NLM_F_CREATE|unix.NLM_F_REPLACE {
			t.Errorf("%s: header = %+v", gw, m.hdr)
		}
		want := []byte{family(a), 0, 0, 0, unix.RT_TABLE_MAIN, unix.RTPROT_BOOT, unix.RT_SCOPE_UNIVERSE, unix.RTN_UNICAST, 0, 0, 0, 0}
		if !slices.Equal(m.body, want) {
			t.Errorf("%s: rtmsg = %v, want %v", gw, m.body, want)
		}
		if g, _ := netip.AddrFromSlice(m.attrs[unix.RTA_GATEWAY]); g != a {
			t.Errorf("%s: RTA_GATEWAY = %v", gw, g)
		}
		if oif := m.attrs[unix.RTA_OIF]; len(oif) != 4 || binary.NativeEndian.Uint32(oif) != 5 {
			t.Errorf("%s: RTA_OIF = %v", gw, oif)
		}
	}
}

func TestParseAck(t *testing.T) {
	errMsg := func(seq uint32, code int32) []byte {
		body := make([]byte, 4+unix.SizeofNlMsghdr) // error, then the request's header
		binary.NativeEndian.PutUint32(body, uint32(code))
		return nlMessage(unix.NLMSG_ERROR, 0, seq, body)
	}
	other := nlMessage(unix.RTM_NEWLINK, 0, 3, make([]byte, ifInfoLen))
	tests := []struct {
		name string
		b    []byte
		done bool
		err  error
	}{
		{"ack", errMsg(3, 0), true, nil},
		{"error", errMsg(3, -int32(unix.EEXIST)), true, unix.EEXIST},
		{"other seq", errMsg(2, 0), false, nil},
		{"after another message", append(other, errMsg(3, -int32(unix.ENODEV))...), true, unix.ENODEV},
		{"empty", nil, false, nil},
	}
	for _, tt := range tests {
		done, err := parseAck(tt.b, 3)
		if done != tt.done || err != tt.err {
			t.Errorf("%s: parseAck = %v, %v; want %v, %v", tt.name, done, err, tt.done, tt.err)
		}
	}
	if done, err := parseAck(errMsg(3, 0)[:unix.SizeofNlMsghdr+2], 3); !done || err == nil {
		t.Errorf("truncated: parseAck = %v, %v; want an error", done, err)
	}
}

func TestWriteResolvConf(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "stub-resolv.conf")
	if err := os.WriteFile(target, []byte("nameserver 127.0.0.53\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "etc", "resolv.conf")
	os.MkdirAll(filepath.Dir(path), 0o755)
	if err := os.Symlink(target, path); err != nil {
		t.Fatal(err)
	}
	if err := writeResolvConf(path, []string{"172.30.0.1", "fd00::1"}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(path)
	if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o644 {
		t.Fatalf("resolv.conf: %v, %v; want a regular 0644 file", fi, err)
	}
	got, _ := os.ReadFile(path)
	if !strings.HasSuffix(string(got), "\nnameserver 172.30.0.1\nnameserver fd00::1\n") {
		t.Errorf("resolv.conf = %q", got)
	}
	if b, _ := os.ReadFile(target); string(b) != "nameserver 127.0.0.53\n" {
		t.Errorf("the symlink's target was written: %q", b)
	}
	if err := writeResolvConf(path, []string{"not-an-ip"}); err == nil {
		t.Error("bad server: no error")
	}
	if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 1 {
		t.Errorf("left behind: %v", entries)
	}
}

// netns is a network namespace the test made, deleted at its end. Nothing
// in these tests touches the host's own namespace.
type netns struct {
	t    *testing.T
	name string
}

func newNetns(t *testing.T) *netns {
	t.Helper()
	testutil.RequireRoot(t)
	testutil.RequireTool(t, "ip", "iproute2")
	return &netns{t: t, name: nettest.NewNS(t)}
}

// ip runs ip -n NS args.
func (n *netns) ip(args ...string) []byte {
	n.t.Helper()
	args = append([]string{"-n", n.name}, args...)
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		n.t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// run calls f on a thread that has entered the namespace.
func (n *netns) run(f func() error) error {
	var err error
	nettest.Do(n.t, n.name, func() { err = f() })
	return err
}

func TestConfigureNetworkInNetns(t *testing.T) {
	n := newNetns(t)
	log := slog.New(slog.DiscardHandler)
	resolv := filepath.Join(t.TempDir(), "resolv.conf")
	cfg := &agentproto.NetworkConfig{Interface: "bgt0", Address: "172.30.99.5/24", Gateway: "172.30.99.1", DNS: []string{"172.30.99.1"}}

	// The NIC appears while configureNetwork waits for it.
	go func() {
		time.Sleep(200 * time.Millisecond)
		exec.Command("ip", "-n", n.name, "link", "add", "bgt0", "type", "veth", "peer", "name", "bgt1").Run()
		exec.Command("ip", "-n", n.name, "link", "set", "bgt1", "up").Run()
	}()
	if err := n.run(func() error { return setupNetwork(log, cfg, resolv, 5*time.Second) }); err != nil {
		t.Fatalf("setupNetwork: %v", err)
	}
	check := func() {
		t.Helper()
		var links []struct {
			Ifname   string   `json:"ifname"`
			Flags    []string `json:"flags"`
			AddrInfo []struct {
				Family    string `json:"family"`
				Local     string `json:"local"`
				Prefixlen int    `json:"prefixlen"`
				Broadcast string `json:"broadcast"`
			} `json:"addr_info"`
		}
		if err := json.Unmarshal(n.ip("-j", "addr", "show"), &links); err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		for _, l := range links {
			seen[l.Ifname] = true
			switch l.Ifname {
			case "lo", "bgt0":
				if !slices.Contains(l.Flags, "UP") {
					t.Errorf("%s flags = %v, want UP", l.Ifname, l.Flags)
				}
			}
			if l.Ifname == "bgt0" {
				var v4 []string
				for _, a := range l.AddrInfo {
					if a.Family == "inet" {
						v4 = append(v4, fmt.Sprintf("%s/%d brd %s", a.Local, a.Prefixlen, a.Broadcast))
					}
				}
				if want := []string{"172.30.99.5/24 brd 172.30.99.255"}; !slices.Equal(v4, want) {
					t.Errorf("bgt0 addresses = %v, want %v", v4, want)
				}
			}
		}
		if !seen["lo"] || !seen["bgt0"] {
			t.Errorf("links = %v", seen)
		}
		var routes []struct {
			Dst      string `json:"dst"`
			Gateway  string `json:"gateway"`
			Dev      string `json:"dev"`
			Protocol string `json:"protocol"`
		}
		if err := json.Unmarshal(n.ip("-j", "route", "show", "default"), &routes); err != nil {
			t.Fatal(err)
		}
		if len(routes) != 1 || routes[0].Gateway != "172.30.99.1" || routes[0].Dev != "bgt0" {
			t.Errorf("default routes = %+v, want one via 172.30.99.1 dev bgt0", routes)
		}
		if b, err := os.ReadFile(resolv); err != nil || !strings.Contains(string(b), "nameserver 172.30.99.1\n") {
			t.Errorf("resolv.conf = %q, %v", b, err)
		}
	}
	check()

	// Running it again (e.g. after a hand-over) changes nothing.
	if err := n.run(func() error { return setupNetwork(log, cfg, resolv, time.Second) }); err != nil {
		t.Fatalf("second setupNetwork: %v", err)
	}
	check()
}

func TestConfigureNetworkErrors(t *testing.T) {
	n := newNetns(t)
	log := slog.New(slog.DiscardHandler)
	resolv := filepath.Join(t.TempDir(), "resolv.conf")

	// Without a config only lo comes up.
	if err := n.run(func() error { return setupNetwork(log, nil, resolv, time.Second) }); err != nil {
		t.Fatalf("nil config: %v", err)
	}
	if out := string(n.ip("link", "show", "lo")); !strings.Contains(out, ",UP") {
		t.Errorf("lo not up:\n%s", out)
	}
	if _, err := os.Stat(resolv); !os.IsNotExist(err) {
		t.Errorf("resolv.conf written without DNS servers: %v", err)
	}

	// A missing NIC is reported after the wait; DNS is still written.
	cfg := &agentproto.NetworkConfig{Address: "172.30.98.5/24", Gateway: "172.30.98.1", DNS: []string{"172.30.98.1"}}
	err := n.run(func() error { return setupNetwork(log, cfg, resolv, 300*time.Millisecond) })
	if err == nil || !strings.Contains(err.Error(), "eth0 did not appear") {
		t.Errorf("missing eth0: err = %v", err)
	}
	if _, err := os.Stat(resolv); err != nil {
		t.Errorf("resolv.conf: %v", err)
	}

	// A gateway outside the address's family is rejected before any change.
	bad := &agentproto.NetworkConfig{Address: "172.30.98.5/24", Gateway: "fd00::1"}
	if err := n.run(func() error { return setupNetwork(log, bad, resolv, time.Second) }); err == nil {
		t.Error("mixed families: no error")
	}
}
