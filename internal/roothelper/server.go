package roothelper

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/network"
	"github.com/bangervm/banger/internal/safesocket"
)

// opTimeout bounds one operation; they run a few ip/iptables commands.
const opTimeout = 2 * time.Minute

// ServerConfig configures Serve.
type ServerConfig struct {
	// Owner is the uid allowed to call besides root (the user bangerd
	// runs as). A negative Owner allows root only.
	Owner int
	// Ops performs validated requests; nil means network.Local{}.
	Ops network.Ops
	// AllowedSubnets are the ranges every subnet in a request must lie
	// in; nil means network.DefaultRanges().
	AllowedSubnets []netip.Prefix
	// Jailer allows launchJailer; nil refuses it.
	Jailer *JailerPolicy
	// Log receives a line per operation and per refusal; nil discards.
	Log *slog.Logger
	// Setup, when set, is the file (network.UpdateSetup) where the helper
	// records every bridge (with its subnet) and the forwarding it set up,
	// for `system uninstall` to undo without the daemon.
	Setup string
}

type server struct {
	owner   int
	ops     network.Ops
	allowed []netip.Prefix
	jail    *JailerPolicy
	log     *slog.Logger
	setup   string
	mu      sync.Mutex // serializes operations across connections
}

// Serve accepts connections on ln until ctx is done, then closes ln and
// every connection, waits for operations in progress (they are not
// cancelled, so none is left half done) and returns nil. It returns an
// error if accepting fails otherwise.
//
// Each connection's peer is authenticated once with SO_PEERCRED: a peer
// other than root or cfg.Owner gets a PermissionDenied reply and is
// disconnected. Requests on a connection are answered in order.
func Serve(ctx context.Context, ln *net.UnixListener, cfg ServerConfig) error {
	s := &server{owner: cfg.Owner, ops: cfg.Ops, allowed: cfg.AllowedSubnets, jail: cfg.Jailer, log: cfg.Log, setup: cfg.Setup}
	if s.allowed == nil {
		s.allowed = network.DefaultRanges()
	}
	if s.ops == nil {
		s.ops = network.Local{}
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	var wg sync.WaitGroup
	defer wg.Wait() // after cancel, which closes the connections
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	for {
		conn, err := ln.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, unix.EMFILE) || errors.Is(err, unix.ENFILE) {
				s.log.Warn("accept", "err", err)
				time.Sleep(100 * time.Millisecond)
				continue
			}
			return fmt.Errorf("root helper accept: %w", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.serveConn(ctx, conn)
		}()
	}
}

func (s *server) serveConn(ctx context.Context, conn *net.UnixConn) {
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	cred, err := safesocket.PeerCred(conn)
	if err != nil {
		s.log.Warn("peer credentials", "err", err)
		return
	}
	uid := int(cred.Uid)
	log := s.log.With("uid", uid, "pid", cred.Pid)
	if !safesocket.Allowed(cred.Uid, s.owner) {
		log.Warn("refused peer")
		err := fmt.Errorf("root helper: uid %d may not call: %w", uid, errdefs.ErrPermissionDenied)
		writeMsg(conn, errResponse(err), nil)
		return
	}
	for {
		var req request
		files, err := readMsg(conn, &req)
		closeFiles := func() {
			for _, f := range files {
				f.Close()
			}
		}
		if err != nil {
			closeFiles()
			if !errors.Is(err, io.EOF) && ctx.Err() == nil {
				log.Warn("read request", "err", err)
				err = fmt.Errorf("root helper: %w: %w", err, errdefs.ErrInvalidArgument)
				writeMsg(conn, errResponse(err), nil)
			}
			return
		}
		// Only launchJailer takes descriptors: the console log, then
		// its jail files.
		var in []*os.File
		if req.Op == OpLaunchJailer && len(files) == 1+len(req.JailFiles) {
			in = files
		} else if len(files) > 0 || req.Op == OpLaunchJailer {
			closeFiles()
			err := fmt.Errorf("refused %s: %d descriptors sent with the request: %w", req.Op, len(files), errdefs.ErrInvalidArgument)
			writeMsg(conn, errResponse(err), nil)
			return
		}
		resp, f := s.handle(ctx, log, uid, &req, in)
		closeFiles()
		err = writeMsg(conn, resp, f)
		if f != nil {
			f.Close()
		}
		if err != nil {
			log.Warn("write reply", "op", req.Op, "err", err)
			return
		}
	}
}

