// Package vm is the VM lifecycle: create, start, stop, kill, delete,
// exec, logs and stats, and reconciliation after a daemon restart. It
// composes the image and kernel stores, an engine and the guest agent.
//
// A VM is a directory under the state dir (its disk, its boot initrd and
// the engine's files) plus a record in the state store. The record and the
// directory name exist before anything else is made, and every lifecycle
// operation records what it is about to do (creating, starting, stopping)
// before it acts, so a daemon killed at any step leaves enough on disk for
// the next one to finish or undo it (see Reconcile). Each VM has a lock:
// one lifecycle operation at a time per VM, any number across VMs.
//
// Files: manager.go (the Manager, queries), create.go, lifecycle.go
// (start, stop, kill), teardown.go (stopped and deleted VMs, exits),
// reconcile.go (after a restart), agentconn.go (the one agent session per
// VM), initrd.go (boot initrd), network.go, ssh.go, ports.go, idle.go.
package vm

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/agentproto"
	"github.com/bangervm/banger/internal/config"
	"github.com/bangervm/banger/internal/consolelog"
	"github.com/bangervm/banger/internal/engine"
	"github.com/bangervm/banger/internal/guestdata"
	"github.com/bangervm/banger/internal/paths"
	"github.com/bangervm/banger/internal/sshconf"
	"github.com/bangervm/banger/internal/store"
	"github.com/bangervm/banger/internal/termtext"
	"github.com/bangervm/banger/internal/vmtemplate"
)

// Images is what the manager needs of the image store.
type Images interface {
	Get(ctx context.Context, name string) (api.Image, error)
	Pull(ctx context.Context, req api.PullImageRequest, progress func(api.Event)) (api.Image, error)
}

// Kernels is what the manager needs of the kernel store.
type Kernels interface {
	Get(ctx context.Context, name string) (api.Kernel, error)
	Pull(ctx context.Context, req api.PullKernelRequest, progress func(api.Event)) (api.Kernel, error)
}

// Config wires a Manager.
type Config struct {
	Layout  paths.Layout
	DB      *store.Store
	Images  Images
	Kernels Kernels
	// Engines are the engines VMs can run on, by name; Choose picks one
	// for a new VM from the --engine flag (see engine.Choose).
	Engines  map[string]engine.Engine
	Choose   func(flag string) (name, reason string, err error)
	Settings config.Config
	// AgentBinary is the static banger-agent put into every VM at boot.
	AgentBinary string
	Log         *slog.Logger
	// BootTimeout bounds the wait for the guest agent after the engine
	// started; 0 means 90 s (software emulation on a busy host is slow).
	BootTimeout time.Duration
	// StopTimeout bounds each step of a graceful stop; 0 means 10 s.
	StopTimeout time.Duration
	// AutoStop, when positive, stops VMs idle that long (see StopIdle).
	AutoStop time.Duration
	// Network is banger's bridge and firewall; nil when the daemon cannot
	// set them up (not root): VMs then get no NIC.
	Network *Network
	// NetworkErr says why Network is nil, for errors shown to users.
	NetworkErr error
	// SSH is banger's ssh directory (client key, known_hosts); nil turns
	// SSH access off.
	SSH *sshconf.Dir
	// Templates is where VM templates are kept; nil boots every VM cold.
	Templates *vmtemplate.Store
}

// Manager runs VMs. It is safe for concurrent use. Close it before the
// store: it owns goroutines (exit watchers, the idle stopper, a stop
// finished after a restart) that write to the store.
type Manager struct {
	cfg Config
	log *slog.Logger
	// templating maps the ids of templates being made to their
	// directory ("" before it exists). Guarded by mu.
	templating map[string]string

	// ctx is cancelled by Close; wg counts the goroutines Close waits for.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu  sync.Mutex
	vms map[string]*handle // by VM id
	// The agent's initramfs archive, and the binary it was built from.
	agentKey  string
	agentCPIO []byte
	// addrs are running VMs' addresses, for DNS.
	addrs addrs
	// netMu serialises handing out address slots.
	netMu sync.Mutex
	// fwd runs the host side of port forwards.
	fwd forwarder
}

