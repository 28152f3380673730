package agentproto

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/bangervm/banger/errdefs"
)

// Handler carries out operations in the guest; package agent implements it.
// Errors should carry an errdefs class where one applies: it reaches the
// host's Client intact.
type Handler interface {
	Health(ctx context.Context) (Info, error)
	Stats(ctx context.Context) (Stats, error)
	// Start starts a process writing to stdout and stderr (which are safe
	// for concurrent use).
	Start(ctx context.Context, req ExecRequest, stdout, stderr io.Writer) (GuestProcess, error)
	// Open opens a regular file for reading.
	Open(ctx context.Context, path string) (io.ReadCloser, FileInfo, error)
	// Create prepares to write path; nothing is visible until Commit.
	Create(ctx context.Context, path string, mode fs.FileMode) (PendingFile, error)
	// Shutdown stops processes and makes the guest's data safe on disk.
	// The host is told "done" only after it returns nil.
	Shutdown(ctx context.Context) error
	// PowerOff ends the guest; called after the host got Shutdown's
	// confirmation (or gave up on it).
	PowerOff()
}

// GuestProcess is a running guest process, as the Handler sees it.
type GuestProcess interface {
	Stdin() io.WriteCloser
	Resize(rows, cols uint16) error
	Signal(sig syscall.Signal) error
	// Wait returns once the process has ended and its output has been
	// written.
	Wait() (ExitStatus, error)
}

// Identifier is the optional part of a Handler that takes the guest's
// Identity at its ready point (protocol 2). A Handler without it answers
// Identify with ErrFailedPrecondition.
type Identifier interface {
	Identify(ctx context.Context, id Identity) (IdentifyResult, error)
}

// PendingFile is a file being written; Commit makes it visible, Abort
// discards it.
type PendingFile interface {
	io.Writer
	Commit() error
	Abort()
}

// Server is the agent's side of the protocol.
type Server struct {
	Handler      Handler
	AgentVersion string
	Logger       *slog.Logger // must not be nil
	// Version, when set, is asked for the protocol version to announce at
	// each handshake instead of ProtocolVersion. Only the test build of
	// the agent sets it, to play an agent of another protocol version.
	Version func() uint16

	refusing atomic.Bool
}

func (s *Server) version() uint16 {
	if s.Version != nil {
		return s.Version()
	}
	return ProtocolVersion
}

// Refuse makes the server ignore every new HELLO; sessions already
// started go on. The agent calls it before it hands the channel to another
// process, so a host reconnecting meets that process, not this one.
func (s *Server) Refuse() { s.refusing.Store(true) }

// ServeConn serves one host connection (a vsock connection, or a pipe in
// tests) until it ends or ctx is done, and closes it.
func (s *Server) ServeConn(ctx context.Context, conn io.ReadWriteCloser) error {
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	br := bufio.NewReader(conn)
	if err := s.handshake(br, conn); err != nil {
		return fmt.Errorf("agent handshake: %w", err)
	}
	return s.serveSession(ctx, &bufConn{r: br, w: conn, c: conn})
}

// Port is a virtio-serial port as the guest sees it: opened once and kept,
// Read gives EOF while no host is connected. *os.File implements it; the
// deadlines let ServePort stop a session's reads before the next one.
type Port interface {
	io.ReadWriter
	SetReadDeadline(t time.Time) error
	SetWriteDeadline(t time.Time) error
}

// pollInterval is how often a disconnected port is read again.
const pollInterval = 20 * time.Millisecond

// ServePort serves host connections on port, one after another, until ctx
// is done. Between connections it waits for the next HELLO, skipping
// whatever an earlier connection left in the port.
func (s *Server) ServePort(ctx context.Context, port Port) error {
	for ctx.Err() == nil {
		pc := newPortConn(port)
		stop := context.AfterFunc(ctx, func() { pc.Close() })
		br := bufio.NewReader(pc)
		err := s.handshake(br, pc)
		if err == nil {
			s.Logger.Info("host connected")
			pc.polling.Store(false)
			err = s.serveSession(ctx, &bufConn{r: br, w: pc, c: pc})
			s.Logger.Info("host disconnected", "err", err)
		} else if ctx.Err() == nil {
			s.Logger.Warn("agent handshake", "err", err)
			time.Sleep(pollInterval)
		}
		stop()
		pc.Close()
	}
	return ctx.Err()
}

