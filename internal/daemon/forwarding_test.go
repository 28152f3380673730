package daemon

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/internal/network"
	"github.com/bangervm/banger/internal/store"
)

// fwdOps answers EnsureForwarding as a host whose forwarding is on or off,
// and records whether bangerd claimed it as its own.
type fwdOps struct {
	network.Ops
	on   bool
	ours []bool
}

func (o *fwdOps) EnsureForwarding(_ context.Context, ours bool) (network.Forwarding, error) {
	o.ours = append(o.ours, ours)
	st := network.Forwarding{WasOn: o.on, PolicyDrop: !o.on || ours}
	o.on = true
	return st, nil
}

// bangerd claims forwarding as its own only within the boot it turned it
// on in: after a reboot, forwarding found on is someone else's.
func TestEnsureForwardingRecordsBoot(t *testing.T) {
	dir := t.TempDir()
	bootIDPath = filepath.Join(dir, "boot_id")
	t.Cleanup(func() { bootIDPath = "/proc/sys/kernel/random/boot_id" })
	boot := func(id string) {
		if err := os.WriteFile(bootIDPath, []byte(id+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	db, err := store.Open(ctx, filepath.Join(dir, "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ensure := func(ops *fwdOps) api.NetworkInfo {
		t.Helper()
		var info api.NetworkInfo
		if err := ensureForwarding(ctx, db, ops, log, &info); err != nil {
			t.Fatal(err)
		}
		return info
	}

	boot("boot-1")
	ops := &fwdOps{on: true} // someone else's forwarding
	if info := ensure(ops); !info.ForwardingWasOn || info.ForwardPolicyDrop || ops.ours[0] {
		t.Errorf("forwarding already on: info %+v, claimed %v; want it left alone", info, ops.ours)
	}
	ops = &fwdOps{on: false}
	if info := ensure(ops); info.ForwardingWasOn || !info.ForwardPolicyDrop {
		t.Errorf("forwarding off: info %+v; want turned on with DROP", info)
	}
	// The daemon restarts in the same boot: forwarding is on, and ours.
	if info := ensure(ops); info.ForwardingWasOn || !info.ForwardPolicyDrop || !ops.ours[1] {
		t.Errorf("after a restart: info %+v, claimed %v; want still bangerd's", info, ops.ours)
	}
	// After a reboot someone else turned it on first.
	boot("boot-2")
	ops = &fwdOps{on: true}
	if info := ensure(ops); !info.ForwardingWasOn || info.ForwardPolicyDrop || ops.ours[0] {
		t.Errorf("after a reboot: info %+v, claimed %v; want it left alone", info, ops.ours)
	}
}