// handle is the daemon's runtime view of one VM.
type handle struct {
	lock sync.Mutex // held by lifecycle operations

	// dial is a one-slot semaphore held while the agent session is being
	// made: the engine's agent channel takes one client, so callers that
	// find no session wait for the one being made and then share it.
	dial chan struct{}

	mu       sync.Mutex // guards the fields below
	inst     engine.Instance
	agent    *agentproto.Client
	agentOf  engine.Instance // the instance agent was made with
	stopping bool            // a stop/kill by us is under way: exits are expected
	// sessions are the exec and copy sessions in flight, lastActive when
	// the VM was last seen in use (see StopIdle).
	sessions   int
	lastActive time.Time
	cpuPrev    guestdata.CPU // the guest's CPU counters at the last idle check
}

// spec is what a VM was created from, kept in its record.
type spec struct {
	ImageRootFS string          `json:"imageRootfs"`
	Config      api.ImageConfig `json:"config"`
}

// New returns a manager and reconciles the recorded VMs with what still
// runs (see Reconcile).
func New(ctx context.Context, cfg Config) (*Manager, error) {
	if cfg.BootTimeout == 0 {
		cfg.BootTimeout = 90 * time.Second
	}
	if cfg.StopTimeout == 0 {
		cfg.StopTimeout = 10 * time.Second
	}
	m := &Manager{cfg: cfg, log: cfg.Log, vms: map[string]*handle{}}
	m.ctx, m.cancel = context.WithCancel(context.WithoutCancel(ctx))
	if err := os.MkdirAll(m.vmsDir(), 0o700); err != nil {
		return nil, err
	}
	m.Reconcile(ctx)
	m.cleanTemplates(ctx)
	if cfg.AutoStop > 0 {
		m.spawn(func(ctx context.Context) { m.StopIdle(ctx, cfg.AutoStop) })
	}
	m.DeleteExpired(ctx, time.Now())
	m.spawn(m.expireLoop)
	return m, nil
}

// Close stops the manager's goroutines and waits for them, and closes the
// agent sessions. VMs keep running. Call it before closing the store.
func (m *Manager) Close() error {
	m.cancel()
	m.wg.Wait()
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, h := range m.vms {
		h.mu.Lock()
		h.closeAgentLocked()
		h.mu.Unlock()
	}
	return nil
}

// spawn runs f in a goroutine that Close cancels (through f's ctx) and
// waits for.
func (m *Manager) spawn(f func(ctx context.Context)) {
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		f(m.ctx)
	}()
}

func (m *Manager) vmsDir() string { return filepath.Join(m.cfg.Layout.State, "vms") }

func (m *Manager) handle(id string) *handle {
	m.mu.Lock()
	defer m.mu.Unlock()
	h := m.vms[id]
	if h == nil {
		h = &handle{dial: make(chan struct{}, 1)}
		m.vms[id] = h
	}
	return h
}

func (m *Manager) forget(id string) {
	m.mu.Lock()
	delete(m.vms, id)
	m.mu.Unlock()
}

