// Package dns is banger's authoritative DNS server for the .vm zone: it
// answers <name>.vm with the address of a running VM, as told by a lookup
// function the VM manager supplies.
package dns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/miekg/dns"

	"github.com/bangervm/banger/errdefs"
)

const (
	// DefaultAddr is where the server listens unless configured otherwise
	// (config key dns_addr).
	DefaultAddr = "127.0.0.1:42069"
	// Zone is the zone the server is authoritative for.
	Zone = "vm."
	// TTL is the time to live, in seconds, of answers and of negative
	// answers: short, so a VM that starts or stops is seen within seconds.
	TTL = 5
)

// LookupFunc returns the address of the running VM called name (the query
// name lowercased without the ".vm." suffix, e.g. "web" for WEB.vm.), or
// false when there is none. It is called concurrently and must not block.
type LookupFunc func(name string) (netip.Addr, bool)

// Config configures a Server.
type Config struct {
	// Addr is the IP:port to listen on, UDP and TCP; empty means
	// DefaultAddr. Port 0 picks a free port (see Server.Addr).
	Addr string
	// Lookup resolves VM names; required.
	Lookup LookupFunc
	// Logger gets serve errors; nil discards them.
	Logger *slog.Logger
}

// Server answers queries for the .vm zone over UDP and TCP on one address:
//
//   - an A (or AAAA, for an IPv6 address) record for a running VM;
//   - an empty NOERROR answer for other types of a running VM's name;
//   - NXDOMAIN for any other name under .vm;
//   - REFUSED for names outside .vm: the server is not a resolver, and a
//     resolver that routes only ~vm here never asks for them.
//
// Names are matched case-insensitively; negative answers carry the zone's
// SOA so resolvers cache them for TTL seconds only.
//
// Listen binds the sockets; Serve answers until its context ends; Close
// releases the sockets of a server that is not serving (or stops Serve).
type Server struct {
	lookup LookupFunc
	log    *slog.Logger
	addr   netip.AddrPort
	udp    net.PacketConn
	tcp    net.Listener

	closeOnce sync.Once
	closed    chan struct{}
}

// Listen binds the UDP and TCP sockets of cfg.Addr. A taken port is an
// errdefs.ErrFailedPrecondition error naming the address and the config key
// to change it (it also matches syscall.EADDRINUSE).
func Listen(cfg Config) (*Server, error) {
	if cfg.Lookup == nil {
		return nil, fmt.Errorf("dns server: no lookup function: %w", errdefs.ErrInvalidArgument)
	}
	addr := cfg.Addr
	if addr == "" {
		addr = DefaultAddr
	}
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, fmt.Errorf("dns address %q (config key dns_addr): want IP:port: %w", addr, errdefs.ErrInvalidArgument)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	udp, tcp, err := listenBoth(ap)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("dns server: %s is in use by another program; set dns_addr in the config to another address: %w: %w", ap, errdefs.ErrFailedPrecondition, err)
		}
		return nil, fmt.Errorf("dns server on %s: %w", ap, err)
	}
	bound := udp.LocalAddr().(*net.UDPAddr).AddrPort()
	return &Server{
		lookup: cfg.Lookup,
		log:    log,
		addr:   netip.AddrPortFrom(bound.Addr().Unmap(), bound.Port()),
		udp:    udp,
		tcp:    tcp,
		closed: make(chan struct{}),
	}, nil
}

// listenBoth binds UDP and TCP on the same port. With port 0 the kernel
// picks the UDP port, which may be taken for TCP: try a few.
func listenBoth(ap netip.AddrPort) (net.PacketConn, net.Listener, error) {
	for try := 0; ; try++ {
		udp, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(ap))
		if err != nil {
			return nil, nil, err
		}
		port := udp.LocalAddr().(*net.UDPAddr).AddrPort().Port()
		tcp, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(netip.AddrPortFrom(ap.Addr(), port)))
		if err == nil {
			return udp, tcp, nil
		}
		udp.Close()
		if ap.Port() != 0 || try == 10 || !errors.Is(err, syscall.EADDRINUSE) {
			return nil, nil, err
		}
	}
}

// Addr is the bound address (with the actual port when Config.Addr had
// port 0).
func (s *Server) Addr() netip.AddrPort { return s.addr }

