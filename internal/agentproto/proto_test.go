package agentproto

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bangervm/banger/errdefs"
)

// fakeHandler answers Health and fails everything else; slow makes Health
// block until released, for disconnect tests.
type fakeHandler struct {
	slow  chan struct{}
	stuck chan struct{} // when set, Start blocks until it is closed
}

func (h *fakeHandler) Health(ctx context.Context) (Info, error) {
	if h.slow != nil {
		<-h.slow
	}
	return Info{AgentVersion: "test", Hostname: "guest"}, nil
}
func (h *fakeHandler) Stats(ctx context.Context) (Stats, error) {
	return Stats{}, fmt.Errorf("no stats: %w", errdefs.ErrUnavailable)
}
func (h *fakeHandler) Start(ctx context.Context, req ExecRequest, stdout, stderr io.Writer) (GuestProcess, error) {
	if h.stuck != nil {
		<-h.stuck
	}
	return nil, fmt.Errorf("exec %s: %w", req.Argv[0], errdefs.ErrNotFound)
}
func (h *fakeHandler) Open(ctx context.Context, path string) (io.ReadCloser, FileInfo, error) {
	return nil, FileInfo{}, fmt.Errorf("open %s: %w", path, errdefs.ErrNotFound)
}
func (h *fakeHandler) Create(ctx context.Context, path string, mode fs.FileMode) (PendingFile, error) {
	return nil, fmt.Errorf("create %s: %w", path, errdefs.ErrPermissionDenied)
}
func (h *fakeHandler) Shutdown(ctx context.Context) error { return nil }
func (h *fakeHandler) PowerOff()                          {}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// fakePort behaves like a virtio-serial port seen from the guest: Read
// gives EOF while no host is connected, bytes written then are lost, and
// bytes left from an earlier connection (stale) are read first.
type fakePort struct {
	mu    sync.Mutex
	cur   net.Conn
	stale []byte
	rd    time.Time
	wd    time.Time
}

// connect attaches a new host and returns the host's end.
func (p *fakePort) connect() net.Conn {
	g, h := net.Pipe()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cur = g
	_ = g.SetReadDeadline(p.rd)
	_ = g.SetWriteDeadline(p.wd)
	return h
}

func (p *fakePort) addStale(b []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stale = append(p.stale, b...)
}

func (p *fakePort) Read(b []byte) (int, error) {
	p.mu.Lock()
	c := p.cur
	if c != nil && len(p.stale) > 0 {
		n := copy(b, p.stale)
		p.stale = p.stale[n:]
		p.mu.Unlock()
		return n, nil
	}
	p.mu.Unlock()
	if c == nil {
		return 0, io.EOF
	}
	n, err := c.Read(b)
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrClosedPipe) {
		p.mu.Lock()
		if p.cur == c {
			p.cur = nil
		}
		p.mu.Unlock()
		return n, io.EOF
	}
	return n, err
}

func (p *fakePort) Write(b []byte) (int, error) {
	p.mu.Lock()
	c := p.cur
	p.mu.Unlock()
	if c == nil {
		return len(b), nil
	}
	if _, err := c.Write(b); err != nil && !errors.Is(err, io.ErrClosedPipe) {
		return 0, err
	}
	return len(b), nil
}

func (p *fakePort) SetReadDeadline(t time.Time) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rd = t
	if p.cur != nil {
		return p.cur.SetReadDeadline(t)
	}
	return nil
}

func (p *fakePort) SetWriteDeadline(t time.Time) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.wd = t
	if p.cur != nil {
		return p.cur.SetWriteDeadline(t)
	}
	return nil
}