// portConn is one host connection's view of a Port. While polling, EOF
// means "no host yet" and the read is retried; afterwards EOF ends the
// session. Close unblocks and waits out reads and writes in progress, so the
// next connection's reader is the only one.
type portConn struct {
	port     Port
	polling  atomic.Bool
	mu       sync.Mutex
	closed   bool
	done     chan struct{}
	inflight sync.WaitGroup
}

func newPortConn(p Port) *portConn {
	pc := &portConn{port: p, done: make(chan struct{})}
	pc.polling.Store(true)
	return pc
}

func (pc *portConn) enter() bool {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if pc.closed {
		return false
	}
	pc.inflight.Add(1)
	return true
}

func (pc *portConn) Read(b []byte) (int, error) {
	if !pc.enter() {
		return 0, net.ErrClosed
	}
	defer pc.inflight.Done()
	for {
		n, err := pc.port.Read(b)
		if n > 0 {
			return n, nil
		}
		if err == nil || (errors.Is(err, io.EOF) && pc.polling.Load()) {
			select {
			case <-pc.done:
				return 0, net.ErrClosed
			case <-time.After(pollInterval):
			}
			continue
		}
		return 0, err
	}
}

func (pc *portConn) Write(b []byte) (int, error) {
	if !pc.enter() {
		return 0, net.ErrClosed
	}
	defer pc.inflight.Done()
	return pc.port.Write(b)
}

func (pc *portConn) Close() error {
	pc.mu.Lock()
	if pc.closed {
		pc.mu.Unlock()
		return nil
	}
	pc.closed = true
	close(pc.done)
	pc.mu.Unlock()
	now := time.Now()
	rerr := pc.port.SetReadDeadline(now)
	werr := pc.port.SetWriteDeadline(now)
	if rerr == nil && werr == nil {
		pc.inflight.Wait()
	}
	_ = pc.port.SetReadDeadline(time.Time{})
	_ = pc.port.SetWriteDeadline(time.Time{})
	return nil
}

// handshake runs the agent's side: answer every HELLO, start on the GO that
// matches the last compatible one.
func (s *Server) handshake(br *bufio.Reader, w io.Writer) error {
	var want *nonce
	for {
		f, err := readHS(br)
		if err != nil {
			return err
		}
		switch f.kind {
		case kindHello:
			if s.refusing.Load() {
				continue
			}
			// A host of a version this agent also speaks is answered in
			// its version; any other gets ours (and no session), so it
			// can greet again in ours if it speaks it.
			v := s.version()
			if v == ProtocolVersion && f.version >= MinProtocolVersion && f.version <= ProtocolVersion {
				v = f.version
			}
			if err := writeHS(w, hsFrame{kind: kindAck, version: v, nonce: f.nonce, payload: []byte(s.AgentVersion)}); err != nil {
				return err
			}
			if v != f.version {
				s.Logger.Warn("host speaks another protocol version", "host", f.version, "agent", v)
				want = nil
				continue
			}
			n := f.nonce
			want = &n
		case kindGo:
			if want != nil && f.nonce == *want {
				return writeHS(w, hsFrame{kind: kindReady, version: f.version, nonce: f.nonce})
			}
		}
	}
}

func (s *Server) serveSession(ctx context.Context, conn io.ReadWriteCloser) error {
	sess, err := yamux.Server(conn, yamuxConfig(s.Logger.With("op", "yamux")))
	if err != nil {
		return err
	}
	defer sess.Close()
	stop := context.AfterFunc(ctx, func() { sess.Close() })
	defer stop()
	for {
		st, err := sess.AcceptStream()
		if err != nil {
			if errClosed(err) {
				return nil
			}
			return err
		}
		go s.serveStream(ctx, st)
	}
}

