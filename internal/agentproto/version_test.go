package agentproto

import (
	"bufio"
	"bytes"
	"context"
	"net"
	"testing"
	"time"

	"github.com/bangervm/banger/errdefs"
)

// serveV1 plays an agent of protocol 1 as it shipped: it acknowledges
// every HELLO with version 1 and starts the session only on a GO after a
// version-1 HELLO, then serves h.
func serveV1(t *testing.T, conn net.Conn, h Handler) {
	t.Helper()
	srv := &Server{Handler: h, AgentVersion: "agent-v1", Logger: testLogger(t)}
	go func() {
		br := bufio.NewReader(conn)
		var want *nonce
		for {
			f, err := readHS(br)
			if err != nil {
				return
			}
			switch f.kind {
			case kindHello:
				_ = writeHS(conn, hsFrame{kind: kindAck, version: 1, nonce: f.nonce, payload: []byte(srv.AgentVersion)})
				want = nil
				if f.version == 1 {
					n := f.nonce
					want = &n
				}
				continue
			case kindGo:
				if want == nil || f.nonce != *want {
					continue
				}
				_ = writeHS(conn, hsFrame{kind: kindReady, version: 1, nonce: f.nonce})
			}
			_ = srv.serveSession(context.Background(), &bufConn{r: br, w: conn, c: conn})
			return
		}
	}()
}

// TestOlderAgent: the host still talks to a protocol-1 agent (a VM booted
// before an upgrade) for every operation it had, and refuses Identify
// with a clear FailedPrecondition instead of sending what it cannot read.
func TestOlderAgent(t *testing.T) {
	host, guest := net.Pipe()
	serveV1(t, guest, &fakeHandler{})
	c := connect(t, host)
	if c.ProtocolVersion() != 1 || c.AgentVersion() != "agent-v1" {
		t.Fatalf("session protocol %d agent %q, want 1 and agent-v1", c.ProtocolVersion(), c.AgentVersion())
	}
	health(t, c)
	_, err := c.Identify(context.Background(), Identity{Hostname: "x"})
	if !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("identify on a protocol-1 agent: %v, want FailedPrecondition", err)
	}
}

// TestOlderHost: an agent of this version answers a protocol-1 host in
// version 1, so a daemon not yet upgraded still reaches a new guest.
func TestOlderHost(t *testing.T) {
	port := servePort(t, &fakeHandler{})
	conn := port.connect()
	defer conn.Close()
	n := nonce{9}
	go func() { _ = writeHS(conn, hsFrame{kind: kindHello, version: 1, nonce: n}) }()
	br := bufio.NewReader(conn)
	f, err := readHS(br)
	if err != nil || f.kind != kindAck || f.version != 1 {
		t.Fatalf("ack %+v, %v; want a version-1 ACK", f, err)
	}
	go func() { _ = writeHS(conn, hsFrame{kind: kindGo, version: 1, nonce: n}) }()
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if f, err := readHS(br); err != nil || f.kind != kindReady {
		t.Fatalf("ready %+v, %v", f, err)
	}
}

type identifyingHandler struct {
	fakeHandler
	got chan Identity
}

func (h *identifyingHandler) Identify(ctx context.Context, id Identity) (IdentifyResult, error) {
	h.got <- id
	return IdentifyResult{Reconnect: true}, nil
}

// TestIdentify: the identity reaches a handler that waits for one intact;
// a handler that does not wait refuses it as FailedPrecondition.
func TestIdentify(t *testing.T) {
	h := &identifyingHandler{got: make(chan Identity, 1)}
	c := connect(t, servePort(t, h).connect())
	if c.ProtocolVersion() != ProtocolVersion {
		t.Fatalf("session protocol %d, want %d", c.ProtocolVersion(), ProtocolVersion)
	}
	want := Identity{Hostname: "clone-1", MAC: "52:54:00:12:34:56", Time: time.Unix(1700000000, 5).UTC(),
		Entropy: bytes.Repeat([]byte{7}, IdentityEntropy), Network: &NetworkConfig{Address: "10.0.0.2/24"}}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := c.Identify(ctx, want)
	if err != nil || !res.Reconnect {
		t.Fatalf("identify: %+v, %v; want Reconnect", res, err)
	}
	got := <-h.got
	if got.Hostname != want.Hostname || got.MAC != want.MAC || !got.Time.Equal(want.Time) ||
		!bytes.Equal(got.Entropy, want.Entropy) || got.Network == nil || got.Network.Address != want.Network.Address {
		t.Fatalf("identity %+v, want %+v", got, want)
	}

	plain := connect(t, servePort(t, &fakeHandler{}).connect())
	if _, err := plain.Identify(ctx, want); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("identify on a handler that is not waiting: %v, want FailedPrecondition", err)
	}
}

type clockHandler struct {
	fakeHandler
	got chan time.Time
}

func (h *clockHandler) SetClock(ctx context.Context, t time.Time) error {
	h.got <- t
	return nil
}

// TestSetClock: the host's time reaches a handler that sets the clock
// intact; one that cannot refuses it as FailedPrecondition.
func TestSetClock(t *testing.T) {
	h := &clockHandler{got: make(chan time.Time, 1)}
	c := connect(t, servePort(t, h).connect())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	want := time.Unix(1800000000, 123456789).UTC()
	if err := c.SetClock(ctx, want); err != nil {
		t.Fatalf("set clock: %v", err)
	}
	if got := <-h.got; !got.Equal(want) {
		t.Errorf("clock %v, want %v", got, want)
	}
	plain := connect(t, servePort(t, &fakeHandler{}).connect())
	if err := plain.SetClock(ctx, want); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("set clock on a handler that cannot: %v, want FailedPrecondition", err)
	}
}

// TestRefuse: a server told to refuse answers no new HELLO, so a host
// reconnecting reaches the process the channel was handed to.
func TestRefuse(t *testing.T) {
	host, guest := net.Pipe()
	defer host.Close()
	srv := &Server{Handler: &fakeHandler{}, AgentVersion: "x", Logger: testLogger(t)}
	srv.Refuse()
	go func() { _ = srv.ServeConn(context.Background(), guest) }()
	go func() { _ = writeHS(host, hsFrame{kind: kindHello, version: ProtocolVersion, nonce: nonce{3}}) }()
	_ = host.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if f, err := readHS(bufio.NewReader(host)); err == nil {
		t.Fatalf("a refusing server answered: %+v", f)
	}
}