func (m *Manager) toAPI(v store.VM) api.VM {
	var sp spec
	json.Unmarshal([]byte(v.SpecJSON), &sp)
	out := api.VM{
		ID: v.ID, Name: v.Name, State: v.State, Reason: v.Reason, Image: v.Image, Kernel: v.Kernel,
		Engine: v.Engine, VCPU: v.VCPU, MemoryMiB: v.MemoryMiB, DiskBytes: v.DiskBytes, Dir: v.Dir,
		Config: sp.Config, CreatedAt: v.CreatedAt, Net: v.Net, Workspace: v.Workspace, Labels: v.Labels,
		StartedFrom: startedFrom(v.Dir),
	}
	if !v.ExpiresAt.IsZero() {
		t := v.ExpiresAt
		out.ExpiresAt = &t
	}
	if a, ok := m.vmAddr(v); ok {
		out.IP = a.String()
	}
	out.Forwards = m.forwardsOf(context.Background(), v)
	if !v.StartedAt.IsZero() && v.State == api.VMRunning {
		t := v.StartedAt
		out.StartedAt = &t
	}
	m.mu.Lock()
	h := m.vms[v.ID]
	m.mu.Unlock()
	var inst engine.Instance
	if h != nil {
		h.mu.Lock()
		inst = h.inst
		h.mu.Unlock()
	}
	if inst != nil && v.State == api.VMRunning {
		out.PID = inst.PID()
		if c := h.session(); c != nil {
			out.AgentVersion = c.AgentVersion()
		}
		if why := m.pauseReason(context.Background(), inst); why != "" {
			out.State, out.Reason = api.VMPaused, why+": free space, then banger vm start "+v.Name+" resumes it (or stop, kill or delete it)"
		}
	}
	if e, err := m.engine(v.Engine); err == nil {
		if f, err := e.Features(context.Background()); err == nil {
			out.Accel = string(f.Accel)
		}
	}
	return out
}

// pauseReason says why the engine paused the VM, "" when it did not (or
// cannot say: an engine that does not answer in time is not called paused).
func (m *Manager) pauseReason(ctx context.Context, inst engine.Instance) string {
	p, ok := inst.(engine.Pauser)
	if !ok || inst.Exited() {
		return ""
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	why, err := p.PauseReason(ctx)
	if err != nil {
		return ""
	}
	return why
}

// List returns every VM carrying all labels of sel (every VM when sel
// is empty).
func (m *Manager) List(ctx context.Context, sel map[string]string) ([]api.VM, error) {
	vs, err := m.cfg.DB.ListVMs(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]api.VM, 0, len(vs))
	for _, v := range vs {
		if api.MatchLabels(v.Labels, sel) {
			out = append(out, m.toAPI(v))
		}
	}
	return out, nil
}

// Get returns one VM by name (exact), id, or unique id prefix.
func (m *Manager) Get(ctx context.Context, ref string) (api.VM, error) {
	v, err := m.cfg.DB.GetVM(ctx, ref)
	if err != nil {
		return api.VM{}, err
	}
	return m.toAPI(v), nil
}

// engine returns the engine a VM runs on.
func (m *Manager) engine(name string) (engine.Engine, error) {
	e, ok := m.cfg.Engines[name]
	if !ok {
		return nil, fmt.Errorf("engine %q is not available on this host (see banger engine): %w", name, errdefs.ErrFailedPrecondition)
	}
	return e, nil
}

func (m *Manager) checkSize(vcpu, memMiB int) error {
	if vcpu < 1 || vcpu > runtime.NumCPU() {
		return fmt.Errorf("vcpu %d: this host has %d CPUs, use 1 to %d: %w", vcpu, runtime.NumCPU(), runtime.NumCPU(), errdefs.ErrInvalidArgument)
	}
	if memMiB < 64 {
		return fmt.Errorf("memory %d MiB: use at least 64: %w", memMiB, errdefs.ErrInvalidArgument)
	}
	if host, err := engine.HostMemMiB(); err == nil && int64(memMiB) > host {
		return fmt.Errorf("memory %d MiB is more than the host's %d MiB of RAM: choose a smaller --memory: %w", memMiB, host, errdefs.ErrInvalidArgument)
	}
	return nil
}

