package vm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/agentproto"
	"github.com/bangervm/banger/internal/engine"
	"github.com/bangervm/banger/internal/store"
)

// healthOnly is a guest agent that answers health checks only.
type healthOnly struct{}

var errNotHere = errors.New("not in this test")

func (healthOnly) Health(context.Context) (agentproto.Info, error) { return agentproto.Info{}, nil }
func (healthOnly) Stats(context.Context) (agentproto.Stats, error) {
	return agentproto.Stats{}, errNotHere
}
func (healthOnly) Start(context.Context, agentproto.ExecRequest, io.Writer, io.Writer) (agentproto.GuestProcess, error) {
	return nil, errNotHere
}
func (healthOnly) Open(context.Context, string) (io.ReadCloser, agentproto.FileInfo, error) {
	return nil, agentproto.FileInfo{}, errNotHere
}
func (healthOnly) Create(context.Context, string, fs.FileMode) (agentproto.PendingFile, error) {
	return nil, errNotHere
}
func (healthOnly) Shutdown(context.Context) error { return errNotHere }
func (healthOnly) PowerOff()                      {}

// agentInst is a running engine process whose agent channel, like the
// real engines', takes one client at a time: a second dial while one is
// open fails.
type agentInst struct {
	*fakeInst
	mu    sync.Mutex
	busy  bool
	dials int
}

func (a *agentInst) DialAgent(ctx context.Context) (net.Conn, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.busy {
		return nil, fmt.Errorf("agent channel already in use: %w", errdefs.ErrUnavailable)
	}
	a.busy, a.dials = true, a.dials+1
	host, guest := net.Pipe()
	srv := &agentproto.Server{Handler: healthOnly{}, AgentVersion: "test", Logger: slog.New(slog.DiscardHandler)}
	go srv.ServeConn(context.Background(), guest)
	// The handshake takes a moment, as over a real channel: callers
	// arriving meanwhile must wait for this session, not dial again.
	time.Sleep(50 * time.Millisecond)
	return host, nil
}

var _ engine.Instance = (*agentInst)(nil)

// runningVM returns a manager with one VM, recorded running, and its
// handle, for the test to give an engine instance.
func runningVM(t *testing.T, name string) (*Manager, *handle) {
	t.Helper()
	ctx := context.Background()
	dir, db, eng := testState(t)
	v := store.VM{ID: newID(), Name: name, Image: "i", Kernel: "k", Engine: "fake", VCPU: 1, MemoryMiB: 64, State: api.VMRunning,
		Dir: filepath.Join(dir, "vms", name), CreatedAt: time.Now(), Net: api.NetNone}
	if err := db.PutVM(ctx, v); err != nil {
		t.Fatal(err)
	}
	m, err := New(ctx, Config{DB: db, Engines: map[string]engine.Engine{"fake": eng}, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m, m.handle(v.ID)
}

// runs makes inst the VM's engine instance, as a daemon that did not
// start it (after a restart) finds it, and kills it after the test.
func runs(t *testing.T, h *handle, inst engine.Instance) {
	h.mu.Lock()
	h.inst = inst
	h.mu.Unlock()
	t.Cleanup(func() { inst.Kill() })
}

// TestAgentSharedAfterRestart: commands arriving together at a VM this
// daemon has not talked to yet (as right after a restart) share one agent
// session instead of racing for the engine's single channel.
func TestAgentSharedAfterRestart(t *testing.T) {
	ctx := context.Background()
	m, h := runningVM(t, "busy")
	inst := &agentInst{fakeInst: newFakeInst(7)}
	runs(t, h, inst)

	var wg sync.WaitGroup
	clients := make([]*agentproto.Client, 8)
	errs := make([]error, 8)
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			clients[i], _, errs[i] = m.Agent(ctx, "busy")
			if errs[i] == nil {
				_, errs[i] = clients[i].Health(ctx)
			}
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("command %d: %v", i, err)
		} else if clients[i] != clients[0] {
			t.Errorf("command %d got a session of its own", i)
		}
	}
	if inst.dials != 1 {
		t.Errorf("%d dials of the agent channel, want 1", inst.dials)
	}
}