func servePort(t *testing.T, h Handler) *fakePort {
	t.Helper()
	port := &fakePort{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	srv := &Server{Handler: h, AgentVersion: "agent-test", Logger: testLogger(t)}
	go func() { defer close(done); _ = srv.ServePort(ctx, port) }()
	t.Cleanup(func() { cancel(); <-done })
	return port
}

func connect(t *testing.T, conn net.Conn) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Connect(ctx, conn, ClientConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func health(t *testing.T, c *Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	info, err := c.Health(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Hostname != "guest" {
		t.Fatalf("info = %+v", info)
	}
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

func TestHandshakeResync(t *testing.T) {
	hello := appendHS(nil, hsFrame{kind: kindHello, version: ProtocolVersion, nonce: nonce{1, 2, 3}})
	badCRC := bytes.Clone(hello)
	badCRC[len(badCRC)-1] ^= 0xff
	huge := bytes.Clone(hello)
	binary.BigEndian.PutUint16(huge[hsHeaderLen-2:], 0xffff)
	staleYamux := []byte{0, 0, 0, 1, 0, 0, 0, 5, 0, 0, 0, 10, 'h', 'e', 'l', 'l', 'o'}
	tests := []struct {
		name  string
		stale []byte
	}{
		{"clean", nil},
		{"random garbage", randBytes(64 << 10)},
		{"stale yamux and an old GO", append(staleYamux, appendHS(nil, hsFrame{kind: kindGo, version: ProtocolVersion, nonce: nonce{1, 2, 3}})...)},
		{"old hello", hello},
		{"truncated hello", hello[:20]},
		{"bad checksum", badCRC},
		{"oversized payload length", huge},
		{"magic only", []byte(hsMagic + hsMagic + "H")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			port := servePort(t, &fakeHandler{})
			port.addStale(tt.stale)
			c := connect(t, port.connect())
			health(t, c)
			if c.AgentVersion() != "agent-test" {
				t.Errorf("agent version %q", c.AgentVersion())
			}
		})
	}
}

func TestReadHS(t *testing.T) {
	want := hsFrame{kind: kindAck, version: 3, nonce: nonce{9}, payload: []byte("v1.2.3")}
	frame := appendHS(nil, want)
	tests := []struct {
		name string
		in   []byte
		ok   bool
	}{
		{"frame", frame, true},
		{"garbage first", append(randBytes(10000), frame...), true},
		{"frame inside a broken frame", append([]byte(hsMagic+"A\x00\x01"), frame...), true},
		{"truncated", frame[:len(frame)-1], false},
		{"empty", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := readHS(bufio.NewReader(bytes.NewReader(tt.in)))
			if !tt.ok {
				if err == nil {
					t.Fatalf("got %+v, want an error", f)
				}
				return
			}
			if err != nil || f.kind != want.kind || f.version != want.version || f.nonce != want.nonce || string(f.payload) != string(want.payload) {
				t.Fatalf("got %+v, %v", f, err)
			}
		})
	}
}

// TestVersionMismatch: a host meeting an agent of another protocol version
// fails with a FailedPrecondition naming both versions and the fix, and an
// agent meeting another host version never starts the session.
func TestVersionMismatch(t *testing.T) {
	t.Run("host side", func(t *testing.T) {
		host, guest := net.Pipe()
		go func() {
			br := bufio.NewReader(guest)
			for {
				f, err := readHS(br)
				if err != nil {
					return
				}
				if f.kind == kindHello {
					_ = writeHS(guest, hsFrame{kind: kindAck, version: 99, nonce: f.nonce, payload: []byte("old-agent")})
				}
			}
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := Connect(ctx, host, ClientConfig{})
		if !errdefs.IsFailedPrecondition(err) {
			t.Fatalf("err = %v, want FailedPrecondition", err)
		}
		for _, s := range []string{"99", fmt.Sprintf("versions %d to %d", MinProtocolVersion, ProtocolVersion), "restart the VM", "old-agent"} {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("error %q does not mention %q", err, s)
			}
		}
	})
	t.Run("agent side", func(t *testing.T) {
		port := servePort(t, &fakeHandler{})
		conn := port.connect()
		defer conn.Close()
		n := nonce{7}
		go func() {
			_ = writeHS(conn, hsFrame{kind: kindHello, version: 99, nonce: n})
			_ = writeHS(conn, hsFrame{kind: kindGo, version: 99, nonce: n})
		}()
		br := bufio.NewReader(conn)
		f, err := readHS(br)
		if err != nil || f.kind != kindAck || f.version != ProtocolVersion {
			t.Fatalf("ack %+v, %v", f, err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if f, err := readHS(br); err == nil {
			t.Fatalf("agent answered GO of an incompatible host: %+v", f)
		}
	})
}

// TestReconnect: a host that drops the connection mid-operation, and one
// that never finished its handshake, leave the agent ready for the next.
func TestReconnect(t *testing.T) {
	h := &fakeHandler{slow: make(chan struct{})}
	port := servePort(t, h)

	c1 := connect(t, port.connect())
	errc := make(chan error, 1)
	go func() { _, err := c1.Health(context.Background()); errc <- err }()
	time.Sleep(50 * time.Millisecond)
	c1.Close() // mid-operation
	if err := <-errc; err == nil {
		t.Fatal("health on a closed client succeeded")
	}
	close(h.slow)

	// A host that dies half-way through the handshake.
	half := port.connect()
	_ = writeHS(half, hsFrame{kind: kindHello, version: ProtocolVersion, nonce: nonce{5}})
	half.Close()

	for i := range 3 {
		c := connect(t, port.connect())
		health(t, c)
		if i < 2 {
			c.Close()
		}
	}
}

// TestServeConn covers the vsock-style path: one connection per session.
func TestServeConn(t *testing.T) {
	host, guest := net.Pipe()
	srv := &Server{Handler: &fakeHandler{}, AgentVersion: "x", Logger: testLogger(t)}
	done := make(chan error, 1)
	go func() { done <- srv.ServeConn(context.Background(), guest) }()
	c := connect(t, host)
	health(t, c)
	c.Close()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("ServeConn did not return after the host closed")
	}
}

// TestErrorClasses: errdefs classes survive the wire.
func TestErrorClasses(t *testing.T) {
	port := servePort(t, &fakeHandler{})
	c := connect(t, port.connect())
	ctx := context.Background()
	if _, err := c.Stats(ctx); !errdefs.IsUnavailable(err) {
		t.Errorf("stats: %v", err)
	}
	if _, _, err := c.ReadFile(ctx, "/nope"); !errdefs.IsNotFound(err) {
		t.Errorf("read: %v", err)
	}
	if err := c.WriteFile(ctx, "/x", 0o644, strings.NewReader("x")); !errdefs.IsPermissionDenied(err) {
		t.Errorf("write: %v", err)
	}
	if _, err := c.Exec(ctx, ExecRequest{Argv: []string{"nope"}}, ExecIO{}); !errdefs.IsNotFound(err) {
		t.Errorf("exec: %v", err)
	}
	if _, err := c.Exec(ctx, ExecRequest{}, ExecIO{}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("exec without argv: %v", err)
	}
}

// TestHostileInput: garbage inside streams and on the connection ends
// streams or the session, never the agent.
func TestHostileInput(t *testing.T) {
	port := servePort(t, &fakeHandler{})
	c := connect(t, port.connect())
	frames := []struct {
		name string
		raw  []byte
	}{
		{"oversized length", []byte{fRequest, 0xff, 0xff, 0xff, 0xff}},
		{"not a request", []byte{fStdin, 0, 0, 0, 1, 'x'}},
		{"bad json", append([]byte{fRequest, 0, 0, 0, 3}, "{{{"...)},
		{"unknown op", append([]byte{fRequest, 0, 0, 0, 13}, `{"op":"boom"}`...)},
		{"exec without argv", append([]byte{fRequest, 0, 0, 0, 13}, `{"op":"exec"}`...)},
		{"truncated", []byte{fRequest, 0, 0, 1}},
		{"random", randBytes(100 << 10)},
	}
	for _, f := range frames {
		t.Run(f.name, func(t *testing.T) {
			st, err := c.sess.OpenStream()
			if err != nil {
				t.Fatal(err)
			}
			_ = st.SetDeadline(time.Now().Add(5 * time.Second))
			_, _ = st.Write(f.raw)
			_ = st.Close()
			_, _ = io.Copy(io.Discard, st)
			health(t, c)
		})
	}
	t.Run("garbage on the connection", func(t *testing.T) {
		raw := port.connect() // replaces the session's host end
		c.Close()
		go func() { _, _ = raw.Write(randBytes(256 << 10)); raw.Close() }()
		time.Sleep(100 * time.Millisecond)
		c2 := connect(t, port.connect())
		health(t, c2)
	})
}

// TestCancel: cancelling an operation's context fails it promptly.
func TestCancel(t *testing.T) {
	h := &fakeHandler{slow: make(chan struct{})}
	defer close(h.slow)
	port := servePort(t, h)
	c := connect(t, port.connect())
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := c.Health(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v", err)
	}
}

// TestStartStalled: an agent that never says whether the process
// started fails the exec as unavailable instead of holding it forever.
func TestStartStalled(t *testing.T) {
	h := &fakeHandler{stuck: make(chan struct{})}
	defer close(h.stuck)
	port := servePort(t, h)
	c := connect(t, port.connect())
	defer func(d time.Duration) { StartTimeout = d }(StartTimeout)
	StartTimeout = 200 * time.Millisecond
	_, err := c.Start(context.Background(), ExecRequest{Argv: []string{"sleep", "600"}}, ExecIO{})
	if !errdefs.IsUnavailable(err) || !strings.Contains(err.Error(), "did not start the process") {
		t.Fatalf("err = %v", err)
	}
	// The session is fine: only that operation was given up.
	if _, err := c.Health(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestConnectTimeout(t *testing.T) {
	host, guest := net.Pipe()
	defer guest.Close()
	go func() { _, _ = io.Copy(io.Discard, guest) }()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := Connect(ctx, host, ClientConfig{})
	if !errdefs.IsUnavailable(err) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v", err)
	}
}

func FuzzReadHS(f *testing.F) {
	f.Add(appendHS(nil, hsFrame{kind: kindHello, version: 1, payload: []byte("x")}))
	f.Add([]byte(hsMagic + "G"))
	f.Fuzz(func(t *testing.T, b []byte) {
		br := bufio.NewReader(bytes.NewReader(b))
		for {
			if _, err := readHS(br); err != nil {
				return
			}
		}
	})
}

func FuzzReadFrame(f *testing.F) {
	f.Add([]byte{fRequest, 0, 0, 0, 2, '{', '}'})
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bytes.NewReader(b)
		for {
			typ, p, err := readFrame(r)
			if err != nil {
				return
			}
			var v request
			_ = decodeFrame(typ, p, fRequest, &v)
		}
	})
}
