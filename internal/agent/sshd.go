package agent

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"

	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/agentproto"
)

// The agent's SSH server lets `ssh root@<vm>.vm` (and scp, sftp, ssh -L)
// work in images without OpenSSH. It runs sessions through the Handler's
// user lookup, environment and waiter, like exec over the agent channel.

const (
	// imageSSHD is the image's own OpenSSH server; when the image's own
	// init runs (and so starts it) the agent serves no SSH, and installs
	// the VM's host key and banger's key for it instead (imagesshd.go).
	imageSSHD = "usr/sbin/sshd"
	// sshMaxConns bounds concurrent connections; more are closed at once.
	sshMaxConns = 64
	// sshMaxChannels bounds the open channels of one connection.
	sshMaxChannels = 64
	// sshHandshakeTimeout bounds a connection's key exchange and auth.
	sshHandshakeTimeout = 30 * time.Second
	// sshDialTimeout bounds dialing the target of a direct-tcpip channel.
	sshDialTimeout = 10 * time.Second
)

// startSSH serves SSH in the background as cfg asks, unless cfg is nil or
// the image runs its own init (ownInit) and has its own sshd, which that
// init starts. An image without an init never starts its sshd, so the
// agent serves then even if one is installed. It never fails the boot:
// problems are logged.
func startSSH(ctx context.Context, log *slog.Logger, cfg *agentproto.SSHConfig, h *Handler, ownInit bool) {
	if cfg == nil {
		return
	}
	log = log.With("op", "ssh")
	if ownInit && imageHasSSHD("/") {
		log.Info("image has its own sshd; the agent serves no SSH", "sshd", "/"+imageSSHD)
		return
	}
	s, err := newSSHServer(log, *cfg, h)
	if err != nil {
		log.Error("ssh server", "err", err)
		return
	}
	ln, err := net.Listen("tcp", net.JoinHostPort("0.0.0.0", strconv.Itoa(sshPort(*cfg))))
	if err != nil {
		log.Error("ssh server", "err", err)
		return
	}
	log.Info("serving ssh", "addr", ln.Addr().String())
	go func() {
		if err := s.serve(ctx, ln); err != nil {
			log.Error("ssh server stopped", "err", err)
		}
	}()
}

// imageHasSSHD reports whether the image rooted at root has OpenSSH's sshd.
func imageHasSSHD(root string) bool {
	fi, err := os.Stat(filepath.Join(root, imageSSHD))
	return err == nil && !fi.IsDir()
}

func sshPort(cfg agentproto.SSHConfig) int {
	if cfg.Port == 0 {
		return agentproto.DefaultSSHPort
	}
	return cfg.Port
}

// sshServer serves SSH connections: public-key auth as root only,
// sessions (shell, exec, sftp, with or without a terminal) and local
// port forwarding.
type sshServer struct {
	log   *slog.Logger
	h     *Handler
	cfg   *ssh.ServerConfig
	conns chan struct{} // semaphore, sshMaxConns
}

