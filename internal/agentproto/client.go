package agentproto

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/bangervm/banger/errdefs"
)

// DefaultHandshakeTimeout bounds Connect when ctx has no deadline.
const DefaultHandshakeTimeout = 30 * time.Second

// StartTimeout bounds how long Start waits for the agent to say whether
// the process started (a variable for tests).
var StartTimeout = time.Minute

// helloInterval is how often the host repeats HELLO: the agent may not
// have opened its port yet, and HELLOs sent before then can be lost.
const helloInterval = 200 * time.Millisecond

// Client is the host side of one session with an agent. Its methods may be
// called concurrently; each operation runs on its own stream. A Client is
// done when the connection drops (see Done); connect again with a new conn.
type Client struct {
	sess         *yamux.Session
	agentVersion string
	protocol     uint16
}

// ClientConfig tunes Connect. The zero value is ready to use.
type ClientConfig struct {
	Logger *slog.Logger // yamux's diagnostics; nil discards them
}

// Connect performs the handshake on conn (the unix socket of the agent's
// serial port, or a vsock connection) and starts a session. It retries
// HELLO until the agent answers or ctx ends, so it may be called while the
// guest is still booting. The Client owns conn from then on; Close closes
// it. Connect never half-closes conn.
//
// An agent of a protocol version outside MinProtocolVersion to
// ProtocolVersion gives an error of class
// ErrFailedPrecondition (and ErrVersionMismatch).
func Connect(ctx context.Context, conn net.Conn, cfg ClientConfig) (*Client, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultHandshakeTimeout)
		defer cancel()
	}
	br, version, proto, err := hostHandshake(ctx, conn)
	if err != nil {
		conn.Close()
		return nil, err
	}
	ycfg := yamuxConfig(cfg.Logger)
	sess, err := yamux.Client(&bufConn{r: br, w: conn, c: conn}, ycfg)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("start agent session: %w", err)
	}
	return &Client{sess: sess, agentVersion: version, protocol: proto}, nil
}

func yamuxConfig(log *slog.Logger) *yamux.Config {
	c := yamux.DefaultConfig()
	c.LogOutput = io.Discard
	if log != nil {
		c.LogOutput = nil
		c.Logger = slogAdapter{log}
	}
	c.KeepAliveInterval = 15 * time.Second
	c.StreamCloseTimeout = time.Minute
	return c
}

// slogAdapter turns yamux's printf logging into records: its errors (a
// keepalive that failed, a stream open nobody acknowledged: what ends a
// session) are warnings, the rest debug.
type slogAdapter struct{ l *slog.Logger }

func (a slogAdapter) log(msg string) {
	if strings.HasPrefix(msg, "[ERR]") {
		a.l.Warn(msg)
		return
	}
	a.l.Debug(msg)
}

func (a slogAdapter) Print(v ...any)                 { a.log(fmt.Sprint(v...)) }
func (a slogAdapter) Printf(format string, v ...any) { a.log(fmt.Sprintf(format, v...)) }
func (a slogAdapter) Println(v ...any)               { a.log(fmt.Sprint(v...)) }

// hostHandshake runs the host's side of the handshake (see the package
// documentation) and returns the reader positioned at the first session
// byte, the agent's version string and the protocol version of the session.
// It offers ProtocolVersion first; an older agent within
// MinProtocolVersion answers with its own, and the host greets it again in
// that version (an agent starts only on a GO after a HELLO of its version).
func hostHandshake(ctx context.Context, conn net.Conn) (*bufio.Reader, string, uint16, error) {
	// Unblock reads and writes when ctx ends; the deadlines are cleared
	// before the session starts.
	stopDeadline := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	defer func() {
		if stopDeadline() {
			_ = conn.SetDeadline(time.Time{})
		}
	}()
	br := bufio.NewReader(conn)
	version := ProtocolVersion
	for {
		agentVersion, got, err := hostRound(ctx, conn, br, version)
		if err != nil {
			return nil, "", 0, err
		}
		if got == version {
			return br, agentVersion, version, nil
		}
		if got >= version || got < MinProtocolVersion {
			return nil, "", 0, fmt.Errorf("agent %q speaks protocol version %d, this banger speaks versions %d to %d; restart the VM so it boots the agent of this banger: %w: %w",
				agentVersion, got, MinProtocolVersion, ProtocolVersion, errdefs.ErrFailedPrecondition, errdefs.ErrVersionMismatch)
		}
		version = got
	}
}

