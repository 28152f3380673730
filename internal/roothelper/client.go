package roothelper

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"time"

	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/network"
	"github.com/bangervm/banger/internal/safesocket"
)

// Client performs network.Ops through the root helper listening on a unix
// socket. Each call opens its own connection, so a Client is safe for
// concurrent use and survives a restart of the helper. The zero Client uses
// DefaultSocket.
//
// Errors keep their class across the socket (errdefs.IsPermissionDenied on
// a refused request); a helper that cannot be reached is
// errdefs.ErrUnavailable, a cancelled ctx errdefs.ErrCanceled. Cancelling
// ctx abandons the wait, not the operation: one the helper has started
// runs to its end.
type Client struct {
	path string
}

var _ network.Ops = (*Client)(nil)

// New returns a Client for the helper at path ("" for DefaultSocket). It
// does not connect.
func New(path string) *Client {
	return &Client{path: path}
}

// Path is the socket the client connects to.
func (c *Client) Path() string {
	if c == nil || c.path == "" {
		return DefaultSocket
	}
	return c.path
}

// call sends req and returns the reply and the descriptor that came with
// it, if any.
func (c *Client) call(ctx context.Context, req *request) (response, *os.File, error) {
	return c.callWith(ctx, req)
}

// callWith is call with the descriptors of in sent along with the
// request.
func (c *Client) callWith(ctx context.Context, req *request, in ...*os.File) (response, *os.File, error) {
	path := c.Path()
	uc, err := safesocket.DialRoot(ctx, path)
	if err != nil {
		if errdefs.Class(err) != nil {
			return response{}, nil, fmt.Errorf("root helper %s: %w", req.Op, err)
		}
		if ctx.Err() != nil {
			return response{}, nil, fmt.Errorf("root helper %s: %w: %w", req.Op, ctx.Err(), errdefs.ErrCanceled)
		}
		return response{}, nil, fmt.Errorf("root helper %s: %w: %w", req.Op, err, errdefs.ErrUnavailable)
	}
	defer uc.Close()
	stop := context.AfterFunc(ctx, func() { uc.SetDeadline(time.Now()) })
	defer stop()

	werr := writeMsg(uc, req, in...)
	var resp response
	files, rerr := readMsg(uc, &resp)
	if rerr != nil {
		// A refused peer gets its reply before the request is read, so a
		// failed write may still have an answer to read.
		if werr != nil {
			rerr = werr
		}
		if ctx.Err() != nil {
			return response{}, nil, fmt.Errorf("root helper %s: %w: %w", req.Op, ctx.Err(), errdefs.ErrCanceled)
		}
		return response{}, nil, fmt.Errorf("root helper %s: %w: %w", req.Op, rerr, errdefs.ErrUnavailable)
	}
	if resp.Error != "" {
		for _, f := range files {
			f.Close()
		}
		return resp, nil, errdefs.FromCode(resp.Class, "root helper: "+resp.Error)
	}
	if len(files) > 1 || resp.FD != (len(files) == 1) {
		for _, f := range files {
			f.Close()
		}
		return response{}, nil, fmt.Errorf("root helper %s: reply with %d descriptors: %w", req.Op, len(files), errProtocol)
	}
	if len(files) == 1 {
		return resp, files[0], nil
	}
	return resp, nil, nil
}

func (c *Client) do(ctx context.Context, req *request) error {
	_, _, err := c.call(ctx, req)
	return err
}

// EnsureBridge implements network.Ops.
func (c *Client) EnsureBridge(ctx context.Context, name string, gateway netip.Prefix) error {
	return c.do(ctx, &request{Op: OpEnsureBridge, Bridge: name, Gateway: gateway})
}

// EnsureForwarding implements network.Ops.
func (c *Client) EnsureForwarding(ctx context.Context, ours bool) (network.Forwarding, error) {
	resp, _, err := c.call(ctx, &request{Op: OpEnsureForwarding, Ours: ours})
	return network.Forwarding{WasOn: resp.WasOn, PolicyDrop: resp.PolicyDrop}, err
}

// EnsureFirewall implements network.Ops.
func (c *Client) EnsureFirewall(ctx context.Context, fw network.Firewall) error {
	return c.do(ctx, &request{Op: OpEnsureFirewall, Firewall: fromFirewall(fw)})
}

// CreateTap implements network.Ops. On success it always returns the tap
// open with TapFlags (see OpenTap), for the engine to use as
// -netdev tap,fd=N; the caller closes it once the engine has it.
func (c *Client) CreateTap(ctx context.Context, tap, bridge string, uid int) (*os.File, error) {
	_, f, err := c.call(ctx, &request{Op: OpCreateTap, Tap: tap, Bridge: bridge, UID: uid})
	if err != nil {
		return nil, err
	}
	if f == nil {
		return nil, fmt.Errorf("root helper %s: tap %s: no descriptor in reply: %w", OpCreateTap, tap, errProtocol)
	}
	return f, nil
}

// DeleteTap implements network.Ops.
func (c *Client) DeleteTap(ctx context.Context, tap string) error {
	return c.do(ctx, &request{Op: OpDeleteTap, Tap: tap})
}

// ApplyVMRules implements network.Ops.
func (c *Client) ApplyVMRules(ctx context.Context, fw network.Firewall, vm network.VMRules) error {
	return c.do(ctx, &request{Op: OpApplyVMRules, Firewall: fromFirewall(fw), VM: fromVMRules(vm)})
}

// RemoveVMRules implements network.Ops.
func (c *Client) RemoveVMRules(ctx context.Context, fw network.Firewall, vm network.VMRules) error {
	return c.do(ctx, &request{Op: OpRemoveVMRules, Firewall: fromFirewall(fw), VM: fromVMRules(vm)})
}

// RouteDNS implements network.Ops.
func (c *Client) RouteDNS(ctx context.Context, bridge string, server netip.AddrPort) (network.DNSRoute, error) {
	resp, _, err := c.call(ctx, &request{Op: OpRouteDNS, Bridge: bridge, Server: server})
	return network.DNSRoute{Routed: resp.Routed, Reason: resp.Reason}, err
}

// UnrouteDNS implements network.Ops.
func (c *Client) UnrouteDNS(ctx context.Context, bridge string) error {
	return c.do(ctx, &request{Op: OpUnrouteDNS, Bridge: bridge})
}