// newSSHServer checks cfg and returns a server for it; h runs the
// sessions and resolves root's home and shell from its EtcDir.
func newSSHServer(log *slog.Logger, cfg agentproto.SSHConfig, h *Handler) (*sshServer, error) {
	if cfg.Port < 0 || cfg.Port > 65535 {
		return nil, fmt.Errorf("ssh port %d: %w", cfg.Port, errdefs.ErrInvalidArgument)
	}
	signer, err := ssh.ParsePrivateKey([]byte(cfg.HostKey))
	if err != nil {
		return nil, fmt.Errorf("ssh host key: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	keys, err := parseAuthorizedKeys(cfg.AuthorizedKeys)
	if err != nil {
		return nil, err
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("ssh: no authorized keys: %w", errdefs.ErrInvalidArgument)
	}
	sc := &ssh.ServerConfig{
		PublicKeyCallback: func(c ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			if c.User() != "root" {
				return nil, fmt.Errorf("user %q: only root may log in", c.User())
			}
			if !keys[string(key.Marshal())] {
				return nil, errors.New("key not authorized")
			}
			return &ssh.Permissions{Extensions: map[string]string{"key": ssh.FingerprintSHA256(key)}}, nil
		},
		BannerCallback: func(c ssh.ConnMetadata) string {
			if c.User() != "root" {
				return fmt.Sprintf("banger: only root may log in here, not %q (ssh root@...)\n", c.User())
			}
			return ""
		},
		MaxAuthTries:  6,
		ServerVersion: "SSH-2.0-banger",
	}
	sc.AddHostKey(signer)
	return &sshServer{log: log, h: h, cfg: sc, conns: make(chan struct{}, sshMaxConns)}, nil
}

// parseAuthorizedKeys returns the set of keys (by wire encoding) in lines,
// each of which may hold several authorized_keys lines.
func parseAuthorizedKeys(lines []string) (map[string]bool, error) {
	keys := map[string]bool{}
	for _, l := range lines {
		rest := []byte(l)
		for len(bytes.TrimSpace(rest)) > 0 {
			key, _, opts, r, err := ssh.ParseAuthorizedKey(rest)
			if err != nil {
				if len(bytes.TrimSpace(stripComments(rest))) == 0 {
					break // only comments left
				}
				return nil, fmt.Errorf("ssh authorized key %q: %v: %w", l, err, errdefs.ErrInvalidArgument)
			}
			if len(opts) > 0 {
				// Honouring none of them would grant more than they say.
				return nil, fmt.Errorf("ssh authorized key %q: options (%s) are not supported: %w", l, strings.Join(opts, ","), errdefs.ErrInvalidArgument)
			}
			keys[string(key.Marshal())] = true
			rest = r
		}
	}
	return keys, nil
}

func stripComments(b []byte) []byte {
	var out []byte
	for _, l := range bytes.Split(b, []byte("\n")) {
		if t := bytes.TrimSpace(l); len(t) > 0 && t[0] != '#' {
			out = append(out, t...)
		}
	}
	return out
}

// serve accepts connections on ln until ctx is done or ln fails; it
// closes ln.
func (s *sshServer) serve(ctx context.Context, ln net.Listener) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	defer ln.Close()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				time.Sleep(100 * time.Millisecond)
				continue
			}
			return err
		}
		select {
		case s.conns <- struct{}{}:
		default:
			s.log.Warn("ssh: too many connections; closing", "remote", c.RemoteAddr().String(), "max", sshMaxConns)
			c.Close()
			continue
		}
		go func() {
			defer func() { <-s.conns }()
			s.serveConn(c)
		}()
	}
}

func (s *sshServer) serveConn(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(sshHandshakeTimeout))
	sc, chans, reqs, err := ssh.NewServerConn(c, s.cfg)
	if err != nil {
		s.log.Debug("ssh handshake", "remote", c.RemoteAddr().String(), "err", err)
		return
	}
	_ = c.SetDeadline(time.Time{})
	defer sc.Close()
	log := s.log.With("remote", c.RemoteAddr().String())
	log.Info("ssh login", "user", sc.User(), "key", sc.Permissions.Extensions["key"])
	go ssh.DiscardRequests(reqs) // tcpip-forward (ssh -R) is not offered
	var open sync.WaitGroup
	defer open.Wait()
	// Ends forwarded connections when the SSH connection ends.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n := make(chan struct{}, sshMaxChannels)
	for nc := range chans {
		select {
		case n <- struct{}{}:
		default:
			_ = nc.Reject(ssh.ResourceShortage, "too many channels")
			continue
		}
		open.Add(1)
		go func() {
			defer func() { <-n; open.Done() }()
			switch nc.ChannelType() {
			case "session":
				s.session(log, sc, nc)
			case "direct-tcpip":
				directTCPIP(ctx, log, nc)
			default:
				_ = nc.Reject(ssh.UnknownChannelType, "unsupported channel type")
			}
		}()
	}
}

// directTCPIP serves ssh -L: it dials the target from the guest and pipes.
func directTCPIP(ctx context.Context, log *slog.Logger, nc ssh.NewChannel) {
	var p struct {
		Host     string
		Port     uint32
		OrigHost string
		OrigPort uint32
	}
	if err := ssh.Unmarshal(nc.ExtraData(), &p); err != nil || p.Port > 65535 {
		_ = nc.Reject(ssh.ConnectionFailed, "bad direct-tcpip request")
		return
	}
	addr := net.JoinHostPort(p.Host, strconv.Itoa(int(p.Port)))
	dctx, cancel := context.WithTimeout(ctx, sshDialTimeout)
	tc, err := (&net.Dialer{}).DialContext(dctx, "tcp", addr)
	cancel()
	if err != nil {
		_ = nc.Reject(ssh.ConnectionFailed, err.Error())
		return
	}
	defer tc.Close()
	defer context.AfterFunc(ctx, func() { tc.Close() })()
	ch, reqs, err := nc.Accept()
	if err != nil {
		return
	}
	defer ch.Close()
	go ssh.DiscardRequests(reqs)
	log.Debug("ssh forward", "target", addr)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		_, _ = io.Copy(tc, ch)
		_ = tc.(*net.TCPConn).CloseWrite()
	}()
	go func() {
		defer wg.Done()
		_, _ = io.Copy(ch, tc)
		_ = ch.CloseWrite()
	}()
	wg.Wait()
}