// handle validates and runs one request from a peer with uid peerUID. The
// returned file, if any, goes with the reply and is closed by the caller;
// in are the descriptors that came with the request.
func (s *server) handle(ctx context.Context, log *slog.Logger, peerUID int, req *request, in []*os.File) (response, *os.File) {
	if err := validate(req, peerUID, s.allowed, s.jail); err != nil {
		log.Warn("refused request", "op", req.Op, "err", err)
		return errResponse(err), nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// A request that started runs to the end even if the helper is
	// stopping or the client went away.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), opTimeout)
	defer cancel()
	var (
		resp response
		f    *os.File
		err  error
	)
	switch req.Op {
	case OpEnsureBridge:
		err = s.ops.EnsureBridge(ctx, req.Bridge, req.Gateway)
	case OpEnsureForwarding:
		var st network.Forwarding
		st, err = s.ops.EnsureForwarding(ctx, req.Ours)
		resp.WasOn, resp.PolicyDrop = st.WasOn, st.PolicyDrop
	case OpEnsureFirewall:
		err = s.ops.EnsureFirewall(ctx, req.Firewall.network())
	case OpCreateTap:
		f, err = s.ops.CreateTap(ctx, req.Tap, req.Bridge, req.UID)
		if err == nil && f == nil {
			f, err = OpenTap(req.Tap)
		}
	case OpDeleteTap:
		err = s.ops.DeleteTap(ctx, req.Tap)
	case OpApplyVMRules:
		err = s.ops.ApplyVMRules(ctx, req.Firewall.network(), req.VM.network())
	case OpRemoveVMRules:
		err = s.ops.RemoveVMRules(ctx, req.Firewall.network(), req.VM.network())
	case OpRouteDNS:
		var r network.DNSRoute
		r, err = s.ops.RouteDNS(ctx, req.Bridge, req.Server)
		resp.Routed, resp.Reason = r.Routed, r.Reason
	case OpUnrouteDNS:
		err = s.ops.UnrouteDNS(ctx, req.Bridge)
	case OpLaunchJailer:
		resp.PID, f, err = launchJailer(req.Jailer, req.JailFiles, s.jail, in, log)
		if err == nil {
			log = log.With("jail", req.Jailer.ID, "pid", resp.PID)
		}
	case OpRemoveJail:
		err = removeJail(req.Jailer, s.jail)
		log = log.With("jail", req.Jailer.ID)
	case OpSealTemplate:
		err = sealTemplate(req.Jailer, s.jail)
		log = log.With("jail", req.Jailer.ID)
	case OpKillJailer:
		err = killJailer(s.jail, req.PID)
		log = log.With("pid", req.PID)
	}
	if err != nil {
		if f != nil {
			f.Close()
		}
		log.Warn("operation", "op", req.Op, "tap", req.Tap, "err", err)
		return errResponse(err), nil
	}
	s.record(log, req, resp)
	if req.Op == OpRouteDNS {
		log = log.With("server", req.Server.String(), "routed", resp.Routed, "reason", resp.Reason)
	}
	log.Info("operation", "op", req.Op, "tap", req.Tap, "bridge", req.Bridge)
	resp.FD = f != nil
	return resp, f
}

// record notes in the set-up file what a successful req set up on the
// host. A failure to record is logged, not returned: the operation itself
// succeeded, and only a daemon-less uninstall would miss it.
func (s *server) record(log *slog.Logger, req *request, resp response) {
	var fn func(*network.Setup)
	switch req.Op {
	case OpEnsureBridge:
		fn = func(st *network.Setup) { st.AddBridge(req.Bridge, req.Gateway.Masked()) }
	case OpEnsureFirewall:
		fn = func(st *network.Setup) { st.AddBridge(req.Firewall.Bridge, req.Firewall.Subnet) }
	case OpEnsureForwarding:
		// PolicyDrop: banger turned forwarding on, now or (the
		// daemon's record says) earlier in this boot.
		if !resp.PolicyDrop {
			return
		}
		fn = func(st *network.Setup) { st.Forwarding = true }
	}
	if fn == nil || s.setup == "" {
		return
	}
	if err := network.UpdateSetup(s.setup, fn); err != nil {
		log.Warn("record the network set-up; system uninstall will need the daemon to undo it", "err", err)
	}
}

// errResponse is the reply carrying err, its class kept.
func errResponse(err error) response {
	return response{Error: err.Error(), Class: errdefs.Code(err)}
}