// Serve answers queries until ctx ends or Close is called, then stops both
// listeners (waiting briefly for queries in flight) and returns nil. It
// returns an error if a listener fails. Serve may be called once.
func (s *Server) Serve(ctx context.Context) error {
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		_ = w.WriteMsg(s.answer(r))
	})
	servers := []*dns.Server{
		{PacketConn: s.udp, Handler: h},
		{Listener: s.tcp, Handler: h, ReadTimeout: 5 * time.Second, IdleTimeout: func() time.Duration { return 10 * time.Second }},
	}
	errc := make(chan error, len(servers))
	started := make(chan struct{}, len(servers))
	for _, srv := range servers {
		srv.NotifyStartedFunc = func() { started <- struct{}{} }
		go func() { errc <- srv.ActivateAndServe() }()
	}
	// Shutting down a server that has not started yet is an error and
	// leaves it running: wait until both run (or one failed).
	var err error
	for range servers {
		select {
		case <-started:
		case err = <-errc:
		}
		if err != nil {
			break
		}
	}
	if err == nil {
		select {
		case <-ctx.Done():
		case <-s.closed:
		case err = <-errc:
		}
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	for _, srv := range servers {
		_ = srv.ShutdownContext(sctx) // "not started" for one that failed
	}
	s.Close()
	if err != nil {
		err = fmt.Errorf("dns server on %s: %w", s.addr, err)
		s.log.Error("dns server", "err", err)
	}
	return err
}

// Close stops Serve, or releases the sockets of a server never served. It
// is safe to call more than once.
func (s *Server) Close() error {
	var err error
	s.closeOnce.Do(func() {
		close(s.closed)
		err = errors.Join(s.udp.Close(), s.tcp.Close())
	})
	if errors.Is(err, net.ErrClosed) {
		err = nil // Serve's shutdown closed them first
	}
	return err
}

// soa is the zone's SOA record; its minimum (and TTL) bounds how long
// resolvers cache a negative answer.
var soa = &dns.SOA{
	Hdr:     dns.RR_Header{Name: Zone, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: TTL},
	Ns:      "ns." + Zone,
	Mbox:    "hostmaster." + Zone,
	Serial:  1,
	Refresh: 3600,
	Retry:   600,
	Expire:  86400,
	Minttl:  TTL,
}

// answer builds the reply to r.
func (s *Server) answer(r *dns.Msg) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(r)
	m.Authoritative = true
	if opt := r.IsEdns0(); opt != nil {
		m.SetEdns0(dns.DefaultMsgSize, false)
	}
	switch {
	case r.Opcode != dns.OpcodeQuery:
		m.Rcode = dns.RcodeNotImplemented
		return m
	case len(r.Question) != 1:
		m.Rcode = dns.RcodeFormatError
		return m
	}
	q := r.Question[0]
	name := dns.CanonicalName(q.Name)
	if !dns.IsSubDomain(Zone, name) || (q.Qclass != dns.ClassINET && q.Qclass != dns.ClassANY) {
		m.Authoritative = false
		m.Rcode = dns.RcodeRefused
		return m
	}
	if name == Zone {
		if q.Qtype == dns.TypeSOA || q.Qtype == dns.TypeANY {
			m.Answer = append(m.Answer, soa)
		} else {
			m.Ns = append(m.Ns, soa)
		}
		return m
	}
	addr, ok := s.lookup(strings.TrimSuffix(name, "."+Zone))
	if !ok {
		m.Rcode = dns.RcodeNameError
		m.Ns = append(m.Ns, soa)
		return m
	}
	if rr := addressRecord(q, addr); rr != nil {
		m.Answer = append(m.Answer, rr)
	} else {
		m.Ns = append(m.Ns, soa) // NODATA
	}
	return m
}

// addressRecord is the record for addr that answers q, or nil if q asks
// for another type.
func addressRecord(q dns.Question, addr netip.Addr) dns.RR {
	addr = addr.Unmap()
	hdr := dns.RR_Header{Name: q.Name, Class: dns.ClassINET, Ttl: TTL}
	switch {
	case addr.Is4() && (q.Qtype == dns.TypeA || q.Qtype == dns.TypeANY):
		hdr.Rrtype = dns.TypeA
		return &dns.A{Hdr: hdr, A: addr.AsSlice()}
	case addr.Is6() && (q.Qtype == dns.TypeAAAA || q.Qtype == dns.TypeANY):
		hdr.Rrtype = dns.TypeAAAA
		return &dns.AAAA{Hdr: hdr, AAAA: addr.AsSlice()}
	}
	return nil
}