// sshSession is one "session" channel: requests set it up until a shell,
// exec or subsystem request starts it, which only one may do.
type sshSession struct {
	s    *sshServer
	log  *slog.Logger
	conn *ssh.ServerConn
	ch   ssh.Channel
	env  []string
	term string // from pty-req; empty without a terminal
	rows uint16
	cols uint16

	mu      sync.Mutex
	started bool
	proc    *process // the running program; nil before, after, and for sftp
}

func (s *sshServer) session(log *slog.Logger, conn *ssh.ServerConn, nc ssh.NewChannel) {
	ch, reqs, err := nc.Accept()
	if err != nil {
		return
	}
	ss := &sshSession{s: s, log: log, conn: conn, ch: ch}
	for req := range reqs {
		ok := ss.request(req)
		if req.WantReply {
			_ = req.Reply(ok, nil)
		}
	}
	// The client closed the channel or went away: hang up what still runs
	// and close its output, as sshd does, so that it cannot block writing.
	ss.mu.Lock()
	if p := ss.proc; p != nil {
		_ = p.Signal(syscall.SIGHUP)
		for _, f := range p.outs {
			f.Close()
		}
	}
	ss.mu.Unlock()
	ch.Close()
}

func (ss *sshSession) request(req *ssh.Request) bool {
	switch req.Type {
	case "pty-req":
		var p struct {
			Term                 string
			Cols, Rows, Wpx, Hpx uint32
			Modes                string
		}
		if ss.isStarted() || ssh.Unmarshal(req.Payload, &p) != nil {
			return false
		}
		ss.term, ss.cols, ss.rows = p.Term, clampDim(p.Cols), clampDim(p.Rows)
		if ss.term == "" {
			ss.term = "xterm-256color"
		}
		return true
	case "window-change":
		var p struct{ Cols, Rows, Wpx, Hpx uint32 }
		if ssh.Unmarshal(req.Payload, &p) != nil {
			return false
		}
		ss.mu.Lock()
		defer ss.mu.Unlock()
		if ss.proc == nil || ss.proc.pty == nil {
			return false
		}
		return ss.proc.Resize(clampDim(p.Rows), clampDim(p.Cols)) == nil
	case "env":
		var p struct{ Name, Value string }
		if ss.isStarted() || ssh.Unmarshal(req.Payload, &p) != nil || p.Name == "" {
			return false
		}
		ss.env = append(ss.env, p.Name+"="+p.Value)
		return true
	case "signal":
		var p struct{ Signal string }
		if ssh.Unmarshal(req.Payload, &p) != nil {
			return false
		}
		sig, ok := sshSignals[p.Signal]
		ss.mu.Lock()
		defer ss.mu.Unlock()
		return ok && ss.proc != nil && ss.proc.Signal(sig) == nil
	case "shell", "exec", "subsystem":
		ss.mu.Lock()
		defer ss.mu.Unlock()
		if ss.started {
			return false
		}
		var arg string
		if req.Type != "shell" {
			var p struct{ Arg string }
			if ssh.Unmarshal(req.Payload, &p) != nil {
				return false
			}
			arg = p.Arg
		}
		if err := ss.start(req.Type, arg); err != nil {
			ss.log.Warn("ssh session", "type", req.Type, "err", err)
			return false
		}
		ss.started = true
		return true
	}
	return false // x11-req, auth-agent-req@openssh.com, ...
}

func (ss *sshSession) isStarted() bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.started
}

func clampDim(v uint32) uint16 {
	return uint16(min(v, 0xffff))
}

// sshUser is root as the guest's /etc/passwd describes it.
type sshUser struct {
	user
	shell string
}

func (ss *sshSession) root() sshUser {
	u := sshUser{user: user{name: "root", home: "/root"}, shell: "/bin/sh"}
	if pw, ok := findPasswd(ss.s.h.etc("passwd"), "0"); ok {
		u.name = pw[0]
		if pw[5] != "" {
			u.home = pw[5]
		}
		if executable(pw[6]) == nil {
			u.shell = pw[6]
		}
	}
	return u
}