// serveStream runs one operation. A panic in a handler is logged and ends
// only this stream, never the agent (which may be PID 1).
func (s *Server) serveStream(ctx context.Context, st *yamux.Stream) {
	defer st.Close()
	defer func() {
		if r := recover(); r != nil {
			s.Logger.Error("operation panicked", "panic", r)
		}
	}()
	fw := &frameWriter{w: st}
	t, p, err := readFrame(st)
	if err != nil {
		s.Logger.Debug("read request", "err", err)
		return
	}
	var req request
	if t != fRequest {
		_ = fw.error(fmt.Errorf("first frame has type %d, want a request: %w", t, errdefs.ErrInvalidArgument))
		return
	}
	if err := json.Unmarshal(p, &req); err != nil {
		_ = fw.error(fmt.Errorf("decode request: %v: %w", err, errdefs.ErrInvalidArgument))
		return
	}
	log := s.Logger.With("op", req.Op)
	switch req.Op {
	case opHealth:
		reply(fw, s.Handler.Health, ctx)
	case opStats:
		reply(fw, s.Handler.Stats, ctx)
	case opReadFile:
		s.readFile(ctx, fw, req.Path)
	case opWriteFile:
		s.writeFile(ctx, st, fw, req.Path, fs.FileMode(req.Mode).Perm())
	case opExec:
		if req.Exec == nil || len(req.Exec.Argv) == 0 {
			_ = fw.error(fmt.Errorf("exec: empty argv: %w", errdefs.ErrInvalidArgument))
			return
		}
		s.exec(ctx, st, fw, *req.Exec, log)
	case opShutdown:
		s.shutdown(ctx, st, fw, log)
	case opTarOut:
		s.tarOut(ctx, fw, req.Path)
	case opTarIn:
		s.tarIn(ctx, st, fw, req.Path)
	case opIdentify:
		s.identify(ctx, fw, req.Identity)
	case opSetClock:
		s.setClock(ctx, fw, req.Time)
	default:
		_ = fw.error(fmt.Errorf("unknown operation %q (agent protocol %d): %w", req.Op, ProtocolVersion, errdefs.ErrInvalidArgument))
	}
}

func (s *Server) identify(ctx context.Context, fw *frameWriter, id *Identity) {
	idf, ok := s.Handler.(Identifier)
	if !ok {
		_ = fw.error(fmt.Errorf("identify: the agent is not waiting for an identity: %w", errdefs.ErrFailedPrecondition))
		return
	}
	if id == nil {
		_ = fw.error(fmt.Errorf("identify: no identity: %w", errdefs.ErrInvalidArgument))
		return
	}
	res, err := idf.Identify(ctx, *id)
	if err != nil {
		_ = fw.error(err)
		return
	}
	_ = fw.json(fResponse, res)
}

// ClockSetter is the optional part of a Handler that sets the guest's
// wall clock (see Client.SetClock). A Handler without it answers
// ErrFailedPrecondition.
type ClockSetter interface {
	SetClock(ctx context.Context, t time.Time) error
}

func (s *Server) setClock(ctx context.Context, fw *frameWriter, t *time.Time) {
	cs, ok := s.Handler.(ClockSetter)
	if !ok {
		_ = fw.error(fmt.Errorf("set clock: this agent cannot: %w", errdefs.ErrFailedPrecondition))
		return
	}
	if t == nil || t.IsZero() {
		_ = fw.error(fmt.Errorf("set clock: no time: %w", errdefs.ErrInvalidArgument))
		return
	}
	if err := cs.SetClock(ctx, *t); err != nil {
		_ = fw.error(err)
		return
	}
	_ = fw.json(fResponse, struct{}{})
}

func reply[T any](fw *frameWriter, f func(context.Context) (T, error), ctx context.Context) {
	v, err := f(ctx)
	if err != nil {
		_ = fw.error(err)
		return
	}
	_ = fw.json(fResponse, v)
}

func (s *Server) readFile(ctx context.Context, fw *frameWriter, path string) {
	rc, fi, err := s.Handler.Open(ctx, path)
	if err != nil {
		_ = fw.error(err)
		return
	}
	sendData(fw, rc, fi, "read "+path)
}

// sendData answers with meta, then streams rc as data frames up to fEOF
// (or an error frame), and closes rc.
func sendData(fw *frameWriter, rc io.ReadCloser, meta any, op string) {
	defer rc.Close()
	if err := fw.json(fResponse, meta); err != nil {
		return
	}
	if _, err := io.CopyBuffer(fw.data(fData), rc, make([]byte, chunkSize)); err != nil {
		_ = fw.error(fmt.Errorf("%s: %w", op, err))
		return
	}
	_ = fw.write(fEOF, nil)
}

func (s *Server) writeFile(ctx context.Context, r io.Reader, fw *frameWriter, path string, mode fs.FileMode) {
	pf, err := s.Handler.Create(ctx, path, mode)
	if err != nil {
		_ = fw.error(err)
		return
	}
	receiveData(r, fw, pf, "write "+path)
}

