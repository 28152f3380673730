package vm

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/engine"
	"github.com/bangervm/banger/internal/store"
)

// endInstance kills the engine process and waits for it to go; the handle
// forgets it and its agent session. Killing a process that is already gone
// is not an error.
func (m *Manager) endInstance(ctx context.Context, h *handle, inst engine.Instance) error {
	h.mu.Lock()
	h.stopping = true
	h.dropLocked(inst)
	h.mu.Unlock()
	if err := inst.Kill(); err != nil && !errdefs.IsNotFound(err) {
		return err
	}
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	return inst.Wait(wctx)
}

// dropLocked forgets inst, if it is still the VM's instance, and closes
// its agent session. Caller holds h.mu.
func (h *handle) dropLocked(inst engine.Instance) {
	if h.inst != inst {
		return
	}
	h.setInstLocked(nil)
}

// markStopped records a VM whose engine process is gone as stopped (with
// why, when it stopped by itself) and removes what only a running VM has:
// its agent session, address, forwards' listeners, tap and rules, boot
// initrd.
func (m *Manager) markStopped(ctx context.Context, v *store.VM, h *handle, reason string) error {
	h.mu.Lock()
	h.dropLocked(h.inst)
	h.mu.Unlock()
	m.addrs.remove(v.Name)
	m.closeForwards(ctx, *v)
	if err := m.netDown(ctx, *v); err != nil {
		m.log.Warn("network teardown", "vm", v.ID, "err", err)
	}
	os.Remove(filepath.Join(v.Dir, InitrdFile))
	return m.setState(ctx, v, api.VMStopped, reason)
}

// watch notices a VM that stops without being asked (the guest powered
// off, the engine crashed) and records it. It returns early when ctx (the
// manager's) is done.
func (m *Manager) watch(ctx context.Context, id string, h *handle, inst engine.Instance) {
	if inst.Wait(ctx) != nil {
		return
	}
	h.mu.Lock()
	expected := h.stopping || h.inst != inst
	h.dropLocked(inst)
	h.mu.Unlock()
	if expected {
		return
	}
	h.lock.Lock()
	defer h.lock.Unlock()
	v, err := m.cfg.DB.GetVM(ctx, id)
	if err != nil || v.State != api.VMRunning {
		return
	}
	if err := m.markStopped(ctx, &v, h, "the guest powered off or the engine exited"); err != nil {
		m.log.Warn("record stop", "vm", id, "err", err)
	}
	m.log.Info("vm stopped by itself", "vm", id)
}

// Delete removes a VM and everything it owns. A running VM is refused
// unless force, which kills it first.
func (m *Manager) Delete(ctx context.Context, ref string, force bool) error {
	v, h, unlock, err := m.lockVM(ctx, ref)
	if err != nil {
		return err
	}
	defer unlock()
	if m.running(ctx, v, h) && !force {
		return fmt.Errorf("vm %s is running: stop it first (banger vm stop %s) or delete with --force: %w", v.Name, v.Name, errdefs.ErrFailedPrecondition)
	}
	if err := m.destroy(ctx, v, h); err != nil {
		return fmt.Errorf("delete vm %s: %w", v.Name, err)
	}
	m.log.Info("vm deleted", "vm", v.ID, "name", v.Name)
	return nil
}

// destroy removes everything a VM may own, whatever state it was left in:
// engine process, forwards, tap and rules, pinned host key, directory,
// and last the record, so that a daemon killed half-way still knows the
// VM. Every step runs; their errors are reported together. Caller holds
// h.lock.
func (m *Manager) destroy(ctx context.Context, v store.VM, h *handle) error {
	var errs []error
	if inst := m.instance(ctx, v, h); inst != nil {
		errs = append(errs, m.endInstance(ctx, h, inst))
	}
	m.closeForwards(ctx, v)
	// The directory goes before the record is written: on a full disk it
	// is what frees the space the record's update needs.
	errs = append(errs, m.netDown(ctx, v), m.unpin(v), os.RemoveAll(v.Dir), m.cfg.DB.DeleteVM(context.WithoutCancel(ctx), v.ID))
	m.addrs.remove(v.Name)
	m.forget(v.ID)
	return errors.Join(errs...)
}

// Prune deletes every VM that is stopped, created or failed and carries
// all labels of sel; VMs being created, started or stopped are left alone.
func (m *Manager) Prune(ctx context.Context, sel map[string]string) (api.PruneVMsResult, error) {
	vs, err := m.cfg.DB.ListVMs(ctx)
	if err != nil {
		return api.PruneVMsResult{}, err
	}
	res := api.PruneVMsResult{Deleted: []string{}}
	var errs []error
	for _, v := range vs {
		switch v.State {
		case api.VMStopped, api.VMCreated, api.VMError:
		default:
			continue
		}
		if !api.MatchLabels(v.Labels, sel) {
			continue
		}
		if err := m.Delete(ctx, v.ID, false); err != nil {
			if !errdefs.IsFailedPrecondition(err) && !errdefs.IsNotFound(err) {
				errs = append(errs, err)
			}
			continue
		}
		res.Deleted = append(res.Deleted, v.Name)
	}
	return res, errors.Join(errs...)
}
