package vm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/agentproto"
	"github.com/bangervm/banger/internal/crashpoint"
	"github.com/bangervm/banger/internal/engine"
	"github.com/bangervm/banger/internal/store"
	"github.com/bangervm/banger/internal/undo"
)

// rollback runs an operation's undo stack with a context that outlives the
// request, and logs what could not be undone.
func (m *Manager) rollback(ctx context.Context, u *undo.Stack, v store.VM) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	if err := u.Run(ctx); err != nil {
		m.log.Warn("roll back vm", "vm", v.ID, "err", err)
	}
}

// setState records the VM's state before the step it names is taken (or
// after it is done).
func (m *Manager) setState(ctx context.Context, v *store.VM, state, reason string) error {
	v.State, v.Reason = state, reason
	if err := m.cfg.DB.UpdateVM(context.WithoutCancel(ctx), *v); err != nil {
		return fmt.Errorf("record vm %s %s: %w", v.Name, state, err)
	}
	return nil
}

// Start boots a stopped VM. A VM whose engine process still runs (found
// after a daemon crash, whatever its record says) is adopted rather than
// booted twice; a VM its engine paused is resumed.
func (m *Manager) Start(ctx context.Context, ref string, progress func(api.Event)) (api.VM, error) {
	if progress == nil {
		progress = func(api.Event) {}
	}
	v, h, unlock, err := m.lockVM(ctx, ref)
	if err != nil {
		return api.VM{}, err
	}
	defer unlock()
	if inst := m.instance(ctx, v, h); inst != nil && !inst.Exited() {
		if err := m.resume(ctx, v, inst); err != nil {
			return api.VM{}, err
		}
		if v.State != api.VMRunning {
			m.adopt(ctx, &v, h, inst)
		}
		return m.toAPI(v), nil
	}
	var u undo.Stack
	if err := m.start(ctx, &v, h, &u, progress, startOptions{}); err != nil {
		m.rollback(ctx, &u, v)
		// The VM's disk holds user data: keep the VM, record why it failed.
		m.setState(ctx, &v, api.VMError, err.Error())
		return api.VM{}, err
	}
	u.Release()
	return m.toAPI(v), nil
}

// resume lets a VM its engine paused go on.
func (m *Manager) resume(ctx context.Context, v store.VM, inst engine.Instance) error {
	p, ok := inst.(engine.Pauser)
	if !ok || m.pauseReason(ctx, inst) == "" {
		return nil
	}
	if err := p.Resume(ctx); err != nil {
		return fmt.Errorf("resume vm %s: %w", v.Name, err)
	}
	m.log.Info("vm resumed", "vm", v.ID)
	return nil
}

func (m *Manager) lockVM(ctx context.Context, ref string) (store.VM, *handle, func(), error) {
	v, err := m.cfg.DB.GetVM(ctx, ref)
	if err != nil {
		return v, nil, nil, err
	}
	h := m.handle(v.ID)
	h.lock.Lock()
	// Re-read under the lock: another operation may have changed it.
	v, err = m.cfg.DB.GetVM(ctx, v.ID)
	if err != nil {
		h.lock.Unlock()
		return v, nil, nil, err
	}
	return v, h, h.lock.Unlock, nil
}

// instance returns the VM's engine instance: the one this daemon holds,
// else a live engine process found in the VM's directory whatever the
// record says (a daemon killed at the wrong moment leaves one), else nil.
// Caller holds h.lock.
func (m *Manager) instance(ctx context.Context, v store.VM, h *handle) engine.Instance {
	h.mu.Lock()
	inst := h.inst
	h.mu.Unlock()
	if inst != nil {
		return inst
	}
	if inst = m.attach(ctx, v); inst != nil {
		h.mu.Lock()
		h.setInstLocked(inst)
		h.mu.Unlock()
	}
	return inst
}