// TestAgentNotReusedAcrossInstances: a VM whose engine instance changed
// (it was stopped and started, or its engine died and it was started
// again before the exit was noticed) never gets the previous boot's agent
// session, even one that has not noticed yet that it is dead: commands
// would go to an agent that is gone and hang.
func TestAgentNotReusedAcrossInstances(t *testing.T) {
	ctx := context.Background()
	m, h := runningVM(t, "again")
	first := &agentInst{fakeInst: newFakeInst(7)}
	runs(t, h, first)
	old, _, err := m.Agent(ctx, "again")
	if err != nil {
		t.Fatal(err)
	}

	// The next boot's instance, set as a start that does not go through
	// the handle's helpers would: the old session is still open.
	second := &agentInst{fakeInst: newFakeInst(8)}
	runs(t, h, second)
	c, _, err := m.Agent(ctx, "again")
	if err != nil {
		t.Fatal(err)
	}
	if c == old || second.dials != 1 {
		t.Fatalf("the new instance got the previous boot's session (%d dials of its channel)", second.dials)
	}
	select {
	case <-old.Done():
	default:
		t.Error("the previous boot's session was left open")
	}
	if _, err := c.Health(ctx); err != nil {
		t.Error(err)
	}

	// Setting an instance through the handle closes a session of another.
	third := &agentInst{fakeInst: newFakeInst(9)}
	defer third.Kill()
	h.mu.Lock()
	h.setInstLocked(third)
	h.mu.Unlock()
	select {
	case <-c.Done():
	default:
		t.Error("a session of the replaced instance was left open")
	}
}

// endless is a guest agent whose processes run until the session ends.
type endless struct{ healthOnly }

type endlessProc struct{ done chan struct{} }

func (endless) Start(ctx context.Context, _ agentproto.ExecRequest, _, _ io.Writer) (agentproto.GuestProcess, error) {
	p := &endlessProc{done: make(chan struct{})}
	context.AfterFunc(ctx, func() { close(p.done) })
	return p, nil
}

func (p *endlessProc) Stdin() io.WriteCloser           { return nopWriteCloser{} }
func (p *endlessProc) Resize(uint16, uint16) error     { return nil }
func (p *endlessProc) Signal(sig syscall.Signal) error { return nil }
func (p *endlessProc) Wait() (agentproto.ExitStatus, error) {
	<-p.done
	return agentproto.ExitStatus{Code: 137}, nil
}

type nopWriteCloser struct{}

func (nopWriteCloser) Write(b []byte) (int, error) { return len(b), nil }
func (nopWriteCloser) Close() error                { return nil }

// droppingInst is an engine instance whose agent channel can be cut, as
// when the guest's side goes away under a running command; the channel
// is free again once its client hangs up.
type droppingInst struct {
	*fakeInst
	mu    sync.Mutex
	guest net.Conn
	dials int
}

func (d *droppingInst) DialAgent(ctx context.Context) (net.Conn, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.dials++
	host, guest := net.Pipe()
	d.guest = guest
	srv := &agentproto.Server{Handler: endless{}, AgentVersion: "test", Logger: slog.New(slog.DiscardHandler)}
	go srv.ServeConn(context.Background(), guest)
	return host, nil
}

func (d *droppingInst) cut() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.guest.Close()
}

// TestExecEndsWithSession: a command running over the shared agent
// session ends with an error when the session ends under it, instead of
// waiting forever, and the next command gets a new session.
func TestExecEndsWithSession(t *testing.T) {
	ctx := context.Background()
	m, h := runningVM(t, "cut")
	inst := &droppingInst{fakeInst: newFakeInst(7)}
	runs(t, h, inst)
	c, _, err := m.Agent(ctx, "cut")
	if err != nil {
		t.Fatal(err)
	}
	p, err := c.Start(ctx, agentproto.ExecRequest{Argv: []string{"sleep", "600"}}, agentproto.ExecIO{})
	if err != nil {
		t.Fatal(err)
	}
	inst.cut()
	if st, err := p.Wait(); err == nil {
		t.Fatalf("exec on a session that ended: exit %+v, no error", st)
	}
	c2, _, err := m.Agent(ctx, "cut")
	if err != nil {
		t.Fatal(err)
	}
	if c2 == c || inst.dials != 2 {
		t.Fatalf("after the session ended: %d dials, same session %v", inst.dials, c2 == c)
	}
	if _, err := c2.Health(ctx); err != nil {
		t.Error(err)
	}
}
