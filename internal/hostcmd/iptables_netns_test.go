package hostcmd_test

import (
	"context"
	"testing"

	"github.com/bangervm/banger/internal/hostcmd"
	"github.com/bangervm/banger/internal/network/nettest"
)

func TestIPTablesPolicyNetns(t *testing.T) {
	nettest.Require(t)
	ns := nettest.NewNS(t)
	ctx := context.Background()
	nettest.Do(t, ns, func() {
		if p, err := hostcmd.IPTablesPolicy(ctx, "filter", "FORWARD"); err != nil || p != "ACCEPT" {
			t.Fatalf("policy of a new namespace = %q, %v; want ACCEPT", p, err)
		}
		if err := hostcmd.SetIPTablesPolicy(ctx, "filter", "FORWARD", "DROP"); err != nil {
			t.Fatal(err)
		}
		if p, err := hostcmd.IPTablesPolicy(ctx, "filter", "FORWARD"); err != nil || p != "DROP" {
			t.Fatalf("policy = %q, %v; want DROP", p, err)
		}
		if err := hostcmd.SetIPTablesPolicy(ctx, "filter", "FORWARD", "REJECT"); err == nil {
			t.Fatal("SetIPTablesPolicy accepted REJECT, which is no policy")
		}
	})
}
