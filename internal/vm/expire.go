package vm

import (
	"context"
	"time"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/errdefs"
)

// expiryTick is how often the daemon looks for VMs whose time-to-live
// has ended: one indexed query, so a VM outlives its deadline by at most
// this much while the daemon runs.
const expiryTick = 2 * time.Second

// expireLoop deletes expired VMs every expiryTick until ctx ends.
func (m *Manager) expireLoop(ctx context.Context) {
	every(ctx, expiryTick, func(now time.Time) { m.DeleteExpired(ctx, now) })
}

// every calls f each period until ctx ends.
func every(ctx context.Context, period time.Duration, f func(now time.Time)) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			f(now)
		}
	}
}

// DeleteExpired deletes every VM whose time-to-live ended by now, as vm
// delete --force does (a running VM is killed first). The deadline is
// absolute and in the record, so VMs that expired while no daemon ran go
// at the next start. A VM still being created is left for the next look:
// its create holds the VM's lock and either finishes or rolls it back.
func (m *Manager) DeleteExpired(ctx context.Context, now time.Time) {
	vs, err := m.cfg.DB.ExpiredVMs(ctx, now)
	if err != nil {
		m.log.Warn("expired vms", "err", err)
		return
	}
	for _, v := range vs {
		if ctx.Err() != nil {
			return
		}
		if v.State == api.VMCreating {
			continue
		}
		m.log.Info("vm expired: deleting", "vm", v.ID, "name", v.Name, "expired_at", v.ExpiresAt.UTC().Format(time.RFC3339))
		if err := m.Delete(ctx, v.ID, true); err != nil && !errdefs.IsNotFound(err) {
			m.log.Warn("delete expired vm", "vm", v.ID, "name", v.Name, "err", err)
		}
	}
}
