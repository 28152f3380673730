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

// TestAgentSharedAfterRestart: commands arriving together at a VM this
// daemon has not talked to yet (as right after a restart) share one agent
// session instead of racing for the engine's single channel.
func TestAgentSharedAfterRestart(t *testing.T) {
	ctx := context.Background()
	dir, db, eng := testState(t)
	v := store.VM{ID: newID(), Name: "busy", Image: "i", Kernel: "k", Engine: "fake", VCPU: 1, MemoryMiB: 64, State: api.VMRunning,
		Dir: filepath.Join(dir, "vms", "busy"), CreatedAt: time.Now(), Net: api.NetNone}
	if err := db.PutVM(ctx, v); err != nil {
		t.Fatal(err)
	}
	m, err := New(ctx, Config{DB: db, Engines: map[string]engine.Engine{"fake": eng}, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	inst := &agentInst{fakeInst: newFakeInst(7)}
	defer inst.Kill()
	h := m.handle(v.ID)
	h.mu.Lock()
	h.inst = inst
	h.mu.Unlock()

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
