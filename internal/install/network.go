package install

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/internal/network"
)

// TeardownNetwork returns the host's network to what it was before
// banger, from what the daemon reported it set up (GET /v1/network, asked
// before the units stopped): systemd-resolved's settings for the bridge
// reverted; banger's iptables jumps and chains, its nftables table and
// the bridge removed; and, when bangerd turned IPv4 forwarding on,
// forwarding off and the FORWARD policy back to ACCEPT. Forwarding that
// was on before banger stays on. It must run as root, after the daemon
// stopped, in the host's network namespace.
func TeardownNetwork(ctx context.Context, n api.NetworkInfo) error {
	if n.Bridge == "" || n.Subnet == "" {
		return nil // the daemon set up nothing
	}
	subnet, err := netip.ParsePrefix(n.Subnet)
	if err != nil {
		return fmt.Errorf("subnet %q the daemon reported: %w", n.Subnet, err)
	}
	errs := []error{network.UnrouteDNS(ctx, n.Bridge), network.Firewall{Bridge: n.Bridge, Subnet: subnet}.Teardown(ctx)}
	if n.Enabled && !n.ForwardingWasOn {
		errs = append(errs, network.RestoreForwarding(ctx))
	}
	return errors.Join(errs...)
}
