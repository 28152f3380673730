package vm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/engine"
	"github.com/bangervm/banger/internal/store"
)

// fakeInst is an engine process that lives until it is killed or shut
// down; it has no agent.
type fakeInst struct {
	pid  int
	once sync.Once
	done chan struct{}
	how  string // "killed" or "shutdown" once gone
}

func newFakeInst(pid int) *fakeInst { return &fakeInst{pid: pid, done: make(chan struct{})} }

func (f *fakeInst) end(how string) { f.once.Do(func() { f.how = how; close(f.done) }) }

func (f *fakeInst) PID() int { return f.pid }
func (f *fakeInst) DialAgent(context.Context) (net.Conn, error) {
	return nil, fmt.Errorf("no agent: %w", errdefs.ErrUnavailable)
}
func (f *fakeInst) Shutdown(context.Context) error { f.end("shutdown"); return nil }
func (f *fakeInst) Kill() error                    { f.end("killed"); return nil }
func (f *fakeInst) Wait(ctx context.Context) error {
	select {
	case <-f.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
func (f *fakeInst) Exited() bool {
	select {
	case <-f.done:
		return true
	default:
		return false
	}
}
func (f *fakeInst) Status(context.Context) (engine.State, error) {
	if f.Exited() {
		return engine.StateExited, nil
	}
	return engine.StateRunning, nil
}
func (f *fakeInst) Stats(context.Context) (engine.Stats, error) { return engine.Stats{}, nil }

// fakeEngine finds the live processes in procs by VM id, as an engine
// finds them through its state file and pidfile.
type fakeEngine struct {
	mu    sync.Mutex
	procs map[string]*fakeInst
}

func (e *fakeEngine) Name() string { return "fake" }
func (e *fakeEngine) Features(context.Context) (engine.Features, error) {
	return engine.Features{Accel: engine.AccelTCG}, nil
}
func (e *fakeEngine) Start(context.Context, engine.Spec) (engine.Instance, error) {
	return nil, errors.New("the fake engine boots nothing")
}
func (e *fakeEngine) Attach(_ context.Context, spec engine.Spec) (engine.Instance, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if p := e.procs[spec.ID]; p != nil && !p.Exited() {
		return p, nil
	}
	return nil, fmt.Errorf("no process for %s: %w", spec.ID, errdefs.ErrNotFound)
}

func (e *fakeEngine) run(id string) *fakeInst {
	e.mu.Lock()
	defer e.mu.Unlock()
	p := newFakeInst(len(e.procs) + 100)
	e.procs[id] = p
	return p
}

// noKernels has no kernels: a VM that the fake engine would boot fails.
type noKernels struct{}

func (noKernels) Get(_ context.Context, name string) (api.Kernel, error) {
	return api.Kernel{}, fmt.Errorf("kernel %s: %w", name, errdefs.ErrNotFound)
}
func (noKernels) Pull(_ context.Context, req api.PullKernelRequest, _ func(api.Event)) (api.Kernel, error) {
	return api.Kernel{}, fmt.Errorf("kernel %s: %w", req.Ref, errdefs.ErrNotFound)
}

// testState returns a state directory with its store (closed at the end
// of the test) and a fake engine with no processes.
func testState(t *testing.T) (string, *store.Store, *fakeEngine) {
	dir := t.TempDir()
	db, err := store.Open(context.Background(), filepath.Join(dir, "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return dir, db, &fakeEngine{procs: map[string]*fakeInst{}}
}

// TestReconcile: a new daemon settles each VM from its recorded state and
// whether its engine process still runs.
func TestReconcile(t *testing.T) {
	ctx := context.Background()
	dir, db, eng := testState(t)
	type vmCase struct {
		state     string
		live      bool
		wantState string // "" means deleted
		wantProc  string // how the process ended; "" means it still runs
		reason    string // in the reason, when set
	}
	cases := map[string]vmCase{
		"creating-live":   {api.VMCreating, true, "", "killed", ""},
		"creating-dead":   {api.VMCreating, false, "", "", ""},
		"starting-live":   {api.VMStarting, true, api.VMRunning, "", ""},
		"starting-dead":   {api.VMStarting, false, api.VMStopped, "", "start it again"},
		"running-live":    {api.VMRunning, true, api.VMRunning, "", ""},
		"running-dead":    {api.VMRunning, false, api.VMStopped, "", "engine exited"},
		"stopping-live":   {api.VMStopping, true, api.VMStopped, "shutdown", ""},
		"stopping-dead":   {api.VMStopping, false, api.VMStopped, "", ""},
		"stopped-live":    {api.VMStopped, true, api.VMRunning, "", ""},
		"stopped-dead":    {api.VMStopped, false, api.VMStopped, "", ""},
		"created-dead":    {api.VMCreated, false, api.VMCreated, "", ""},
		"error-recovered": {api.VMError, true, api.VMRunning, "", ""},
	}
	ids := map[string]string{}
	procs := map[string]*fakeInst{}
	for name, c := range cases {
		id := newID()
		ids[name] = id
		v := store.VM{ID: id, Name: name, Image: "i", Kernel: "k", Engine: "fake", VCPU: 1, MemoryMiB: 64, State: c.state,
			Dir: filepath.Join(dir, "vms", id), CreatedAt: time.Now(), Net: api.NetNone}
		if err := os.MkdirAll(v.Dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := db.PutVM(ctx, v); err != nil {
			t.Fatal(err)
		}
		if c.live {
			procs[name] = eng.run(id)
		}
	}
	m, err := New(ctx, Config{
		DB: db, Engines: map[string]engine.Engine{"fake": eng}, Log: slog.New(slog.DiscardHandler),
		StopTimeout: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	// Close waits for the stop Reconcile finishes in the background.
	m.Close()

	for name, c := range cases {
		v, err := db.GetVM(ctx, ids[name])
		switch {
		case c.wantState == "":
			if !errdefs.IsNotFound(err) {
				t.Errorf("%s: record %+v %v, want it rolled back", name, v.State, err)
			}
			if _, err := os.Stat(filepath.Join(dir, "vms", ids[name])); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s: directory left: %v", name, err)
			}
		case err != nil:
			t.Errorf("%s: %v", name, err)
		case v.State != c.wantState || !strings.Contains(v.Reason, c.reason):
			t.Errorf("%s: state %s (%q), want %s (%q)", name, v.State, v.Reason, c.wantState, c.reason)
		}
		if p := procs[name]; p != nil && p.how != c.wantProc {
			t.Errorf("%s: engine process ended %q, want %q", name, p.how, c.wantProc)
		}
	}
}

// TestStopAndKillFindEngine: stop and kill end an engine process found in
// the VM's directory even when the record says the VM is stopped, and
// start adopts one rather than booting a second.
func TestStopAndKillFindEngine(t *testing.T) {
	ctx := context.Background()
	dir, db, eng := testState(t)
	m, err := New(ctx, Config{DB: db, Kernels: noKernels{}, Engines: map[string]engine.Engine{"fake": eng}, Log: slog.New(slog.DiscardHandler), StopTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	procs := map[string]*fakeInst{}
	for _, name := range []string{"s", "k", "a"} {
		v := store.VM{ID: newID(), Name: name, Image: "i", Kernel: "k", Engine: "fake", VCPU: 1, MemoryMiB: 64, State: api.VMStopped,
			Dir: filepath.Join(dir, "vms", name), CreatedAt: time.Now(), Net: api.NetNone}
		if err := db.PutVM(ctx, v); err != nil {
			t.Fatal(err)
		}
		procs[name] = eng.run(v.ID)
	}
	if r, err := m.Stop(ctx, "s"); err != nil || r.Method == "already-stopped" || !procs["s"].Exited() {
		t.Errorf("stop: %+v %v; process exited %v", r, err, procs["s"].Exited())
	}
	if r, err := m.Kill(ctx, "k"); err != nil || r.Method != "killed" || procs["k"].how != "killed" {
		t.Errorf("kill: %+v %v; process ended %q", r, err, procs["k"].how)
	}
	if v, err := m.Start(ctx, "a", nil); err != nil || v.State != api.VMRunning || procs["a"].Exited() {
		t.Errorf("start: %+v %v; process exited %v", v.State, err, procs["a"].Exited())
	}
}
