package dns

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/testutil"
)

var vms = map[string]netip.Addr{
	"web":    netip.MustParseAddr("172.30.0.2"),
	"my.box": netip.MustParseAddr("172.30.0.3"),
	"six":    netip.MustParseAddr("fd00::6"),
}

func lookup(name string) (netip.Addr, bool) {
	a, ok := vms[name]
	return a, ok
}

// serve runs a server on 127.0.0.1:0 for the test's lifetime.
func serve(t testing.TB) *Server {
	t.Helper()
	s, err := Listen(Config{Addr: "127.0.0.1:0", Lookup: lookup})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return s
}

func query(t testing.TB, s *Server, network, name string, qtype uint16) *dns.Msg {
	t.Helper()
	c := &dns.Client{Net: network, Timeout: 2 * time.Second}
	m := new(dns.Msg).SetQuestion(name, qtype)
	r, _, err := c.Exchange(m, s.Addr().String())
	if err != nil {
		t.Fatalf("%s %s %s: %v", network, name, dns.TypeToString[qtype], err)
	}
	return r
}

func TestQueries(t *testing.T) {
	s := serve(t)
	tests := []struct {
		name    string
		qtype   uint16
		network string
		rcode   int
		answer  string // the single answer's data; "" for none
		soa     bool   // SOA in the authority section
	}{
		{"web.vm.", dns.TypeA, "udp", dns.RcodeSuccess, "172.30.0.2", false},
		{"web.vm.", dns.TypeA, "tcp", dns.RcodeSuccess, "172.30.0.2", false},
		{"WeB.Vm.", dns.TypeA, "udp", dns.RcodeSuccess, "172.30.0.2", false},
		{"my.box.vm.", dns.TypeA, "udp", dns.RcodeSuccess, "172.30.0.3", false},
		{"web.vm.", dns.TypeANY, "udp", dns.RcodeSuccess, "172.30.0.2", false},
		{"web.vm.", dns.TypeAAAA, "udp", dns.RcodeSuccess, "", true},
		{"web.vm.", dns.TypeMX, "udp", dns.RcodeSuccess, "", true},
		{"web.vm.", dns.TypeTXT, "tcp", dns.RcodeSuccess, "", true},
		{"six.vm.", dns.TypeAAAA, "udp", dns.RcodeSuccess, "fd00::6", false},
		{"six.vm.", dns.TypeA, "udp", dns.RcodeSuccess, "", true},
		{"nope.vm.", dns.TypeA, "udp", dns.RcodeNameError, "", true},
		{"nope.vm.", dns.TypeA, "tcp", dns.RcodeNameError, "", true},
		{"box.vm.", dns.TypeA, "udp", dns.RcodeNameError, "", true},
		{"x.web.vm.", dns.TypeA, "udp", dns.RcodeNameError, "", true},
		{"vm.", dns.TypeSOA, "udp", dns.RcodeSuccess, "ns.vm. hostmaster.vm. 1 3600 600 86400 5", false},
		{"vm.", dns.TypeA, "udp", dns.RcodeSuccess, "", true},
		{"example.com.", dns.TypeA, "udp", dns.RcodeRefused, "", false},
		{"web.vm.example.", dns.TypeA, "udp", dns.RcodeRefused, "", false},
		{"notvm.", dns.TypeA, "tcp", dns.RcodeRefused, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.network+"/"+tt.name+"/"+dns.TypeToString[tt.qtype], func(t *testing.T) {
			r := query(t, s, tt.network, tt.name, tt.qtype)
			if r.Rcode != tt.rcode {
				t.Fatalf("rcode = %s, want %s", dns.RcodeToString[r.Rcode], dns.RcodeToString[tt.rcode])
			}
			if r.Authoritative != (tt.rcode != dns.RcodeRefused) {
				t.Errorf("authoritative = %v", r.Authoritative)
			}
			if r.Question[0].Name != tt.name {
				t.Errorf("question name = %q, want %q as asked", r.Question[0].Name, tt.name)
			}
			switch {
			case tt.answer == "" && len(r.Answer) != 0:
				t.Errorf("answer = %v, want none", r.Answer)
			case tt.answer != "":
				if len(r.Answer) != 1 {
					t.Fatalf("answer = %v, want one record", r.Answer)
				}
				rr := r.Answer[0]
				if got := strings.TrimPrefix(rr.String(), rr.Header().String()); got != tt.answer {
					t.Errorf("answer = %q, want %q", got, tt.answer)
				}
				if rr.Header().Ttl != TTL {
					t.Errorf("ttl = %d, want %d", rr.Header().Ttl, TTL)
				}
			}
			if hasSOA := len(r.Ns) == 1 && r.Ns[0].Header().Rrtype == dns.TypeSOA; hasSOA != tt.soa {
				t.Errorf("authority = %v, want SOA: %v", r.Ns, tt.soa)
			}
		})
	}
}