// Update changes a stopped VM's vCPUs and memory.
func (m *Manager) Update(ctx context.Context, ref string, req api.UpdateVMRequest) (api.VM, error) {
	v, h, unlock, err := m.lockVM(ctx, ref)
	if err != nil {
		return api.VM{}, err
	}
	defer unlock()
	if m.running(ctx, v, h) {
		return api.VM{}, fmt.Errorf("vm %s is running: stop it before changing its size: %w", v.Name, errdefs.ErrFailedPrecondition)
	}
	if req.VCPU != 0 {
		v.VCPU = req.VCPU
	}
	if req.MemoryMiB != 0 {
		v.MemoryMiB = req.MemoryMiB
	}
	if err := m.checkSize(v.VCPU, v.MemoryMiB); err != nil {
		return api.VM{}, err
	}
	if err := m.cfg.DB.UpdateVM(ctx, v); err != nil {
		return api.VM{}, err
	}
	return m.toAPI(v), nil
}

// ConsoleLog returns the path of a VM's console log.
func (m *Manager) ConsoleLog(ctx context.Context, ref string) (string, api.VM, error) {
	v, err := m.cfg.DB.GetVM(ctx, ref)
	if err != nil {
		return "", api.VM{}, err
	}
	return filepath.Join(v.Dir, "console.log"), m.toAPI(v), nil
}

// Stats returns the engine's and the guest's view of a running VM.
func (m *Manager) Stats(ctx context.Context, ref string) (api.VMStats, error) {
	v, err := m.cfg.DB.GetVM(ctx, ref)
	if err != nil {
		return api.VMStats{}, err
	}
	h := m.handle(v.ID)
	h.mu.Lock()
	inst := h.inst
	h.mu.Unlock()
	if inst == nil {
		return api.VMStats{}, fmt.Errorf("vm %s is not running: %w", v.Name, errdefs.ErrFailedPrecondition)
	}
	es, err := inst.Stats(ctx)
	if err != nil {
		return api.VMStats{}, err
	}
	out := api.VMStats{SampledAt: time.Now().UTC(), CPUSeconds: es.CPUTime().Seconds(), HostRSSBytes: es.RSSBytes}
	if c, err := m.connectAgent(ctx, &v, h, 5*time.Second); err == nil {
		if gs, err := guestStats(ctx, c); err != nil {
			m.log.Warn("guest stats", "vm", v.ID, "err", err)
		} else {
			g := &api.GuestStats{
				MemTotalBytes: gs.MemTotal, MemAvailableBytes: gs.MemAvailable, Load1: gs.Load1, Load5: gs.Load5, Load15: gs.Load15,
				UptimeSeconds: gs.Uptime.Seconds(), RootTotalBytes: gs.Root.Total, RootUsedBytes: gs.Root.Used,
			}
			for _, b := range gs.Block {
				g.DiskReadBytes += b.In
				g.DiskWriteBytes += b.Out
			}
			for _, n := range gs.Net {
				g.NetRxBytes += n.In
				g.NetTxBytes += n.Out
			}
			out.Guest = g
		}
	}
	return out, nil
}

// consoleTail returns the end of the guest console, to explain a failed boot.
func (m *Manager) consoleTail(inst engine.Instance, dir string) string {
	path := filepath.Join(dir, "console.log")
	if cl, ok := inst.(engine.ConsoleLogger); ok {
		path = cl.ConsoleLog()
	}
	b, err := consolelog.Tail(path, 64<<10)
	if err != nil || len(b) == 0 {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 15 {
		lines = lines[len(lines)-15:]
	}
	return "\nguest console (last lines):\n  " + termtext.Escape(strings.Join(lines, "\n  "))
}

// SetWorkspace records the guest path of the repository shipped into a VM.
func (m *Manager) SetWorkspace(ctx context.Context, ref, path string) (api.VM, error) {
	v, _, unlock, err := m.lockVM(ctx, ref)
	if err != nil {
		return api.VM{}, err
	}
	defer unlock()
	if path != "" && !filepath.IsAbs(path) {
		return api.VM{}, fmt.Errorf("workspace path %q must be absolute: %w", path, errdefs.ErrInvalidArgument)
	}
	v.Workspace = path
	if err := m.cfg.DB.UpdateVM(ctx, v); err != nil {
		return api.VM{}, err
	}
	return m.toAPI(v), nil
}