// receiveData answers that the operation may start, writes data frames to
// pf up to fEOF and commits it, answering again with the outcome. pf is
// aborted unless committed.
func receiveData(r io.Reader, fw *frameWriter, pf PendingFile, op string) {
	committed := false
	defer func() {
		if !committed {
			pf.Abort()
		}
	}()
	if err := fw.json(fResponse, struct{}{}); err != nil {
		return
	}
	var werr error
	for {
		t, data, err := readFrame(r)
		if err != nil {
			return // the host went away: discard the file
		}
		switch t {
		case fData:
			// After a write error keep reading to the end, so the host
			// is not blocked and learns the error.
			if werr == nil {
				_, werr = pf.Write(data)
			}
			continue
		case fEOF:
		default:
			_ = fw.error(fmt.Errorf("%s: unexpected frame type %d: %w", op, t, errdefs.ErrInvalidArgument))
			return
		}
		break
	}
	if werr != nil {
		_ = fw.error(fmt.Errorf("%s: %w", op, werr))
		return
	}
	if err := pf.Commit(); err != nil {
		_ = fw.error(err)
		return
	}
	committed = true
	_ = fw.json(fResponse, struct{}{})
}

// stdinQueue is how many stdin frames may wait for a process that is not
// reading: enough that resizes and signals queued behind them still get
// through promptly, bounded so the host's flow control still applies.
const stdinQueue = 64

func (s *Server) exec(ctx context.Context, st io.Reader, fw *frameWriter, req ExecRequest, log *slog.Logger) {
	// Output waits for the "started" response, which must come first.
	ready := make(chan struct{})
	p, err := s.Handler.Start(ctx, req, gated{ready, fw.data(fStdout)}, gated{ready, fw.data(fStderr)})
	if err != nil {
		_ = fw.error(err)
		close(ready)
		return
	}
	exited := make(chan struct{})
	if err := fw.json(fResponse, struct{}{}); err != nil {
		_ = p.Signal(syscall.SIGKILL)
	}
	close(ready)

	stdin := make(chan []byte, stdinQueue)
	go func() {
		in := p.Stdin()
		defer in.Close()
		for b := range stdin {
			if _, err := in.Write(b); err != nil {
				// The process closed its stdin: drop the rest.
				for range stdin {
				}
				return
			}
		}
	}()
	go func() {
		stdinOpen := true
		closeStdin := func() {
			if stdinOpen {
				stdinOpen = false
				close(stdin)
			}
		}
		defer closeStdin()
		for {
			t, data, err := readFrame(st)
			if err != nil {
				// The host closed the stream (its context ended) or the
				// session dropped: nobody will see the output, so stop
				// the process.
				select {
				case <-exited:
				default:
					log.Info("host abandoned the process; killing it", "argv", req.Argv, "err", err)
					_ = p.Signal(syscall.SIGKILL)
				}
				return
			}
			switch t {
			case fStdin:
				if stdinOpen {
					select {
					case stdin <- data:
					case <-exited:
					}
				}
			case fStdinEOF:
				closeStdin()
			case fResize:
				var ws winSize
				if json.Unmarshal(data, &ws) == nil {
					_ = p.Resize(ws.Rows, ws.Cols)
				}
			case fSignal:
				var sm signalMsg
				if json.Unmarshal(data, &sm) == nil && sm.Signal > 0 && sm.Signal < 65 {
					_ = p.Signal(syscall.Signal(sm.Signal))
				}
			}
		}
	}()
	status, err := p.Wait()
	close(exited)
	if err != nil {
		_ = fw.error(err)
		return
	}
	_ = fw.json(fExit, status)
}

// gated holds writes until ready is closed.
type gated struct {
	ready <-chan struct{}
	w     io.Writer
}

func (g gated) Write(p []byte) (int, error) {
	<-g.ready
	return g.w.Write(p)
}

// shutdownAckWait bounds how long the agent waits for the host to read the
// confirmation before it powers off: bytes still in flight on the serial
// port would be lost.
const shutdownAckWait = 2 * time.Second

func (s *Server) shutdown(ctx context.Context, st *yamux.Stream, fw *frameWriter, log *slog.Logger) {
	log.Info("shutdown requested")
	if err := s.Handler.Shutdown(context.WithoutCancel(ctx)); err != nil {
		log.Error("shutdown", "err", err)
		_ = fw.error(err)
		// Power off regardless: processes are gone and the host asked
		// for it; it knows the data may not be safe.
	} else {
		_ = fw.json(fResponse, struct{}{})
	}
	// The host closes its end after reading the answer.
	_ = st.SetReadDeadline(time.Now().Add(shutdownAckWait))
	_, _ = io.Copy(io.Discard, st)
	s.Handler.PowerOff()
}