// hostRound greets the agent in version with a fresh nonce until it
// acknowledges. When it answers in that version it sends GO and waits for
// READY; otherwise it returns the agent's version without GO.
func hostRound(ctx context.Context, conn net.Conn, br *bufio.Reader, version uint16) (agentVersion string, got uint16, err error) {
	var n nonce
	if _, err := rand.Read(n[:]); err != nil {
		return "", 0, fmt.Errorf("agent handshake: %w", err)
	}
	fail := func(err error) (string, uint16, error) {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", ctx.Err(), err)
		}
		return "", 0, fmt.Errorf("agent handshake: no answer from the agent: %w: %w", err, errdefs.ErrUnavailable)
	}

	hello := hsFrame{kind: kindHello, version: version, nonce: n}
	stopHello := make(chan struct{})
	helloDone := make(chan struct{})
	go func() {
		defer close(helloDone)
		t := time.NewTicker(helloInterval)
		defer t.Stop()
		for {
			if err := writeHS(conn, hello); err != nil {
				return
			}
			select {
			case <-stopHello:
				return
			case <-t.C:
			}
		}
	}()
	stop := sync.OnceFunc(func() { close(stopHello); <-helloDone })
	defer stop()

	var ack hsFrame
	for {
		f, err := readHS(br)
		if err != nil {
			return fail(err)
		}
		if f.kind == kindAck && f.nonce == n {
			ack = f
			break
		}
	}
	// No HELLO may follow GO: the agent reads session bytes after it.
	stop()
	agentVersion = string(ack.payload)
	if ack.version != version {
		return agentVersion, ack.version, nil
	}
	if err := writeHS(conn, hsFrame{kind: kindGo, version: version, nonce: n}); err != nil {
		return fail(err)
	}
	for {
		f, err := readHS(br)
		if err != nil {
			return fail(err)
		}
		if f.kind == kindReady && f.nonce == n {
			return agentVersion, version, nil
		}
	}
}

// AgentVersion is the version string the agent reported in the handshake.
func (c *Client) AgentVersion() string { return c.agentVersion }

// ProtocolVersion is the protocol version of the session: ProtocolVersion,
// or an older one the agent speaks.
func (c *Client) ProtocolVersion() uint16 { return c.protocol }

// Done is closed when the session has ended (connection lost or Close).
func (c *Client) Done() <-chan struct{} { return c.sess.CloseChan() }

// Close ends the session and closes the connection. Running operations
// fail; the agent kills processes started by Exec.
func (c *Client) Close() error { return c.sess.Close() }

// call is one operation's stream, closed when ctx ends.
type call struct {
	st   *yamux.Stream
	fw   *frameWriter
	stop func() bool
	ctx  context.Context
}

func (c *Client) open(ctx context.Context, req request) (*call, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	st, err := c.sess.OpenStream()
	if err != nil {
		return nil, fmt.Errorf("agent %s: open stream: %w: %w", req.Op, err, errdefs.ErrUnavailable)
	}
	cl := &call{st: st, fw: &frameWriter{w: st}, ctx: ctx}
	cl.stop = context.AfterFunc(ctx, func() {
		// Closing tells the agent to abandon the operation; the deadline
		// unblocks our own reads at once.
		_ = st.Close()
		_ = st.SetDeadline(time.Now())
	})
	if err := cl.fw.json(fRequest, req); err != nil {
		cl.close()
		return nil, cl.wrap(req.Op, err)
	}
	return cl, nil
}

func (cl *call) close() {
	cl.stop()
	_ = cl.st.Close()
}

// wrap names the operation and prefers the context's error when it ended
// the call.
func (cl *call) wrap(op string, err error) error {
	if cl.ctx.Err() != nil {
		return fmt.Errorf("agent %s: %w", op, cl.ctx.Err())
	}
	return fmt.Errorf("agent %s: %w", op, err)
}

// simple runs a request whose answer is one JSON response.
func (c *Client) simple(ctx context.Context, req request, v any) error {
	cl, err := c.open(ctx, req)
	if err != nil {
		return err
	}
	defer cl.close()
	if err := readJSON(cl.st, fResponse, v); err != nil {
		return cl.wrap(req.Op, err)
	}
	return nil
}

// Health reports the agent's version, the guest's hostname and uptime.
func (c *Client) Health(ctx context.Context) (Info, error) {
	var info Info
	err := c.simple(ctx, request{Op: opHealth}, &info)
	return info, err
}

// Stats reports guest memory, disk use, load and uptime.
func (c *Client) Stats(ctx context.Context) (Stats, error) {
	var s Stats
	err := c.simple(ctx, request{Op: opStats}, &s)
	return s, err
}