func TestMalformed(t *testing.T) {
	s := &Server{lookup: lookup}
	none := new(dns.Msg)
	none.Id = 7
	if r := s.answer(none); r.Rcode != dns.RcodeFormatError {
		t.Errorf("no question: rcode = %s, want FORMERR", dns.RcodeToString[r.Rcode])
	}
	upd := new(dns.Msg).SetUpdate(Zone)
	if r := s.answer(upd); r.Rcode != dns.RcodeNotImplemented {
		t.Errorf("update: rcode = %s, want NOTIMP", dns.RcodeToString[r.Rcode])
	}
	chaos := new(dns.Msg).SetQuestion("web.vm.", dns.TypeA)
	chaos.Question[0].Qclass = dns.ClassCHAOS
	if r := s.answer(chaos); r.Rcode != dns.RcodeRefused {
		t.Errorf("CH class: rcode = %s, want REFUSED", dns.RcodeToString[r.Rcode])
	}
	edns := new(dns.Msg).SetQuestion("web.vm.", dns.TypeA).SetEdns0(1232, false)
	if r := s.answer(edns); r.IsEdns0() == nil {
		t.Error("EDNS query: reply has no OPT record")
	}
}

func TestDig(t *testing.T) {
	testutil.RequireTool(t, "dig", "dnsutils")
	s := serve(t)
	dig := func(args ...string) string {
		t.Helper()
		args = append([]string{"@" + s.Addr().Addr().String(), "-p", strconv.Itoa(int(s.Addr().Port())), "+time=2", "+tries=1"}, args...)
		out, err := exec.Command("dig", args...).CombinedOutput()
		if err != nil {
			t.Fatalf("dig %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	if got := strings.TrimSpace(dig("+short", "web.vm")); got != "172.30.0.2" {
		t.Errorf("dig +short web.vm = %q", got)
	}
	if got := strings.TrimSpace(dig("+short", "+tcp", "WEB.VM")); got != "172.30.0.2" {
		t.Errorf("dig +short +tcp WEB.VM = %q", got)
	}
	for _, c := range []struct{ args, status string }{
		{"nope.vm", "NXDOMAIN"},
		{"web.vm AAAA", "NOERROR"},
		{"example.com", "REFUSED"},
	} {
		out := dig(strings.Fields(c.args)...)
		if !strings.Contains(out, "status: "+c.status) {
			t.Errorf("dig %s: want status %s:\n%s", c.args, c.status, out)
		}
		if c.status != "REFUSED" && !strings.Contains(out, "flags: qr aa") {
			t.Errorf("dig %s: want an authoritative answer:\n%s", c.args, out)
		}
	}
}

func TestPortInUse(t *testing.T) {
	s := serve(t)
	_, err := Listen(Config{Addr: s.Addr().String(), Lookup: lookup})
	if err == nil {
		t.Fatal("second Listen on the same address succeeded")
	}
	if !errors.Is(err, syscall.EADDRINUSE) || !errdefs.IsFailedPrecondition(err) {
		t.Errorf("err = %v, want EADDRINUSE and FailedPrecondition", err)
	}
	if msg := err.Error(); !strings.Contains(msg, s.Addr().String()) || !strings.Contains(msg, "dns_addr") {
		t.Errorf("err = %q, want the address and the dns_addr key", msg)
	}
	// A port taken only for TCP counts too.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if _, err := Listen(Config{Addr: ln.Addr().String(), Lookup: lookup}); !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("TCP port taken: err = %v, want EADDRINUSE", err)
	}
}

func TestListenErrors(t *testing.T) {
	if _, err := Listen(Config{Addr: "localhost:53", Lookup: lookup}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("host name address: err = %v, want InvalidArgument", err)
	}
	if _, err := Listen(Config{Addr: "127.0.0.1:0"}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("no lookup: err = %v, want InvalidArgument", err)
	}
}

func TestServeStops(t *testing.T) {
	s, err := Listen(Config{Addr: "127.0.0.1:0", Lookup: lookup})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(context.Background()) }()
	query(t, s, "udp", "web.vm.", dns.TypeA)
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve after Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after Close")
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	// The port is free again.
	s2, err := Listen(Config{Addr: s.Addr().String(), Lookup: lookup})
	if err != nil {
		t.Fatalf("Listen after Close: %v", err)
	}
	s2.Close()
}

// BenchmarkQueries measures UDP queries per second from parallel miekg
// clients.
func BenchmarkQueries(b *testing.B) {
	s := serve(b)
	var failed atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		c := &dns.Client{Net: "udp", Timeout: 2 * time.Second}
		conn, err := c.Dial(s.Addr().String())
		if err != nil {
			b.Error(err)
			return
		}
		defer conn.Close()
		m := new(dns.Msg).SetQuestion("web.vm.", dns.TypeA)
		for pb.Next() {
			r, _, err := c.ExchangeWithConn(m, conn)
			if err != nil || len(r.Answer) != 1 {
				failed.Add(1)
			}
		}
	})
	qps := float64(b.N) / b.Elapsed().Seconds()
	b.ReportMetric(qps, "queries/s")
	b.Logf("%d queries, %.0f queries/s, %d failed", b.N, qps, failed.Load())
}
