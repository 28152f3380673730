package install

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/internal/network"
)

// SetupRecord is where the install's root helper records what it set up
// on the host's network (network.Setup), beside its socket.
func (p Paths) SetupRecord() string {
	return filepath.Join(filepath.Dir(p.HelperSocket), network.SetupFile)
}

// NetworkToUndo is what uninstall returns to before banger: the root
// helper's record of what it set up (every change to the host's network
// of an installed daemon goes through the helper; every bridge since the
// helper's record began), joined with what the daemon reported, when it
// answered (daemon may be nil: stopped, crashed or masked). The record
// wins for a bridge both name; the daemon's bridge is added when the
// record lacks it; forwarding is undone when either says banger turned it
// on.
func NetworkToUndo(p Paths, daemon *api.NetworkInfo) (network.Setup, error) {
	s, err := network.ReadSetup(p.SetupRecord())
	if err != nil {
		return s, err
	}
	if daemon == nil || daemon.Bridge == "" || daemon.Subnet == "" {
		return s, nil
	}
	if !s.HasBridge(daemon.Bridge) {
		subnet, err := netip.ParsePrefix(daemon.Subnet)
		if err != nil {
			return s, fmt.Errorf("subnet %q the daemon reported: %w", daemon.Subnet, err)
		}
		s.AddBridge(daemon.Bridge, subnet)
	}
	s.Forwarding = s.Forwarding || daemon.Enabled && !daemon.ForwardingWasOn
	return s, nil
}

// TeardownNetwork returns the host's network to what it was before
// banger, undoing s: for every bridge, systemd-resolved's settings for it
// reverted and the taps still attached to it removed (a VM whose engine
// uninstall stopped without the daemon leaves its persistent tap); then
// banger's iptables jumps and chains, its nftables table and the bridges
// removed; and, when banger turned IPv4 forwarding on, forwarding off and
// the FORWARD policy back to ACCEPT. Forwarding that was on before banger
// stays on. It must run as root, after the daemon and the helper stopped,
// in the host's network namespace.
func TeardownNetwork(ctx context.Context, s network.Setup) error {
	var errs []error
	for _, br := range s.Bridges {
		// The chains and the nftables table are banger's, whatever the
		// bridge: the first Teardown removes them, each one its bridge.
		errs = append(errs, network.UnrouteDNS(ctx, br.Name), network.DeleteTaps(ctx, br.Name),
			network.Firewall{Bridge: br.Name, Subnet: br.Subnet}.Teardown(ctx))
	}
	if s.Forwarding {
		errs = append(errs, network.RestoreForwarding(ctx))
	}
	return errors.Join(errs...)
}