// attach finds a live engine process in the VM's directory, or nil.
func (m *Manager) attach(ctx context.Context, v store.VM) engine.Instance {
	inst, err := attachEngine(ctx, m.cfg.Engines, v)
	if err != nil {
		m.log.Warn("look for the engine process", "vm", v.ID, "err", err)
	}
	return inst
}

// attachEngine finds a live engine process in v's directory with v's
// engine, or, when the record names none it knows, with each of engines.
// It returns nil, nil when none runs; an error when looking failed.
func attachEngine(ctx context.Context, engines map[string]engine.Engine, v store.VM) (engine.Instance, error) {
	try := engines
	if e, ok := engines[v.Engine]; ok {
		try = map[string]engine.Engine{v.Engine: e}
	}
	var errs []error
	for _, e := range try {
		inst, err := e.Attach(ctx, engine.Spec{ID: v.ID, Dir: v.Dir})
		if err == nil {
			return inst, nil
		}
		if !errdefs.IsNotFound(err) {
			errs = append(errs, err)
		}
	}
	return nil, errors.Join(errs...)
}

// running says whether the VM's engine process runs, found or held.
// Caller holds h.lock.
func (m *Manager) running(ctx context.Context, v store.VM, h *handle) bool {
	inst := m.instance(ctx, v, h)
	return inst != nil && !inst.Exited()
}

// alive says whether this daemon holds a running engine process for the
// VM.
func (m *Manager) alive(h *handle) bool {
	h.mu.Lock()
	inst := h.inst
	h.mu.Unlock()
	return inst != nil && !inst.Exited()
}

func (m *Manager) engineSpec(v store.VM, k api.Kernel, sp spec) engine.Spec {
	return engine.Spec{
		ID: v.ID, Dir: v.Dir, VCPU: v.VCPU, MemoryMiB: v.MemoryMiB,
		Kernel: k.Vmlinux, Initrd: filepath.Join(v.Dir, InitrdFile),
		Disks: []engine.Disk{{Path: sp.ImageRootFS, ReadOnly: true}, {Path: filepath.Join(v.Dir, DiskFile)}},
	}
}

// start boots v and waits until its agent answers. Caller holds h.lock.
// Each step pushes its undo onto u, which the caller runs on error: then
// no engine process, tap, rules or boot initrd is left. A VM being created
// stays creating; any other is recorded as starting first.
func (m *Manager) start(ctx context.Context, v *store.VM, h *handle, u *undo.Stack, progress func(api.Event), opts startOptions) error {
	var sp spec
	json.Unmarshal([]byte(v.SpecJSON), &sp)
	k, err := m.cfg.Kernels.Get(ctx, v.Kernel)
	if err != nil {
		return fmt.Errorf("kernel of vm %s: %w", v.Name, err)
	}
	if _, err := os.Stat(sp.ImageRootFS); err != nil {
		return fmt.Errorf("image %s of vm %s: rootfs %s: %w", v.Image, v.Name, sp.ImageRootFS, errdefs.ErrNotFound)
	}
	eng, err := m.engine(v.Engine)
	if err != nil {
		return err
	}
	if v.State != api.VMCreating {
		if err := m.setState(ctx, v, api.VMStarting, ""); err != nil {
			return err
		}
	}
	crashpoint.At("start.intent")
	netSpec, guestNet, err := m.netUp(ctx, *v)
	if err != nil {
		return err
	}
	u.Push("network", func(ctx context.Context) error { return m.netDown(ctx, *v) })
	sshCfg, err := m.sshBoot(*v)
	if err != nil {
		return err
	}
	initrdPath := filepath.Join(v.Dir, InitrdFile)
	u.Push("boot initrd", func(context.Context) error { return removeFile(initrdPath) })
	if err := m.writeInitrd(*v, k, sp); err != nil {
		return err
	}
	crashpoint.At("start.net")
	progress(api.Event{Phase: "boot", Message: "booting " + v.Name})
	es := m.engineSpec(*v, k, sp)
	es.Net = netSpec
	if netSpec != nil && netSpec.TapFD != nil {
		// The engine process has its own copy; a cold boot after a
		// failed clone needs it again.
		defer netSpec.TapFD.Close()
	}
	id := agentproto.Identity{Hostname: v.Name, Network: guestNet, SSH: sshCfg}
	if netSpec != nil {
		id.MAC = netSpec.MAC
	}
	inst, from, err := m.bootFromTemplate(ctx, v, h, eng, es, id, k, sp, opts)
	if err != nil {
		return err
	}
	u.Push("engine process", func(ctx context.Context) error { return m.endInstance(ctx, h, inst) })
	if err := m.recordStartedFrom(*v, from); err != nil {
		return err
	}
	crashpoint.At("start.agent")
	v.StartedAt = time.Now()
	if err := m.setState(ctx, v, api.VMRunning, ""); err != nil {
		return err
	}
	if a, ok := m.vmAddr(*v); ok {
		m.addrs.set(v.Name, a)
	}
	m.spawn(func(ctx context.Context) { m.watch(ctx, v.ID, h, inst) })
	m.openForwards(ctx, *v)
	m.log.Info("vm running", "vm", v.ID, "pid", inst.PID())
	return nil
}

