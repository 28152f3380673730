package vm

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/consolelog"
	"github.com/bangervm/banger/internal/engine"
	"github.com/bangervm/banger/internal/engine/proc"
	"github.com/bangervm/banger/internal/paths"
	"github.com/bangervm/banger/internal/store"
)

// Running is a VM whose engine process runs, found without a daemon.
type Running struct {
	ID   string `json:"id"`
	Name string `json:"name"` // the id when the store could not be read
	PID  int    `json:"pid"`
	Dir  string `json:"-"`

	inst engine.Instance
}

// FindRunning finds the VMs of layout l whose engine process still runs,
// without a daemon: engine processes outlive it (they are started
// detached, and the installed unit is KillMode=process), so a stopped,
// crashed or masked daemon does not mean no VM runs. It looks as
// Reconcile does, with the engine's Attach in each VM's directory: the
// VMs the store records (read without changing it), and any other
// directory under vms/ (a store that cannot be read still leaves them
// found, named by id). It must run as the layout's owner: the files it
// reads are the owner's.
func FindRunning(ctx context.Context, l paths.Layout, engines map[string]engine.Engine) ([]Running, error) {
	vmsDir := filepath.Join(l.State, "vms")
	recs, err := recordedVMs(ctx, l)
	var errs []error
	if err != nil {
		errs = append(errs, fmt.Errorf("read the VMs' names (found by id instead): %w", err))
	}
	known := map[string]bool{}
	for _, v := range recs {
		known[v.Dir] = true
	}
	ents, err := os.ReadDir(vmsDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("list %s: %w", vmsDir, err)
	}
	for _, e := range ents {
		dir := filepath.Join(vmsDir, e.Name())
		if e.IsDir() && !known[dir] {
			recs = append(recs, store.VM{ID: e.Name(), Name: e.Name(), Dir: dir})
		}
	}
	var out []Running
	for _, v := range recs {
		inst, err := attachEngine(ctx, engines, v)
		if err != nil {
			errs = append(errs, fmt.Errorf("vm %s: %w", v.Name, err))
		}
		if inst != nil && !inst.Exited() {
			out = append(out, Running{ID: v.ID, Name: v.Name, PID: inst.PID(), Dir: v.Dir, inst: inst})
		}
	}
	// Looking failed for some VM: running ones may be missing, and
	// whoever asked must not take the list as complete.
	return out, errors.Join(errs...)
}

// recordedVMs lists the store's VMs; no store is no VMs.
func recordedVMs(ctx context.Context, l paths.Layout) ([]store.VM, error) {
	db, err := store.OpenReadOnly(l.DB())
	if errdefs.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer db.Close()
	return db.ListVMs(ctx)
}

// StopRunning stops VMs FindRunning found, with no daemon to ask the
// guest agent to sync first: the engine's Shutdown, the power button with
// a deadline (timeout) and then a forced stop. It waits for each engine's
// console-log copiers to exit too, and returns what it could not stop. A
// guest that ignores the button loses what it had not written.
func StopRunning(ctx context.Context, vms []Running, timeout time.Duration) error {
	var errs []error
	for _, v := range vms {
		sctx, cancel := context.WithTimeout(ctx, timeout)
		err := v.inst.Shutdown(sctx)
		cancel()
		if err != nil && !errors.Is(err, engine.ErrForced) {
			errs = append(errs, fmt.Errorf("stop %s: %w", v.Name, err))
			continue
		}
		if err := waitCopiers(ctx, v.Dir, timeout); err != nil {
			errs = append(errs, fmt.Errorf("stop %s: %w", v.Name, err))
		}
	}
	return errors.Join(errs...)
}

// waitCopiers waits until no console-log copier writes into dir: once its
// engine is gone, a copier drains the pipe and exits.
func waitCopiers(ctx context.Context, dir string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	prefix := filepath.Clean(dir) + string(filepath.Separator)
	ours := func(argv []string) bool {
		return len(argv) > 1 && argv[0] == consolelog.CopierName &&
			slices.ContainsFunc(argv[1:], func(a string) bool { return strings.HasPrefix(a, prefix) })
	}
	for {
		pids, err := proc.Find(ours)
		if err != nil || len(pids) == 0 {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("console log copiers %v still run after the engine exited: %w", pids, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}