// start runs the session's program; ss.mu is held.
func (ss *sshSession) start(kind, arg string) error {
	u := ss.root()
	dir := u.home
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		dir = "/"
	}
	if kind == "subsystem" {
		if arg != "sftp" {
			return fmt.Errorf("subsystem %q: %w", arg, errdefs.ErrNotFound)
		}
		srv, err := sftp.NewServer(ss.ch, sftp.WithServerWorkingDirectory(dir))
		if err != nil {
			return err
		}
		go func() {
			err := srv.Serve()
			if err != nil {
				ss.log.Debug("sftp", "err", err)
			}
			ss.finish(agentproto.ExitStatus{})
		}()
		ss.log.Info("ssh sftp")
		return nil
	}

	tty := ss.term != ""
	over := []string{"SHELL=" + u.shell, "LOGNAME=" + u.name}
	if tty {
		over = append(over, "TERM="+ss.term)
	}
	if la, ra := ss.conn.LocalAddr(), ss.conn.RemoteAddr(); la != nil && ra != nil {
		rh, rp, _ := net.SplitHostPort(ra.String())
		lh, lp, _ := net.SplitHostPort(la.String())
		over = append(over, fmt.Sprintf("SSH_CONNECTION=%s %s %s %s", rh, rp, lh, lp))
	}
	env := mergeEnv(mergeEnv(ss.s.h.defaultEnv(u.user, tty), over), ss.env)
	cmd := &exec.Cmd{Path: u.shell, Args: []string{"-" + filepath.Base(u.shell)}, Env: env, Dir: dir, SysProcAttr: &syscall.SysProcAttr{}}
	if kind == "exec" {
		cmd.Path, cmd.Args = "/bin/sh", []string{"sh", "-c", arg}
		if executable(cmd.Path) != nil {
			cmd.Path, cmd.Args[0] = u.shell, filepath.Base(u.shell)
		}
	}
	p := &process{}
	var err error
	if tty {
		err = p.startTTY(ss.s.h.waiter, cmd, ss.rows, ss.cols, ss.ch)
	} else {
		err = p.startPipes(ss.s.h.waiter, cmd, ss.ch, ss.ch.Stderr())
	}
	if err != nil {
		return fmt.Errorf("start %s: %w", cmd.Path, startError(err))
	}
	ss.proc = p
	ss.log.Info("ssh session", "type", kind, "pid", p.pid, "tty", tty)
	go func() {
		_, _ = io.Copy(p.Stdin(), ss.ch)
		_ = p.Stdin().Close() // end of file (^D on a terminal)
	}()
	go func() {
		st, _ := p.Wait()
		ss.mu.Lock()
		ss.proc = nil
		ss.mu.Unlock()
		ss.finish(st)
	}()
	return nil
}

// finish reports how the program ended and closes the channel.
func (ss *sshSession) finish(st agentproto.ExitStatus) {
	_ = ss.ch.CloseWrite()
	if name := sshSignalName(syscall.Signal(st.Signal)); st.Signal != 0 && name != "" {
		_, _ = ss.ch.SendRequest("exit-signal", false, ssh.Marshal(struct {
			Signal     string
			CoreDumped bool
			Msg, Lang  string
		}{Signal: name}))
	} else {
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], uint32(st.Code))
		_, _ = ss.ch.SendRequest("exit-status", false, b[:])
	}
	_ = ss.ch.Close()
}

// sshSignals are the signal names of RFC 4254 section 6.10.
var sshSignals = map[string]syscall.Signal{
	"ABRT": syscall.SIGABRT, "ALRM": syscall.SIGALRM, "FPE": syscall.SIGFPE,
	"HUP": syscall.SIGHUP, "ILL": syscall.SIGILL, "INT": syscall.SIGINT,
	"KILL": syscall.SIGKILL, "PIPE": syscall.SIGPIPE, "QUIT": syscall.SIGQUIT,
	"SEGV": syscall.SIGSEGV, "TERM": syscall.SIGTERM, "USR1": syscall.SIGUSR1,
	"USR2": syscall.SIGUSR2,
}

func sshSignalName(sig syscall.Signal) string {
	for n, s := range sshSignals {
		if s == sig {
			return n
		}
	}
	return ""
}
