package vm

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/engine"
	"github.com/bangervm/banger/internal/store"
)

// A VM whose time-to-live ended while no daemon ran is deleted when the
// next one starts, as vm delete --force deletes it (a running engine is
// killed, the directory and record go), and the deletion is logged; a VM
// not yet due stays until its time.
func TestExpiredVMsDeleted(t *testing.T) {
	ctx := context.Background()
	dir, db, eng := testState(t)
	now := time.Now()
	put := func(name, state string, expires time.Time) store.VM {
		v := store.VM{ID: newID(), Name: name, Image: "i", Kernel: "k", Engine: "fake", VCPU: 1, MemoryMiB: 64, State: state,
			Dir: filepath.Join(dir, "vms", name), CreatedAt: now, Net: api.NetNone, ExpiresAt: expires}
		if err := os.MkdirAll(v.Dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := db.PutVM(ctx, v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	running := put("due-running", api.VMRunning, now.Add(-time.Minute))
	proc := eng.run(running.ID)
	stopped := put("due-stopped", api.VMStopped, now.Add(-time.Second))
	later := put("later", api.VMStopped, now.Add(time.Hour))
	forever := put("forever", api.VMStopped, time.Time{})

	var logs bytes.Buffer
	m, err := New(ctx, Config{DB: db, Engines: map[string]engine.Engine{"fake": eng}, Log: slog.New(slog.NewTextHandler(&logs, nil)), StopTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	gone := func(v store.VM) bool {
		_, err := db.GetVM(ctx, v.ID)
		_, statErr := os.Stat(v.Dir)
		return errdefs.IsNotFound(err) && errors.Is(statErr, os.ErrNotExist)
	}
	if !gone(running) || !gone(stopped) {
		t.Errorf("expired VMs left after the daemon started: running gone %v, stopped gone %v", gone(running), gone(stopped))
	}
	if proc.how != "killed" {
		t.Errorf("expired running VM's engine ended %q, want killed", proc.how)
	}
	if gone(later) || gone(forever) {
		t.Fatal("a VM not yet due was deleted")
	}
	if !strings.Contains(logs.String(), "vm expired") || !strings.Contains(logs.String(), "name=due-running") {
		t.Errorf("expiry not logged:\n%s", logs.String())
	}
	m.DeleteExpired(ctx, now.Add(2*time.Hour))
	if !gone(later) || gone(forever) {
		t.Errorf("two hours on: later gone %v (want true), forever gone %v (want false)", gone(later), gone(forever))
	}
}

// List and Prune keep only VMs carrying every label asked for.
func TestLabelFilters(t *testing.T) {
	ctx := context.Background()
	dir, db, eng := testState(t)
	m, err := New(ctx, Config{DB: db, Engines: map[string]engine.Engine{"fake": eng}, Log: slog.New(slog.DiscardHandler), StopTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for name, labels := range map[string]map[string]string{
		"a": {"owner": "agent-7", "team": "x"},
		"b": {"owner": "agent-7"},
		"c": {"owner": "agent-8", "team": "x"},
		"d": nil,
	} {
		v := store.VM{ID: newID(), Name: name, Image: "i", Kernel: "k", Engine: "fake", VCPU: 1, MemoryMiB: 64, State: api.VMStopped,
			Dir: filepath.Join(dir, "vms", name), CreatedAt: time.Now(), Net: api.NetNone, Labels: labels}
		if err := db.PutVM(ctx, v); err != nil {
			t.Fatal(err)
		}
	}
	names := func(sel map[string]string) string {
		vs, err := m.List(ctx, sel)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, v := range vs {
			out = append(out, v.Name)
		}
		sort.Strings(out)
		return strings.Join(out, ",")
	}
	for sel, want := range map[string]string{"": "a,b,c,d", "owner=agent-7": "a,b", "owner=agent-7,team=x": "a", "team=y": ""} {
		var args []string
		if sel != "" {
			args = strings.Split(sel, ",")
		}
		m, _ := api.ParseLabels(args)
		if got := names(m); got != want {
			t.Errorf("list %q = %q, want %q", sel, got, want)
		}
	}
	res, err := m.Prune(ctx, map[string]string{"team": "x"})
	sort.Strings(res.Deleted)
	if err != nil || strings.Join(res.Deleted, ",") != "a,c" {
		t.Errorf("prune team=x deleted %v (%v), want a,c", res.Deleted, err)
	}
	if got := names(nil); got != "b,d" {
		t.Errorf("after prune: %q, want b,d", got)
	}
}
