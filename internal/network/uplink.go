package network

import (
	"context"
	"fmt"
	"slices"

	"github.com/bangervm/banger/internal/hostcmd"
)

// ChainUplink is the chain CloseUplink enters from INPUT and FORWARD.
const ChainUplink = "BANGER-UPLINK"

// uplinkRules are ChainUplink's rules: replies to what the namespace (or
// a VM through it) opened pass, nothing else does.
var uplinkRules = [][]string{
	{"-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "RETURN"},
	{"-j", "DROP"},
}

// uplinkJumps are the rules that send what arrives on uplink to
// ChainUplink, first in INPUT and FORWARD.
func uplinkJumps(uplink string) [][]string {
	j := []string{"-i", uplink, "-m", "comment", "--comment", "banger", "-j", ChainUplink}
	return [][]string{append([]string{"INPUT"}, j...), append([]string{"FORWARD"}, j...)}
}

// CloseUplink drops every new connection that arrives on uplink, to the
// namespace itself (INPUT) or to a VM behind it (FORWARD); replies to
// connections opened from inside pass. A Kubernetes launcher closes its
// Pod's eth0 this way: whatever any guest's mode, no other Pod's guest
// (nor anything else on the cluster network) reaches this Pod or its VM.
// It is idempotent, and acts on the calling thread's network namespace.
func CloseUplink(ctx context.Context, uplink string) error {
	if !ifNameRe.MatchString(uplink) || ValidateTapName(uplink) == nil || ValidateBridgeName(uplink) == nil {
		return invalid("uplink %q", uplink)
	}
	fwMu.Lock()
	defer fwMu.Unlock()
	if !hostcmd.IPTablesChainExists(ctx, "filter", ChainUplink) {
		if err := ipt(ctx, "filter", "-N", ChainUplink); err != nil {
			return fmt.Errorf("create chain %s: %w", ChainUplink, err)
		}
		for _, r := range uplinkRules {
			if err := ipt(ctx, "filter", slices.Concat([]string{"-A", ChainUplink}, r)...); err != nil {
				return fmt.Errorf("populate chain %s: %w", ChainUplink, err)
			}
		}
	}
	for _, j := range uplinkJumps(uplink) {
		if ipt(ctx, "filter", slices.Concat([]string{"-C"}, j)...) == nil {
			continue
		}
		if err := ipt(ctx, "filter", slices.Concat([]string{"-I", j[0], "1"}, j[1:])...); err != nil {
			return fmt.Errorf("close uplink %s: %w", uplink, err)
		}
	}
	return nil
}
