package network

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/hostcmd"
)

const ipForwardPath = "/proc/sys/net/ipv4/ip_forward"

// Forwarding is what EnsureForwarding found and did.
type Forwarding struct {
	// WasOn: net.ipv4.ip_forward was already 1.
	WasOn bool
	// PolicyDrop: banger set the filter FORWARD chain's policy to DROP,
	// because it turned forwarding on (now or earlier, see
	// EnsureForwarding).
	PolicyDrop bool
}

// EnsureForwarding turns on IPv4 forwarding in the calling thread's network
// namespace. Forwarding is a switch for every interface: on its own it
// would make the host a router between all its networks (a LAN, a VPN, a
// container bridge), not just for VMs. So when banger turns it on, it first
// sets the filter FORWARD chain's policy to DROP, as Docker does: a packet
// is forwarded only when a rule accepts it, banger's own in BANGER-FORWARD
// for its bridge and other tools' in FORWARD or their chains, which keep
// working. When forwarding was already on, someone chose it and the policy
// is left alone, unless ours says banger turned it on earlier in this boot
// (a restarted daemon), when DROP is set again (it is already, unless
// changed since).
func EnsureForwarding(ctx context.Context, ours bool) (Forwarding, error) {
	b, err := os.ReadFile(ipForwardPath)
	if err != nil {
		return Forwarding{}, fmt.Errorf("read %s: %w", ipForwardPath, err)
	}
	st := Forwarding{WasOn: strings.TrimSpace(string(b)) == "1"}
	if st.WasOn && !ours {
		return st, nil
	}
	// Before forwarding goes on, so the host never routes everything.
	if err := hostcmd.SetIPTablesPolicy(ctx, "filter", "FORWARD", "DROP"); err != nil {
		return st, fmt.Errorf("set the iptables FORWARD policy to DROP before enabling ip forwarding: %w", err)
	}
	st.PolicyDrop = true
	if st.WasOn {
		return st, nil
	}
	if err := os.WriteFile(ipForwardPath, []byte("1\n"), 0o644); err != nil {
		if errors.Is(err, os.ErrPermission) {
			err = fmt.Errorf("%w: %w", err, errdefs.ErrPermissionDenied)
		}
		return st, fmt.Errorf("enable ip forwarding: %w", err)
	}
	return st, nil
}

// RestoreForwarding undoes EnsureForwarding when it turned forwarding on:
// forwarding off, then the FORWARD policy back to ACCEPT, iptables'
// default, which it was while forwarding was off. Off first, so the host
// never routes everything in between.
func RestoreForwarding(ctx context.Context) error {
	if err := os.WriteFile(ipForwardPath, []byte("0\n"), 0o644); err != nil {
		return fmt.Errorf("turn ip forwarding off: %w", err)
	}
	if err := hostcmd.SetIPTablesPolicy(ctx, "filter", "FORWARD", "ACCEPT"); err != nil {
		return fmt.Errorf("set the iptables FORWARD policy back to ACCEPT: %w", err)
	}
	return nil
}