// adopt makes a live engine process found for v (after a daemon restart,
// or while the record said otherwise) the VM's running instance: its
// rules are rebuilt (the host may have lost them while no daemon ran), its
// address published, its forwards opened, its exit watched, and its record
// says running. Caller holds h.lock.
func (m *Manager) adopt(ctx context.Context, v *store.VM, h *handle, inst engine.Instance) {
	h.mu.Lock()
	h.setInstLocked(inst)
	h.stopping = false
	h.mu.Unlock()
	netSpec, guestNet, err := m.netUp(ctx, *v)
	if netSpec != nil && netSpec.TapFD != nil {
		netSpec.TapFD.Close() // the engine holds the tap already
	}
	if err != nil {
		m.log.Warn("rebuild vm network", "vm", v.ID, "err", err)
	}
	m.spawn(func(ctx context.Context) { m.identifyAdopted(ctx, *v, h, netSpec, guestNet) })
	if a, ok := m.vmAddr(*v); ok {
		m.addrs.set(v.Name, a)
	}
	if v.State != api.VMRunning {
		v.StartedAt = time.Now()
		if err := m.setState(ctx, v, api.VMRunning, ""); err != nil {
			m.log.Warn("adopt vm", "vm", v.ID, "err", err)
		}
	}
	m.openForwards(ctx, *v)
	m.spawn(func(ctx context.Context) { m.watch(ctx, v.ID, h, inst) })
	m.log.Info("adopted running vm", "vm", v.ID, "pid", inst.PID())
}

// Stop stops a VM with its data flushed: the agent syncs and unmounts and
// confirms, the guest powers off; only if that fails does the engine stop
// it (ACPI/QMP), and only as a last resort is it killed. A VM its engine
// paused is resumed first; if it pauses again (the disk is still full) it
// cannot flush and is killed. The result says which path was taken. An
// engine process found running is stopped whatever the record says.
func (m *Manager) Stop(ctx context.Context, ref string) (api.StopResult, error) {
	v, h, unlock, err := m.lockVM(ctx, ref)
	if err != nil {
		return api.StopResult{}, err
	}
	defer unlock()
	method, err := m.stop(ctx, &v, h)
	if err != nil {
		return api.StopResult{}, err
	}
	return api.StopResult{VM: m.toAPI(v), Method: method}, nil
}

// stop is Stop with h.lock held.
func (m *Manager) stop(ctx context.Context, v *store.VM, h *handle) (string, error) {
	method := "already-stopped"
	if inst := m.instance(ctx, *v, h); inst != nil && !inst.Exited() {
		h.mu.Lock()
		h.stopping = true
		h.mu.Unlock()
		if err := m.setState(ctx, v, api.VMStopping, ""); err != nil {
			// A full disk must not keep a VM from stopping.
			m.log.Warn("stop", "vm", v.ID, "err", err)
		}
		crashpoint.At("stop.intent")
		method = m.stopInstance(ctx, v, h, inst)
		crashpoint.At("stop.exited")
	}
	if err := m.markStopped(ctx, v, h, ""); err != nil {
		return method, err
	}
	m.log.Info("vm stopped", "vm", v.ID, "method", method)
	return method, nil
}

