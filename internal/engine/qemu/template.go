package qemu

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/bangervm/banger/internal/engine"
	"github.com/bangervm/banger/internal/engine/proc"
)

// Files in a template directory.
const (
	TemplateMemory = "memory" // guest RAM, as the template left it
	TemplateState  = "state"  // device state (QEMU migration stream without RAM)
)

var _ engine.Templater = (*Engine)(nil)

// StartTemplate boots spec with its RAM in dir/memory, mapped shared so
// the file holds the guest's memory. See engine.Templater.
func (e *Engine) StartTemplate(ctx context.Context, spec engine.Spec, dir string) (engine.Instance, error) {
	mem := filepath.Join(dir, TemplateMemory)
	for _, f := range []string{mem, filepath.Join(dir, TemplateState)} {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("start template vm %s: %w", spec.ID, err)
		}
	}
	inst, err := e.start(ctx, spec, memoryOptions{path: mem, shared: true})
	if err != nil {
		return nil, fmt.Errorf("start template vm %s: %w", spec.ID, err)
	}
	return inst, nil
}

// SaveTemplate stops the guest, saves its device state with migration
// capability x-ignore-shared (the RAM is already in dir/memory and is not
// copied) and quits QEMU. See engine.Templater.
func (e *Engine) SaveTemplate(ctx context.Context, ei engine.Instance, dir string) error {
	inst, ok := ei.(*Instance)
	if !ok {
		return fmt.Errorf("save template: not a QEMU instance")
	}
	if err := inst.saveTemplate(ctx, dir); err != nil {
		_ = inst.Kill()
		return fmt.Errorf("save template of vm %s: %w", inst.ID, err)
	}
	return nil
}

func (i *Instance) saveTemplate(ctx context.Context, dir string) error {
	state := filepath.Join(dir, TemplateState)
	tmp := state + ".tmp"
	if err := SaveState(ctx, i.st.QMPSocket, i.P.Exited, "exec:cat > "+ShellQuote(tmp)); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := proc.SyncFile(tmp); err != nil {
		return err
	}
	if err := qmpCall(ctx, i.st.QMPSocket, "quit", nil, nil); err != nil {
		return err
	}
	if err := i.Wait(ctx); err != nil {
		return err
	}
	i.Cleanup()
	// The RAM file was written through a shared mapping; make it durable
	// before the state that names it appears.
	if err := proc.SyncFile(filepath.Join(dir, TemplateMemory)); err != nil {
		return err
	}
	return os.Rename(tmp, state)
}

// StartClone starts spec from the template in dir: QEMU maps dir/memory
// privately, waits with -incoming defer, loads dir/state and continues.
// See engine.Templater.
func (e *Engine) StartClone(ctx context.Context, spec engine.Spec, dir string) (engine.Instance, error) {
	mem, state := filepath.Join(dir, TemplateMemory), filepath.Join(dir, TemplateState)
	if err := proc.CheckTemplate(mem, state, spec.MemoryMiB); err != nil {
		return nil, fmt.Errorf("start vm %s from template %s: %w", spec.ID, dir, err)
	}
	inst, err := e.start(ctx, spec, memoryOptions{path: mem, incoming: true})
	if err != nil {
		return nil, fmt.Errorf("start vm %s from template %s: %w", spec.ID, dir, err)
	}
	if err := inst.loadTemplate(ctx, state); err != nil {
		_ = inst.Kill()
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = inst.Wait(wctx)
		inst.Cleanup()
		return nil, fmt.Errorf("start vm %s from template %s: %w: %w", spec.ID, dir, err, engine.ErrBadTemplate)
	}
	inst.Log.Info("vm started from template", "template", dir, "pid", inst.PID())
	return inst, nil
}

func (i *Instance) loadTemplate(ctx context.Context, state string) error {
	return LoadState(ctx, i.st.QMPSocket, i.P.Exited, "exec:cat "+ShellQuote(state))
}

// SaveState stops the guest of the QEMU whose QMP socket is qmp and
// migrates its device state to uri with capability x-ignore-shared: RAM
// in a shared memory-backend-file (CmdlineConfig.MemShared) is not copied.
// exited reports whether that QEMU has exited.
func SaveState(ctx context.Context, qmp string, exited func() bool, uri string) error {
	if err := qmpCall(ctx, qmp, "stop", nil, nil); err != nil {
		return err
	}
	if err := setIgnoreShared(ctx, qmp); err != nil {
		return err
	}
	if err := qmpCall(ctx, qmp, "migrate", map[string]any{"uri": uri}, nil); err != nil {
		return err
	}
	return waitMigration(ctx, qmp, exited)
}

// LoadState loads the device state SaveState wrote, from uri, into a QEMU
// started with CmdlineConfig.Incoming (its RAM mapped from the template's
// file), and lets the guest go on.
func LoadState(ctx context.Context, qmp string, exited func() bool, uri string) error {
	if err := setIgnoreShared(ctx, qmp); err != nil {
		return err
	}
	if err := qmpCall(ctx, qmp, "migrate-incoming", map[string]any{"uri": uri}, nil); err != nil {
		return err
	}
	if err := waitMigration(ctx, qmp, exited); err != nil {
		return err
	}
	return qmpCall(ctx, qmp, "cont", nil, nil)
}

func setIgnoreShared(ctx context.Context, qmp string) error {
	return qmpCall(ctx, qmp, "migrate-set-capabilities", map[string]any{
		"capabilities": []map[string]any{{"capability": "x-ignore-shared", "state": true}},
	}, nil)
}

// migrationWait bounds a template save or load when ctx has no deadline;
// without RAM the stream is tens of kilobytes.
const migrationWait = 30 * time.Second

// waitMigration polls query-migrate until the migration (either way)
// completes, fails, or the process exits (QEMU exits when an incoming
// migration fails).
func waitMigration(ctx context.Context, qmp string, exited func() bool) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, migrationWait)
		defer cancel()
	}
	for {
		if exited() {
			return errors.New("qemu exited during the migration")
		}
		var m struct {
			Status    string `json:"status"`
			ErrorDesc string `json:"error-desc"`
		}
		err := qmpCall(ctx, qmp, "query-migrate", nil, &m)
		switch {
		case err != nil && exited():
			return errors.New("qemu exited during the migration")
		case err != nil:
			return err
		case m.Status == "completed":
			return nil
		case m.Status == "failed" || m.Status == "cancelled":
			return fmt.Errorf("migration %s: %s", m.Status, m.ErrorDesc)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("migration still %q: %w", m.Status, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// ShellQuote quotes s for the sh -c that runs QEMU's exec: migration URI.
func ShellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
