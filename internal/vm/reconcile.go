package vm

import (
	"context"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/internal/store"
)

// Reconcile runs when the daemon starts, before it serves, and settles
// every VM from its record (which says what was under way when the last
// daemon stopped) and the engine's files in its directory (which say
// whether an engine process still runs):
//
//   - creating: the create never finished; it is rolled back as a failed
//     create is (engine process, tap, directory, record);
//   - stopping with the engine still running: the stop is finished, in the
//     background, holding the VM's lock;
//   - any other state with the engine running (running, starting, even
//     stopped or created, as an older daemon could leave): the process is
//     adopted and the VM is running;
//   - running, starting or stopping without an engine process: stopped,
//     and what a running VM holds (tap, rules, boot initrd) is removed.
func (m *Manager) Reconcile(ctx context.Context) {
	vs, err := m.cfg.DB.ListVMs(ctx)
	if err != nil {
		m.log.Error("reconcile", "err", err)
		return
	}
	for _, v := range vs {
		m.reconcile(ctx, v)
	}
}

func (m *Manager) reconcile(ctx context.Context, v store.VM) {
	h := m.handle(v.ID)
	h.lock.Lock()
	inst := m.instance(ctx, v, h)
	live := inst != nil && !inst.Exited()
	switch {
	case v.State == api.VMCreating:
		defer h.lock.Unlock()
		if err := m.destroy(ctx, v, h); err != nil {
			m.log.Warn("roll back unfinished create", "vm", v.ID, "err", err)
			return
		}
		m.log.Info("rolled back a create bangerd did not finish", "vm", v.ID, "name", v.Name)
	case live && v.State == api.VMStopping:
		m.log.Info("finishing a stop bangerd did not finish", "vm", v.ID)
		m.spawn(func(ctx context.Context) {
			defer h.lock.Unlock()
			if _, err := m.stop(ctx, &v, h); err != nil {
				m.log.Warn("finish stop", "vm", v.ID, "err", err)
			}
		})
	case live:
		defer h.lock.Unlock()
		m.adopt(ctx, &v, h, inst)
	case v.State == api.VMRunning || v.State == api.VMStarting || v.State == api.VMStopping:
		defer h.lock.Unlock()
		why := "its engine exited while bangerd was not running"
		if v.State == api.VMStarting {
			why = "bangerd exited before the VM was up; start it again"
		}
		if err := m.markStopped(ctx, &v, h, why); err != nil {
			m.log.Warn("reconcile", "vm", v.ID, "err", err)
		}
		m.log.Info("vm found stopped on reconcile", "vm", v.ID)
	default:
		h.lock.Unlock()
	}
}
