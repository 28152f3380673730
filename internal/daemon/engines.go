package daemon

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/internal/config"
	"github.com/bangervm/banger/internal/engine"
	"github.com/bangervm/banger/internal/engine/qemu"
)

// engines builds the engines this host can run, the rule that picks one
// for a new VM, and the report `banger engine` prints.
func engines(ctx context.Context, s config.Config, accel engine.Accel, state string, log *slog.Logger) (map[string]engine.Engine, func(string) (string, string, error), api.EngineInfo) {
	q := qemu.New(qemu.Config{Binary: s.QEMUBin, Accel: accel, LogMax: s.ConsoleLogBytes(), Logger: log})
	all := map[string]engine.Engine{engine.QEMU: q}
	var h engine.Host
	qs := api.EngineStatus{Name: engine.QEMU, Available: true}
	if f, err := q.Features(ctx); err == nil {
		qs.Accel = string(f.Accel)
		qs.Note = f.AccelReason
		if f.Accel != engine.AccelKVM {
			h.KVMErr = errors.New(f.AccelReason)
		}
	} else {
		qs.Available, qs.Note = false, err.Error()
	}
	if v, err := q.Version(ctx); err != nil {
		qs.Available, qs.Note = false, err.Error()
	} else {
		qs.Version = v
	}
	fc := firecrackerEngine(ctx, s, filepath.Join(state, "jail"), log, &h)
	if fc.engine != nil {
		all[engine.Firecracker] = fc.engine
	}
	info := api.EngineInfo{Engines: []api.EngineStatus{fc.status, qs}}
	choose := func(flag string) (string, string, error) { return engine.Choose(flag, s.Engine, h) }
	info.Default, info.Reason, _ = choose("")
	return all, choose, info
}
