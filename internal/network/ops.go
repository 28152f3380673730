package network

import (
	"context"
	"net/netip"
	"os"
)

// Ops are the host operations that need root. Local runs them in this
// process (a daemon running as root); the root helper runs them for an
// unprivileged daemon, behind the same validation.
type Ops interface {
	EnsureBridge(ctx context.Context, name string, gateway netip.Prefix) error
	// EnsureForwarding turns IPv4 forwarding on, with the FORWARD policy
	// DROP when banger turns it on (see the function EnsureForwarding);
	// ours says bangerd turned it on earlier in this boot.
	EnsureForwarding(ctx context.Context, ours bool) (Forwarding, error)
	EnsureFirewall(ctx context.Context, fw Firewall) error
	// CreateTap creates the VM's tap on bridge, owned by uid. It returns
	// an open file for the tap when the caller may not be able to open it
	// itself (/dev/net/tun is root-only on some hosts), else nil.
	CreateTap(ctx context.Context, tap, bridge string, uid int) (*os.File, error)
	DeleteTap(ctx context.Context, tap string) error
	ApplyVMRules(ctx context.Context, fw Firewall, vm VMRules) error
	RemoveVMRules(ctx context.Context, fw Firewall, vm VMRules) error
	// RouteDNS has systemd-resolved send the host's queries for .vm names
	// to server through bridge; without systemd-resolved it does nothing
	// and says why (see the function RouteDNS).
	RouteDNS(ctx context.Context, bridge string, server netip.AddrPort) (DNSRoute, error)
	// UnrouteDNS reverts what RouteDNS did.
	UnrouteDNS(ctx context.Context, bridge string) error
}

// Local runs Ops in the calling process, which must be root.
type Local struct{}

var _ Ops = Local{}

// EnsureBridge implements Ops.
func (Local) EnsureBridge(ctx context.Context, name string, gw netip.Prefix) error {
	return EnsureBridge(ctx, name, gw)
}

// EnsureForwarding implements Ops.
func (Local) EnsureForwarding(ctx context.Context, ours bool) (Forwarding, error) {
	return EnsureForwarding(ctx, ours)
}

// EnsureFirewall implements Ops.
func (Local) EnsureFirewall(ctx context.Context, fw Firewall) error { return fw.Ensure(ctx) }

// CreateTap implements Ops; a root caller opens the tap by name itself.
func (Local) CreateTap(ctx context.Context, tap, bridge string, uid int) (*os.File, error) {
	return nil, CreateTap(ctx, tap, bridge, uid)
}

// DeleteTap implements Ops.
func (Local) DeleteTap(ctx context.Context, tap string) error { return DeleteTap(ctx, tap) }

// ApplyVMRules implements Ops.
func (Local) ApplyVMRules(ctx context.Context, fw Firewall, vm VMRules) error {
	return fw.ApplyVMRules(ctx, vm)
}

// RemoveVMRules implements Ops.
func (Local) RemoveVMRules(ctx context.Context, fw Firewall, vm VMRules) error {
	return fw.RemoveVMRules(ctx, vm)
}

// RouteDNS implements Ops.
func (Local) RouteDNS(ctx context.Context, bridge string, server netip.AddrPort) (DNSRoute, error) {
	return RouteDNS(ctx, bridge, server)
}

// UnrouteDNS implements Ops.
func (Local) UnrouteDNS(ctx context.Context, bridge string) error { return UnrouteDNS(ctx, bridge) }
