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
// of an installed daemon goes through the helper), joined with what the
// daemon reported, when it answered (daemon may be nil: stopped, crashed
// or masked). The record wins for the bridge; forwarding is undone when
// either says banger turned it on.
func NetworkToUndo(p Paths, daemon *api.NetworkInfo) (network.Setup, error) {
	s, err := network.ReadSetup(p.SetupRecord())
	if err != nil {
		return s, err
	}
	if daemon == nil || daemon.Bridge == "" || daemon.Subnet == "" {
		return s, nil
	}
	if s.Bridge == "" {
		subnet, err := netip.ParsePrefix(daemon.Subnet)
		if err != nil {
			return s, fmt.Errorf("subnet %q the daemon reported: %w", daemon.Subnet, err)
		}
		s.Bridge, s.Subnet = daemon.Bridge, subnet
	}
	s.Forwarding = s.Forwarding || daemon.Enabled && !daemon.ForwardingWasOn
	return s, nil
}

// TeardownNetwork returns the host's network to what it was before
// banger, undoing s: systemd-resolved's settings for the bridge reverted;
// banger's iptables jumps and chains, its nftables table and the bridge
// removed; and, when banger turned IPv4 forwarding on, forwarding off and
// the FORWARD policy back to ACCEPT. Forwarding that was on before banger
// stays on. It must run as root, after the daemon and the helper stopped,
// in the host's network namespace.
func TeardownNetwork(ctx context.Context, s network.Setup) error {
	if s.Bridge == "" {
		return nil // banger set up nothing
	}
	errs := []error{network.UnrouteDNS(ctx, s.Bridge), network.Firewall{Bridge: s.Bridge, Subnet: s.Subnet}.Teardown(ctx)}
	if s.Forwarding {
		errs = append(errs, network.RestoreForwarding(ctx))
	}
	return errors.Join(errs...)
}