// Identify tells an agent waiting at its ready point who it is; the boot
// continues once it has applied the identity (MAC, clock, entropy, then
// root, network and SSH). Operations sent meanwhile wait for the boot to
// finish. When the result says Reconnect, the guest's own init takes over
// and the agent serves from a new process: close this session and connect
// again. An agent that is not waiting refuses with
// ErrFailedPrecondition, as does one older than protocol 2.
func (c *Client) Identify(ctx context.Context, id Identity) (IdentifyResult, error) {
	var res IdentifyResult
	if c.protocol < 2 {
		return res, fmt.Errorf("agent identify: agent %q speaks protocol %d, which has no ready point: %w", c.agentVersion, c.protocol, errdefs.ErrFailedPrecondition)
	}
	err := c.simple(ctx, request{Op: opIdentify, Identity: &id}, &res)
	return res, err
}

// SetClock sets the guest's wall clock to t. Identify carries the host's
// clock too, but the guest applies it only once it has read and decoded
// the message: on a guest just resumed under TCG, whose every code path
// is translated anew, that is a second or more later. Sent again once the
// boot has finished, over a warm path, t is off by one short trip. An
// agent that predates the operation answers ErrInvalidArgument ("unknown
// operation").
func (c *Client) SetClock(ctx context.Context, t time.Time) error {
	if c.protocol < 2 {
		return fmt.Errorf("agent set clock: agent %q speaks protocol %d: %w", c.agentVersion, c.protocol, errdefs.ErrFailedPrecondition)
	}
	return c.simple(ctx, request{Op: opSetClock, Time: &t}, nil)
}

// Shutdown asks the agent to stop every process, make the guest's disks
// consistent (sync, unmount or remount read-only) and power off. It returns
// nil only once the agent has confirmed that the data is on disk; the VM
// exits shortly after. Any error means that confirmation was not received.
func (c *Client) Shutdown(ctx context.Context) error {
	return c.simple(ctx, request{Op: opShutdown}, nil)
}

// ReadFile opens the guest file at path (absolute) for streaming. The
// caller must close the reader; cancelling ctx aborts the transfer. A
// missing file is ErrNotFound.
func (c *Client) ReadFile(ctx context.Context, path string) (io.ReadCloser, FileInfo, error) {
	cl, err := c.open(ctx, request{Op: opReadFile, Path: path})
	if err != nil {
		return nil, FileInfo{}, err
	}
	var fi FileInfo
	if err := readJSON(cl.st, fResponse, &fi); err != nil {
		cl.close()
		return nil, FileInfo{}, cl.wrap("read "+path, err)
	}
	return &fileReader{cl: cl, op: "read " + path}, fi, nil
}

// fileReader reads an operation's data frames up to fEOF.
type fileReader struct {
	cl  *call
	op  string
	buf []byte
	err error
}

func (r *fileReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		t, data, err := readFrame(r.cl.st)
		switch {
		case err != nil:
			r.err = r.cl.wrap(r.op, err)
		case t == fData:
			r.buf = data
		case t == fEOF:
			r.err = io.EOF
		default:
			r.err = r.cl.wrap(r.op, decodeFrame(t, data, fEOF, nil))
			if r.err == nil {
				r.err = io.EOF
			}
		}
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

func (r *fileReader) Close() error {
	r.cl.close()
	return nil
}

// WriteFile streams r into the guest file at path (absolute) with the
// permission bits of mode. The agent writes a temporary file beside it and
// renames it into place after fsync, so the file is either complete or
// absent. The parent directory must exist (else ErrNotFound).
func (c *Client) WriteFile(ctx context.Context, path string, mode fs.FileMode, r io.Reader) error {
	return c.sendData(ctx, request{Op: opWriteFile, Path: path, Mode: uint32(mode.Perm())}, "write "+path, r)
}

// sendData runs an operation that takes a data stream: the agent checks
// the request first, then gets r as data frames and answers with the
// outcome.
func (c *Client) sendData(ctx context.Context, req request, op string, r io.Reader) error {
	cl, err := c.open(ctx, req)
	if err != nil {
		return err
	}
	defer cl.close()
	// The agent checks the path before we send data.
	if err := readJSON(cl.st, fResponse, nil); err != nil {
		return cl.wrap(op, err)
	}
	if _, err := io.CopyBuffer(cl.fw.data(fData), r, make([]byte, chunkSize)); err != nil {
		return cl.wrap(op, err)
	}
	if err := cl.fw.write(fEOF, nil); err != nil {
		return cl.wrap(op, err)
	}
	if err := readJSON(cl.st, fResponse, nil); err != nil {
		return cl.wrap(op, err)
	}
	return nil
}

// ExecIO connects a guest process to host streams. Nil Stdin means an empty
// stdin; nil writers discard. With TTY, Stderr is unused.
type ExecIO struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
}