func (m *Manager) stopInstance(ctx context.Context, v *store.VM, h *handle, inst engine.Instance) string {
	if why := m.pauseReason(ctx, inst); why != "" && !m.resumeForStop(ctx, *v, inst) {
		// A paused guest can neither sync nor hear the power button.
		m.log.Warn("killing paused vm", "vm", v.ID, "reason", why)
		m.endInstance(ctx, h, inst)
		return "killed-paused"
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.cfg.StopTimeout)
	defer cancel()
	if c, err := m.connectAgent(sctx, v, h, m.cfg.StopTimeout); err == nil {
		if err := c.Shutdown(sctx); err == nil {
			crashpoint.At("stop.agent")
			if inst.Wait(sctx) == nil {
				return "agent"
			}
		} else {
			m.log.Warn("agent shutdown", "vm", v.ID, "err", err)
		}
	} else {
		m.log.Warn("agent unreachable for stop", "vm", v.ID, "err", err)
	}
	ectx, cancel2 := context.WithTimeout(context.WithoutCancel(ctx), m.cfg.StopTimeout)
	defer cancel2()
	err := inst.Shutdown(ectx)
	if err == nil {
		return "engine"
	}
	m.log.Warn("engine shutdown", "vm", v.ID, "err", err)
	m.endInstance(ctx, h, inst)
	return "killed"
}

// pauseGrace is how long a paused VM resumed for a stop must keep running
// to be stopped gracefully: a write that still fails pauses it again at
// once.
const pauseGrace = time.Second

// resumeForStop resumes a paused VM so that it can sync and power off,
// and reports whether it stayed running (space was freed meanwhile).
func (m *Manager) resumeForStop(ctx context.Context, v store.VM, inst engine.Instance) bool {
	if err := m.resume(ctx, v, inst); err != nil {
		m.log.Warn("resume for stop", "vm", v.ID, "err", err)
		return false
	}
	select {
	case <-ctx.Done():
		return false
	case <-time.After(pauseGrace):
	}
	return m.pauseReason(ctx, inst) == ""
}

// Kill stops a VM at once, without flushing the guest's data; an engine
// process found running is killed whatever the record says.
func (m *Manager) Kill(ctx context.Context, ref string) (api.StopResult, error) {
	v, h, unlock, err := m.lockVM(ctx, ref)
	if err != nil {
		return api.StopResult{}, err
	}
	defer unlock()
	method := "already-stopped"
	if inst := m.instance(ctx, v, h); inst != nil && !inst.Exited() {
		if err := m.endInstance(ctx, h, inst); err != nil {
			return api.StopResult{}, fmt.Errorf("kill vm %s: %w", v.Name, err)
		}
		method = "killed"
	}
	if err := m.markStopped(ctx, &v, h, ""); err != nil {
		return api.StopResult{}, err
	}
	return api.StopResult{VM: m.toAPI(v), Method: method}, nil
}

// Restart stops a VM gracefully and starts it again.
func (m *Manager) Restart(ctx context.Context, ref string, progress func(api.Event)) (api.VM, error) {
	v, h, unlock, err := m.lockVM(ctx, ref)
	if err != nil {
		return api.VM{}, err
	}
	defer unlock()
	if _, err := m.stop(ctx, &v, h); err != nil {
		return api.VM{}, err
	}
	var u undo.Stack
	if err := m.start(ctx, &v, h, &u, progress, startOptions{}); err != nil {
		m.rollback(ctx, &u, v)
		m.setState(ctx, &v, api.VMError, err.Error())
		return api.VM{}, err
	}
	u.Release()
	return m.toAPI(v), nil
}

// removeFile removes path; a missing file is fine.
func removeFile(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}
