// Package mcpserver is banger's Model Context Protocol server: it offers a
// coding agent throw-away sandboxes (microVMs) as MCP tools over stdio,
// built on the official Go SDK and talking to the daemon only through
// package client.
//
// Scope: a Server manages only the VMs it created, which carry the label
// LabelKey=<its instance id>; any other VM, by name or id, is refused as if
// it did not exist. It enforces Config.MaxVMs, the network mode and a
// time-to-live on every VM, and no tool reaches a host path outside the
// repository directories it was given (symbolic links resolved, ".."
// refused). When the client goes away (stdin closes) the Server deletes
// its VMs unless Config.Keep; the TTL, kept by the daemon, covers a server
// that is killed.
package mcpserver

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/client"
	"github.com/bangervm/banger/errdefs"
)

// LabelKey marks the VMs a server created; the value is its instance id.
const LabelKey = "banger.mcp"

// Config wires a Server.
type Config struct {
	Client *client.Client
	// Repos are the host directories the agent may ship as workspaces
	// and copy files from and to (see Roots); none means no host access.
	Repos []string
	// Net is every VM's network mode (none, public or full); empty is
	// the daemon's default (public, or none when networking is off).
	Net string
	// MaxVMs bounds how many VMs the server has at once.
	MaxVMs int
	// TTL is every VM's time-to-live, and the longest an agent may ask.
	TTL time.Duration
	// Keep leaves the VMs running when the client goes away.
	Keep bool
	// Image is the image of a sandbox when the agent names none; empty
	// is the daemon's default.
	Image string
	// Version is reported to the client.
	Version string
	Log     *slog.Logger
}

// Validate checks the limits (not the repositories: see NewRoots).
func (cfg Config) Validate() error {
	if cfg.MaxVMs < 1 {
		return fmt.Errorf("--max-vms %d: want at least 1: %w", cfg.MaxVMs, errdefs.ErrInvalidArgument)
	}
	if cfg.TTL < time.Second || cfg.TTL > api.MaxTTL {
		return fmt.Errorf("--ttl %v: want 1s to %v: %w", cfg.TTL, api.MaxTTL, errdefs.ErrInvalidArgument)
	}
	switch cfg.Net {
	case "", api.NetNone, api.NetPublic, api.NetFull:
	default:
		return fmt.Errorf("--net %q: want none, public or full: %w", cfg.Net, errdefs.ErrInvalidArgument)
	}
	return nil
}

// Server is one MCP server instance.
type Server struct {
	cfg   Config
	id    string
	roots *Roots
	mcp   *mcp.Server

	// mu guards creating, the creates under way, counted against MaxVMs.
	mu       sync.Mutex
	creating int
}

// New checks cfg and returns a server with its tools.
func New(cfg Config) (*Server, error) {
	if cfg.Client == nil {
		return nil, errors.New("mcpserver: no client")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	roots, err := NewRoots(cfg.Repos)
	if err != nil {
		return nil, err
	}
	b := make([]byte, 4)
	rand.Read(b)
	s := &Server{cfg: cfg, id: hex.EncodeToString(b), roots: roots}
	s.mcp = mcp.NewServer(&mcp.Implementation{Name: "banger", Title: "banger sandboxes", Version: cfg.Version}, &mcp.ServerOptions{
		Instructions: s.instructions(),
	})
	s.addTools()
	return s, nil
}

// ID is the instance id the server's VMs are labelled with.
func (s *Server) ID() string { return s.id }

func (s *Server) instructions() string {
	net := s.cfg.Net
	if net == "" {
		net = "the host's default"
	}
	repos := "none: sandboxes start empty and no host files can be read or written"
	if len(s.roots.dirs) > 0 {
		repos = fmt.Sprint(s.roots.dirs)
	}
	return fmt.Sprintf(`banger gives you disposable Linux sandboxes (microVMs with their own kernel). Typical flow: create_sandbox with a repo path (the repository is copied in at /root/repo, the working directory of run_command), run_command to build and test, write_file or run_command to edit, export_diff to get your changes back as a git patch, delete_sandbox when done. Nothing you do in a sandbox touches the host until the user applies the patch.
Limits: at most %d sandboxes at once; each is deleted after %v at the latest; network: %s; host paths allowed: %s. You can only see and use sandboxes created through this server.`, s.cfg.MaxVMs, s.cfg.TTL, net, repos)
}

// Run serves t until the client goes away or ctx ends, then deletes the
// server's VMs unless Config.Keep.
func (s *Server) Run(ctx context.Context, t mcp.Transport) error {
	s.cfg.Log.Info("mcp server start", "instance", s.id, "repos", s.roots.dirs, "max_vms", s.cfg.MaxVMs, "ttl", s.cfg.TTL, "net", s.cfg.Net)
	err := s.mcp.Run(ctx, t)
	if ctx.Err() != nil || errors.Is(err, context.Canceled) {
		err = nil
	}
	if !s.cfg.Keep {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
		defer cancel()
		err = errors.Join(err, s.Cleanup(cctx))
	}
	return err
}

// Cleanup deletes every VM carrying this server's label.
func (s *Server) Cleanup(ctx context.Context) error {
	vms, err := s.cfg.Client.VMsLabeled(ctx, s.selector())
	if err != nil {
		return fmt.Errorf("list sandboxes to delete: %w", err)
	}
	var errs []error
	for _, v := range vms {
		if err := s.cfg.Client.DeleteVM(ctx, v.ID, true); err != nil && !errdefs.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete sandbox %s: %w", v.Name, err))
			continue
		}
		s.cfg.Log.Info("sandbox deleted: client went away", "vm", v.ID, "name", v.Name)
	}
	return errors.Join(errs...)
}

func (s *Server) selector() map[string]string { return map[string]string{LabelKey: s.id} }

// owned returns the VM ref names if this server created it. Any other VM
// gets the same answer as a missing one, so the agent learns nothing of
// the user's other VMs.
func (s *Server) owned(ctx context.Context, ref string) (api.VM, error) {
	if ref == "" {
		return api.VM{}, fmt.Errorf("no sandbox given: pass the name create_sandbox returned (see list_sandboxes): %w", errdefs.ErrInvalidArgument)
	}
	v, err := s.cfg.Client.VM(ctx, ref)
	if err == nil && v.Labels[LabelKey] == s.id {
		return v, nil
	}
	if err != nil && !errdefs.IsNotFound(err) && !errdefs.IsInvalidArgument(err) {
		return api.VM{}, err
	}
	return api.VM{}, fmt.Errorf("no sandbox %q among those this server created: use list_sandboxes (other VMs on this host are not reachable from here): %w", ref, errdefs.ErrNotFound)
}

// reserve counts a create against MaxVMs; release undoes it.
func (s *Server) reserve(ctx context.Context) (release func(), err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	vms, err := s.cfg.Client.VMsLabeled(ctx, s.selector())
	if err != nil {
		return nil, err
	}
	if n := len(vms) + s.creating; n >= s.cfg.MaxVMs {
		return nil, fmt.Errorf("this server already has %d sandboxes, its limit (--max-vms %d): delete one with delete_sandbox first: %w", n, s.cfg.MaxVMs, errdefs.ErrFailedPrecondition)
	}
	s.creating++
	return func() {
		s.mu.Lock()
		s.creating--
		s.mu.Unlock()
	}, nil
}