// Exec runs a process in the guest and waits for it. Cancelling ctx kills
// the process.
func (c *Client) Exec(ctx context.Context, req ExecRequest, stdio ExecIO) (ExitStatus, error) {
	p, err := c.Start(ctx, req, stdio)
	if err != nil {
		return ExitStatus{}, err
	}
	return p.Wait()
}

// Process is a guest process started by Start.
type Process struct {
	cl      *call
	done    chan struct{}
	status  ExitStatus
	err     error
	onceEOF sync.Once
}

// Start starts a process in the guest and returns once it is running (or
// could not be started: a missing program is ErrNotFound). Stdin is copied
// in the background until EOF, which closes the process's stdin; Wait does
// not wait for that copy, since a terminal's stdin never ends. Cancelling
// ctx kills the process.
func (c *Client) Start(ctx context.Context, req ExecRequest, stdio ExecIO) (*Process, error) {
	if len(req.Argv) == 0 {
		return nil, fmt.Errorf("agent exec: empty argv: %w", errdefs.ErrInvalidArgument)
	}
	cl, err := c.open(ctx, request{Op: opExec, Exec: &req})
	if err != nil {
		return nil, err
	}
	op := "exec " + req.Argv[0]
	// The process runs as long as it likes, but whether it started is
	// known at once: an agent that does not say is stalled, and the
	// caller (which cannot cancel a process it has no handle for) would
	// wait for it forever.
	_ = cl.st.SetReadDeadline(time.Now().Add(StartTimeout))
	if err := readJSON(cl.st, fResponse, nil); err != nil {
		cl.close()
		if errors.Is(err, yamux.ErrTimeout) && cl.ctx.Err() == nil {
			return nil, fmt.Errorf("agent %s: the agent did not start the process within %v (the guest is stalled or overloaded): %w", op, StartTimeout, errdefs.ErrUnavailable)
		}
		return nil, cl.wrap(op, err)
	}
	_ = cl.st.SetReadDeadline(time.Time{})
	p := &Process{cl: cl, done: make(chan struct{})}
	stdout, stderr := orDiscard(stdio.Stdout), orDiscard(stdio.Stderr)
	go p.readLoop(op, stdout, stderr)
	go p.pumpStdin(stdio.Stdin)
	return p, nil
}

func orDiscard(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}

func (p *Process) readLoop(op string, stdout, stderr io.Writer) {
	defer close(p.done)
	defer p.cl.close()
	for {
		t, data, err := readFrame(p.cl.st)
		if err != nil {
			p.err = p.cl.wrap(op, err)
			return
		}
		switch t {
		case fStdout:
			_, err = stdout.Write(data)
		case fStderr:
			_, err = stderr.Write(data)
		default:
			err = decodeFrame(t, data, fExit, &p.status)
			if err == nil {
				return
			}
		}
		if err != nil {
			p.err = p.cl.wrap(op, err)
			return
		}
	}
}

func (p *Process) pumpStdin(r io.Reader) {
	if r != nil {
		_, _ = io.CopyBuffer(p.cl.fw.data(fStdin), r, make([]byte, chunkSize))
	}
	p.CloseStdin()
}

// CloseStdin closes the process's stdin now, before the Stdin reader ends.
func (p *Process) CloseStdin() {
	p.onceEOF.Do(func() { _ = p.cl.fw.write(fStdinEOF, nil) })
}

// Resize changes the terminal size of a TTY process.
func (p *Process) Resize(rows, cols uint16) error {
	return p.control(fResize, winSize{Rows: rows, Cols: cols})
}

// Signal sends sig to the process's process group.
func (p *Process) Signal(sig syscall.Signal) error {
	return p.control(fSignal, signalMsg{Signal: int(sig)})
}

func (p *Process) control(t byte, v any) error {
	select {
	case <-p.done:
		return fmt.Errorf("agent exec: process already finished")
	default:
	}
	return p.cl.fw.json(t, v)
}

// Wait waits for the process to end and for all its output to be written,
// and returns how it ended.
func (p *Process) Wait() (ExitStatus, error) {
	<-p.done
	return p.status, p.err
}

// Done is closed when Wait would return.
func (p *Process) Done() <-chan struct{} { return p.done }

// errClosed reports whether err means the session or stream is gone.
func errClosed(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, yamux.ErrSessionShutdown) || errors.Is(err, yamux.ErrStreamClosed) ||
		errors.Is(err, net.ErrClosed) || errors.Is(err, yamux.ErrConnectionReset)
}
