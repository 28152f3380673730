// Package vm is the VM lifecycle: create, start, stop, kill, delete,
// exec, logs and stats, and reconciliation after a daemon restart. It
// composes the image and kernel stores, an engine and the guest agent.
//
// A VM is a directory under the state dir (its disk, its boot initrd and
// the engine's files) plus a record in the state store. The record and the
// directory name exist before anything else is made, so a crash at any
// point leaves enough on disk to tear the VM down. Each VM has a lock: one
// lifecycle operation at a time per VM, any number across VMs.
package vm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
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
	"github.com/bangervm/banger/internal/agent"
	"github.com/bangervm/banger/internal/agentproto"
	"github.com/bangervm/banger/internal/config"
	"github.com/bangervm/banger/internal/consolelog"
	"github.com/bangervm/banger/internal/engine"
	"github.com/bangervm/banger/internal/guestdata"
	"github.com/bangervm/banger/internal/hostcmd"
	"github.com/bangervm/banger/internal/names"
	"github.com/bangervm/banger/internal/network"
	"github.com/bangervm/banger/internal/paths"
	"github.com/bangervm/banger/internal/sshconf"
	"github.com/bangervm/banger/internal/store"
	"github.com/bangervm/banger/internal/termtext"
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
	// Network is banger's bridge and firewall; nil when the daemon cannot
	// set them up (not root): VMs then get no NIC.
	Network *Network
	// NetworkErr says why Network is nil, for errors shown to users.
	NetworkErr error
	// SSH is banger's ssh directory (client key, known_hosts); nil turns
	// SSH access off.
	SSH *sshconf.Dir
}

// Manager runs VMs. It is safe for concurrent use.
type Manager struct {
	cfg Config
	log *slog.Logger

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

	mu       sync.Mutex // guards the fields below
	inst     engine.Instance
	agent    *agentproto.Client
	stopping bool // a stop/kill by us is under way: exits are expected
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

// New returns a manager and reconciles the VMs recorded as running with
// what still runs (see Reconcile).
func New(ctx context.Context, cfg Config) (*Manager, error) {
	if cfg.BootTimeout == 0 {
		cfg.BootTimeout = 90 * time.Second
	}
	if cfg.StopTimeout == 0 {
		cfg.StopTimeout = 10 * time.Second
	}
	m := &Manager{cfg: cfg, log: cfg.Log, vms: map[string]*handle{}}
	if err := os.MkdirAll(m.vmsDir(), 0o700); err != nil {
		return nil, err
	}
	m.Reconcile(ctx)
	return m, nil
}

func (m *Manager) vmsDir() string { return filepath.Join(m.cfg.Layout.State, "vms") }

func (m *Manager) handle(id string) *handle {
	m.mu.Lock()
	defer m.mu.Unlock()
	h := m.vms[id]
	if h == nil {
		h = &handle{}
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
		Config: sp.Config, CreatedAt: v.CreatedAt, Net: v.Net, Workspace: v.Workspace,
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
	if h != nil {
		h.mu.Lock()
		if h.inst != nil && v.State == api.VMRunning {
			out.PID = h.inst.PID()
		}
		h.mu.Unlock()
	}
	if e, err := m.engine(v.Engine); err == nil {
		if f, err := e.Features(context.Background()); err == nil {
			out.Accel = string(f.Accel)
		}
	}
	return out
}

// List returns every VM.
func (m *Manager) List(ctx context.Context) ([]api.VM, error) {
	vs, err := m.cfg.DB.ListVMs(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]api.VM, 0, len(vs))
	for _, v := range vs {
		out = append(out, m.toAPI(v))
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

// resolveImage finds the image, pulling the configured default on first use.
func (m *Manager) resolveImage(ctx context.Context, name string, progress func(api.Event)) (api.Image, error) {
	if name == "" {
		name = m.cfg.Settings.DefaultImage
	}
	img, err := m.cfg.Images.Get(ctx, name)
	if errdefs.IsNotFound(err) && name == m.cfg.Settings.DefaultImage {
		progress(api.Event{Phase: "image", Message: "pulling default image " + name})
		return m.cfg.Images.Pull(ctx, api.PullImageRequest{Ref: name}, progress)
	}
	if errdefs.IsNotFound(err) {
		return img, fmt.Errorf("image %q not found: pull it first (banger image pull REF --name %s) or see banger image list: %w", name, name, errdefs.ErrNotFound)
	}
	return img, err
}

// resolveKernel finds the kernel, pulling the configured default on first use.
func (m *Manager) resolveKernel(ctx context.Context, name string, progress func(api.Event)) (api.Kernel, error) {
	if name == "" {
		name = m.cfg.Settings.DefaultKernel
	}
	k, err := m.cfg.Kernels.Get(ctx, name)
	if errdefs.IsNotFound(err) && name == m.cfg.Settings.DefaultKernel {
		progress(api.Event{Phase: "kernel", Message: "pulling default kernel " + name})
		return m.cfg.Kernels.Pull(ctx, api.PullKernelRequest{Ref: name}, progress)
	}
	if errdefs.IsNotFound(err) {
		return k, fmt.Errorf("kernel %q not found: import or pull it first (banger kernel pull debian-cloud) or see banger kernel list: %w", name, errdefs.ErrNotFound)
	}
	return k, err
}

// Create makes a VM and, unless req.NoStart, boots it. On any failure
// everything made so far is removed: no record, no directory, no process.
func (m *Manager) Create(ctx context.Context, req api.CreateVMRequest, progress func(api.Event)) (api.VM, error) {
	if progress == nil {
		progress = func(api.Event) {}
	}
	d := m.cfg.Settings.VM
	if req.VCPU == 0 {
		req.VCPU = d.VCPU
	}
	if req.MemoryMiB == 0 {
		req.MemoryMiB = d.MemoryMB
	}
	if req.DiskBytes == 0 {
		n, err := config.ParseSize(d.DiskSize)
		if err != nil {
			return api.VM{}, fmt.Errorf("config vm.disk_size: %w", err)
		}
		req.DiskBytes = n
	}
	if req.DiskBytes < 64<<20 {
		return api.VM{}, fmt.Errorf("disk size %d bytes: use at least 64M: %w", req.DiskBytes, errdefs.ErrInvalidArgument)
	}
	if err := m.checkSize(req.VCPU, req.MemoryMiB); err != nil {
		return api.VM{}, err
	}
	if req.Name != "" {
		if err := names.Validate("vm", req.Name); err != nil {
			return api.VM{}, err
		}
		if _, err := m.cfg.DB.GetVM(ctx, req.Name); err == nil {
			return api.VM{}, fmt.Errorf("vm %q exists: choose another --name or delete it (banger vm delete %s): %w", req.Name, req.Name, errdefs.ErrAlreadyExists)
		}
	}
	mode, err := m.netMode(req.Net)
	if err != nil {
		return api.VM{}, err
	}
	engName, _, err := m.cfg.Choose(req.Engine)
	if err != nil {
		return api.VM{}, err
	}
	img, err := m.resolveImage(ctx, req.Image, progress)
	if err != nil {
		return api.VM{}, err
	}
	kname := req.Kernel
	if kname == "" {
		kname = img.Kernel
	}
	k, err := m.resolveKernel(ctx, kname, progress)
	if err != nil {
		return api.VM{}, err
	}
	spJSON, _ := json.Marshal(spec{ImageRootFS: img.RootFS, Config: img.Config})
	rec := store.VM{
		ID: newID(), Name: req.Name, Image: img.Name, Kernel: k.Name, Engine: engName,
		VCPU: req.VCPU, MemoryMiB: req.MemoryMiB, DiskBytes: req.DiskBytes, State: api.VMCreated,
		SpecJSON: string(spJSON), CreatedAt: time.Now(), Net: mode,
	}
	rec.Dir = filepath.Join(m.vmsDir(), rec.ID)
	// The record, with the directory's name and the address slot, exists
	// before the directory, the tap and the rules.
	m.netMu.Lock()
	if mode != api.NetNone {
		if rec.NetIndex, err = m.cfg.DB.FreeNetIndex(ctx); err == nil && rec.NetIndex-1 > network.MaxIndex {
			err = fmt.Errorf("all %d addresses of %s are taken: delete some VMs: %w", network.MaxIndex+1, m.cfg.Network.Subnet, errdefs.ErrFailedPrecondition)
		}
	}
	for try := 0; err == nil; try++ {
		if req.Name == "" {
			rec.Name = friendlyName()
		}
		err = m.cfg.DB.PutVM(ctx, rec)
		if err == nil || req.Name != "" || !errdefs.IsAlreadyExists(err) || try > 20 {
			break
		}
	}
	m.netMu.Unlock()
	if err != nil {
		return api.VM{}, err
	}
	h := m.handle(rec.ID)
	h.lock.Lock()
	defer h.lock.Unlock()
	undo := func(cause error) (api.VM, error) {
		cleanup := context.WithoutCancel(ctx)
		err := errors.Join(m.teardown(cleanup, rec, h), m.netDown(cleanup, rec), m.unpin(rec), os.RemoveAll(rec.Dir), m.cfg.DB.DeleteVM(cleanup, rec.ID))
		m.forget(rec.ID)
		if err != nil {
			m.log.Warn("roll back vm", "vm", rec.ID, "err", err)
		}
		return api.VM{}, cause
	}
	progress(api.Event{Phase: "disk", Message: "creating disk"})
	if err := m.makeDisk(ctx, rec); err != nil {
		return undo(err)
	}
	if err := m.makeHostKey(rec); err != nil {
		return undo(err)
	}
	if !req.NoStart {
		if err := m.start(ctx, &rec, h, progress); err != nil {
			return undo(err)
		}
	}
	m.log.Info("vm created", "vm", rec.ID, "name", rec.Name, "image", rec.Image, "kernel", rec.Kernel, "started", !req.NoStart)
	return m.toAPI(rec), nil
}

// makeDisk creates the VM's own disk: a sparse file with an empty ext4,
// made in constant time whatever the size (lazy inode tables and journal).
func (m *Manager) makeDisk(ctx context.Context, v store.VM) error {
	if err := os.Mkdir(v.Dir, 0o700); err != nil {
		return fmt.Errorf("vm dir: %w", err)
	}
	empty := filepath.Join(v.Dir, "empty")
	if err := os.Mkdir(empty, 0o700); err != nil {
		return err
	}
	defer os.Remove(empty)
	disk := filepath.Join(v.Dir, DiskFile)
	f, err := os.OpenFile(disk, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("create disk: %w", err)
	}
	size := (v.DiskBytes + 4095) &^ 4095
	err = f.Truncate(size)
	f.Close()
	if err != nil {
		return fmt.Errorf("create disk: %w", err)
	}
	if err := hostcmd.Mke2fs(ctx, hostcmd.Mke2fsConfig{Dir: empty, Output: disk, SizeBytes: size, Label: "banger-rw"}); err != nil {
		return fmt.Errorf("format disk: %w", err)
	}
	return nil
}

// Files in a VM's directory besides the engine's own.
const (
	DiskFile   = "disk.ext4"  // the VM's own disk: overlay upper layer
	InitrdFile = "initrd.img" // kernel initrd + agent initramfs, made at each boot
)

// Start boots a stopped VM.
func (m *Manager) Start(ctx context.Context, ref string, progress func(api.Event)) (api.VM, error) {
	if progress == nil {
		progress = func(api.Event) {}
	}
	v, h, unlock, err := m.lockVM(ctx, ref)
	if err != nil {
		return api.VM{}, err
	}
	defer unlock()
	if m.alive(h) {
		return m.toAPI(v), nil
	}
	if err := m.start(ctx, &v, h, progress); err != nil {
		// The VM's disk holds user data: keep the VM, record why it failed.
		v.State, v.Reason = api.VMError, err.Error()
		m.cfg.DB.UpdateVM(context.WithoutCancel(ctx), v)
		return api.VM{}, err
	}
	return m.toAPI(v), nil
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

func (m *Manager) alive(h *handle) bool {
	h.mu.Lock()
	inst := h.inst
	h.mu.Unlock()
	if inst == nil {
		return false
	}
	st, err := inst.Status(context.Background())
	return err == nil && st != engine.StateExited
}

func (m *Manager) engineSpec(v store.VM, k api.Kernel, sp spec) engine.Spec {
	return engine.Spec{
		ID: v.ID, Dir: v.Dir, VCPU: v.VCPU, MemoryMiB: v.MemoryMiB,
		Kernel: k.Vmlinux, Initrd: filepath.Join(v.Dir, InitrdFile),
		Disks: []engine.Disk{{Path: sp.ImageRootFS, ReadOnly: true}, {Path: filepath.Join(v.Dir, DiskFile)}},
	}
}

// start boots v and waits until its agent answers. Caller holds h.lock.
// On failure the engine process is gone.
func (m *Manager) start(ctx context.Context, v *store.VM, h *handle, progress func(api.Event)) error {
	var sp spec
	json.Unmarshal([]byte(v.SpecJSON), &sp)
	k, err := m.cfg.Kernels.Get(ctx, v.Kernel)
	if err != nil {
		return fmt.Errorf("kernel of vm %s: %w", v.Name, err)
	}
	if _, err := os.Stat(sp.ImageRootFS); err != nil {
		return fmt.Errorf("image %s of vm %s: rootfs %s: %w", v.Image, v.Name, sp.ImageRootFS, errdefs.ErrNotFound)
	}
	netSpec, guestNet, err := m.netUp(ctx, *v)
	if err != nil {
		return err
	}
	sshCfg, err := m.sshBoot(*v)
	if err != nil {
		m.netDown(ctx, *v)
		return err
	}
	if err := m.writeInitrd(*v, k, sp, guestNet, sshCfg); err != nil {
		m.netDown(ctx, *v)
		return err
	}
	progress(api.Event{Phase: "boot", Message: "booting " + v.Name})
	es := m.engineSpec(*v, k, sp)
	es.Net = netSpec
	eng, err := m.engine(v.Engine)
	if err != nil {
		m.netDown(ctx, *v)
		return err
	}
	inst, err := eng.Start(ctx, es)
	if netSpec != nil && netSpec.TapFD != nil {
		netSpec.TapFD.Close() // the engine process has its own copy
	}
	if err != nil {
		m.netDown(ctx, *v)
		return fmt.Errorf("start vm %s: %w", v.Name, err)
	}
	h.mu.Lock()
	h.inst, h.stopping = inst, false
	h.mu.Unlock()
	if _, err := m.connectAgent(ctx, v, h, m.cfg.BootTimeout); err != nil {
		inst.Kill()
		inst.Wait(context.WithoutCancel(ctx))
		h.mu.Lock()
		h.inst = nil
		h.mu.Unlock()
		m.netDown(ctx, *v)
		return fmt.Errorf("vm %s did not boot: %w%s", v.Name, err, m.consoleTail(inst, v.Dir))
	}
	if a, ok := m.vmAddr(*v); ok {
		m.addrs.set(v.Name, a)
	}
	v.State, v.Reason, v.StartedAt = api.VMRunning, "", time.Now()
	if err := m.cfg.DB.UpdateVM(context.WithoutCancel(ctx), *v); err != nil {
		return err
	}
	go m.watch(v.ID, h, inst)
	m.openForwards(ctx, *v)
	m.log.Info("vm running", "vm", v.ID, "pid", inst.PID())
	return nil
}

// writeInitrd writes the VM's boot initrd: the kernel's initramfs (its
// modules), the agent archive and the boot configuration, each padded to a
// 512-byte boundary because the kernel looks for the next archive only at
// aligned offsets.
func (m *Manager) writeInitrd(v store.VM, k api.Kernel, sp spec, guestNet *agentproto.NetworkConfig, sshCfg *agentproto.SSHConfig) error {
	agentArchive, err := m.agentArchive()
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	if k.Initrd != "" {
		b, err := os.ReadFile(k.Initrd)
		if err != nil {
			return fmt.Errorf("kernel %s initrd: %w", k.Name, err)
		}
		buf.Write(b)
		pad(&buf)
	}
	buf.Write(agentArchive)
	pad(&buf)
	cfg := agentproto.BootConfig{
		Hostname: v.Name, Env: sp.Config.Env, Dir: sp.Config.WorkingDir, User: sp.Config.User,
		Cmd:     append(append([]string{}, sp.Config.Entrypoint...), sp.Config.Cmd...),
		Root:    &agentproto.RootConfig{Image: "/dev/vda", Disk: "/dev/vdb"},
		Network: guestNet,
		Init:    imageInit(sp.Config),
		SSH:     sshCfg,
	}
	if err := agent.WriteBootConfigArchive(&buf, cfg); err != nil {
		return err
	}
	tmp := filepath.Join(v.Dir, InitrdFile+".tmp")
	if err := os.WriteFile(tmp, buf.Bytes(), 0o600); err != nil {
		return fmt.Errorf("write initrd: %w", err)
	}
	return os.Rename(tmp, filepath.Join(v.Dir, InitrdFile))
}

// imageInit returns the image's own init when its command is one (as in
// images built to run systemd or busybox init): the agent then hands PID 1
// to it and keeps serving as a process. Other images, the usual case for
// OCI images, get the agent as init.
func imageInit(c api.ImageConfig) string {
	argv := append(append([]string{}, c.Entrypoint...), c.Cmd...)
	if len(argv) != 1 || !filepath.IsAbs(argv[0]) {
		return ""
	}
	switch filepath.Base(argv[0]) {
	case "init", "systemd":
		return argv[0]
	}
	return ""
}

func pad(b *bytes.Buffer) {
	if r := b.Len() % 512; r != 0 {
		b.Write(make([]byte, 512-r))
	}
}

// agentArchive returns the agent's initramfs archive, built once per agent
// binary (a new binary, after an upgrade, is noticed by size and mtime).
func (m *Manager) agentArchive() ([]byte, error) {
	if m.cfg.AgentBinary == "" {
		return nil, fmt.Errorf("banger-agent not found beside bangerd: install it (make install): %w", errdefs.ErrFailedPrecondition)
	}
	st, err := os.Stat(m.cfg.AgentBinary)
	if err != nil {
		return nil, fmt.Errorf("banger-agent: %w", err)
	}
	key := fmt.Sprintf("%s:%d:%d", m.cfg.AgentBinary, st.Size(), st.ModTime().UnixNano())
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.agentKey == key {
		return m.agentCPIO, nil
	}
	var buf bytes.Buffer
	if err := agent.WriteAgentArchive(&buf, m.cfg.AgentBinary); err != nil {
		return nil, err
	}
	m.agentKey, m.agentCPIO = key, buf.Bytes()
	return m.agentCPIO, nil
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

// connectAgent returns a live agent session, dialling and handshaking when
// there is none. While the guest boots, an engine process that exits ends
// the wait at once.
func (m *Manager) connectAgent(ctx context.Context, v *store.VM, h *handle, timeout time.Duration) (*agentproto.Client, error) {
	h.mu.Lock()
	inst, c := h.inst, h.agent
	h.mu.Unlock()
	if c != nil {
		select {
		case <-c.Done():
		default:
			return c, nil
		}
	}
	if inst == nil {
		return nil, fmt.Errorf("vm %s is not running: start it (banger vm start %s): %w", v.Name, v.Name, errdefs.ErrFailedPrecondition)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	exited := make(chan struct{})
	go func() {
		if inst.Wait(ctx) == nil {
			close(exited)
			cancel()
		}
	}()
	conn, err := inst.DialAgent(ctx)
	if err != nil {
		return nil, fmt.Errorf("agent channel: %w", err)
	}
	c, err = agentproto.Connect(ctx, conn, agentproto.ClientConfig{})
	if err != nil {
		// A dropped channel usually means the VM is going away: give
		// the process a moment to exit so the error says so.
		select {
		case <-exited:
			return nil, fmt.Errorf("the guest powered off or its kernel panicked before the agent answered: %w", errdefs.ErrFailedPrecondition)
		case <-time.After(time.Second):
		}
		return nil, fmt.Errorf("guest agent: %w", err)
	}
	h.mu.Lock()
	h.agent = c
	h.mu.Unlock()
	return c, nil
}

// watch notices a VM that stops without being asked (the guest powered
// off, the engine crashed) and records it.
func (m *Manager) watch(id string, h *handle, inst engine.Instance) {
	inst.Wait(context.Background())
	h.mu.Lock()
	expected := h.stopping || h.inst != inst
	if h.inst == inst {
		h.inst = nil
		if h.agent != nil {
			h.agent.Close()
			h.agent = nil
		}
	}
	h.mu.Unlock()
	if expected {
		return
	}
	h.lock.Lock()
	defer h.lock.Unlock()
	v, err := m.cfg.DB.GetVM(context.Background(), id)
	if err != nil || v.State != api.VMRunning {
		return
	}
	v.State, v.Reason = api.VMStopped, "the guest powered off or the engine exited"
	m.cfg.DB.UpdateVM(context.Background(), v)
	m.addrs.remove(v.Name)
	m.closeForwards(context.Background(), v)
	if err := m.netDown(context.Background(), v); err != nil {
		m.log.Warn("network teardown", "vm", id, "err", err)
	}
	os.Remove(filepath.Join(v.Dir, InitrdFile))
	m.log.Info("vm stopped by itself", "vm", id)
}

// Stop stops a VM with its data flushed: the agent syncs and unmounts and
// confirms, the guest powers off; only if that fails does the engine stop
// it (ACPI/QMP), and only as a last resort is it killed. The result says
// which path was taken.
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

func (m *Manager) stop(ctx context.Context, v *store.VM, h *handle) (string, error) {
	h.mu.Lock()
	inst := h.inst
	h.stopping = true
	h.mu.Unlock()
	method := "already-stopped"
	if inst != nil && m.alive(h) {
		method = m.stopInstance(ctx, v, h, inst)
	}
	m.markStopped(ctx, v, h)
	m.log.Info("vm stopped", "vm", v.ID, "method", method)
	return method, nil
}

func (m *Manager) stopInstance(ctx context.Context, v *store.VM, h *handle, inst engine.Instance) string {
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.cfg.StopTimeout)
	defer cancel()
	if c, err := m.connectAgent(sctx, v, h, m.cfg.StopTimeout); err == nil {
		if err := c.Shutdown(sctx); err == nil {
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
	inst.Kill()
	inst.Wait(context.WithoutCancel(ctx))
	return "killed"
}

func (m *Manager) markStopped(ctx context.Context, v *store.VM, h *handle) {
	h.mu.Lock()
	if h.agent != nil {
		h.agent.Close()
		h.agent = nil
	}
	h.inst = nil
	h.mu.Unlock()
	m.addrs.remove(v.Name)
	m.closeForwards(ctx, *v)
	if err := m.netDown(ctx, *v); err != nil {
		m.log.Warn("network teardown", "vm", v.ID, "err", err)
	}
	os.Remove(filepath.Join(v.Dir, InitrdFile))
	v.State, v.Reason = api.VMStopped, ""
	if err := m.cfg.DB.UpdateVM(context.WithoutCancel(ctx), *v); err != nil {
		m.log.Warn("record stop", "vm", v.ID, "err", err)
	}
}

// Kill stops a VM at once, without flushing the guest's data.
func (m *Manager) Kill(ctx context.Context, ref string) (api.StopResult, error) {
	v, h, unlock, err := m.lockVM(ctx, ref)
	if err != nil {
		return api.StopResult{}, err
	}
	defer unlock()
	h.mu.Lock()
	inst := h.inst
	h.stopping = true
	h.mu.Unlock()
	method := "already-stopped"
	if inst != nil {
		inst.Kill()
		inst.Wait(context.WithoutCancel(ctx))
		method = "killed"
	}
	m.markStopped(ctx, &v, h)
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
	if err := m.start(ctx, &v, h, progress); err != nil {
		v.State, v.Reason = api.VMError, err.Error()
		m.cfg.DB.UpdateVM(context.WithoutCancel(ctx), v)
		return api.VM{}, err
	}
	return m.toAPI(v), nil
}

// Delete removes a VM and everything it owns. A running VM is refused
// unless force, which kills it first.
func (m *Manager) Delete(ctx context.Context, ref string, force bool) error {
	v, h, unlock, err := m.lockVM(ctx, ref)
	if err != nil {
		return err
	}
	defer unlock()
	if m.alive(h) && !force {
		return fmt.Errorf("vm %s is running: stop it first (banger vm stop %s) or delete with --force: %w", v.Name, v.Name, errdefs.ErrFailedPrecondition)
	}
	m.closeForwards(ctx, v)
	// Every step runs; their errors are reported together.
	err = errors.Join(m.teardown(ctx, v, h), m.netDown(ctx, v), m.unpin(v), os.RemoveAll(v.Dir), m.cfg.DB.DeleteVM(context.WithoutCancel(ctx), v.ID))
	m.addrs.remove(v.Name)
	m.forget(v.ID)
	if err != nil {
		return fmt.Errorf("delete vm %s: %w", v.Name, err)
	}
	m.log.Info("vm deleted", "vm", v.ID, "name", v.Name)
	return nil
}

// teardown ends the VM's engine process, if any.
func (m *Manager) teardown(ctx context.Context, v store.VM, h *handle) error {
	h.mu.Lock()
	inst := h.inst
	h.stopping = true
	if h.agent != nil {
		h.agent.Close()
		h.agent = nil
	}
	h.inst = nil
	h.mu.Unlock()
	if inst == nil {
		// Perhaps a process this daemon never attached to.
		if e, err := m.engine(v.Engine); err == nil {
			if a, err := e.Attach(ctx, engine.Spec{ID: v.ID, Dir: v.Dir}); err == nil {
				inst = a
			}
		}
	}
	if inst == nil {
		return nil
	}
	if err := inst.Kill(); err != nil && !errdefs.IsNotFound(err) {
		return err
	}
	return inst.Wait(context.WithoutCancel(ctx))
}

// Prune deletes every VM that is not running.
func (m *Manager) Prune(ctx context.Context) (api.PruneVMsResult, error) {
	vs, err := m.cfg.DB.ListVMs(ctx)
	if err != nil {
		return api.PruneVMsResult{}, err
	}
	res := api.PruneVMsResult{Deleted: []string{}}
	var errs []error
	for _, v := range vs {
		if v.State == api.VMRunning {
			continue
		}
		if err := m.Delete(ctx, v.ID, false); err != nil {
			if !errdefs.IsFailedPrecondition(err) {
				errs = append(errs, err)
			}
			continue
		}
		res.Deleted = append(res.Deleted, v.Name)
	}
	return res, errors.Join(errs...)
}

// Update changes a stopped VM's vCPUs and memory.
func (m *Manager) Update(ctx context.Context, ref string, req api.UpdateVMRequest) (api.VM, error) {
	v, h, unlock, err := m.lockVM(ctx, ref)
	if err != nil {
		return api.VM{}, err
	}
	defer unlock()
	if m.alive(h) {
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

// Reconcile runs when the daemon starts: VMs recorded as running are
// re-attached when their engine process still runs, and marked stopped
// (their leftovers cleaned) when it does not.
func (m *Manager) Reconcile(ctx context.Context) {
	vs, err := m.cfg.DB.ListVMs(ctx)
	if err != nil {
		m.log.Error("reconcile", "err", err)
		return
	}
	for _, v := range vs {
		if v.State != api.VMRunning {
			continue
		}
		h := m.handle(v.ID)
		var inst engine.Instance
		e, err := m.engine(v.Engine)
		if err == nil {
			inst, err = e.Attach(ctx, engine.Spec{ID: v.ID, Dir: v.Dir})
		}
		if err == nil {
			h.mu.Lock()
			h.inst = inst
			h.mu.Unlock()
			// Rules are rebuilt: the host may have lost them (a
			// firewall reload) while the daemon was down.
			if _, _, err := m.netUp(ctx, v); err != nil {
				m.log.Warn("rebuild vm network", "vm", v.ID, "err", err)
			}
			if a, ok := m.vmAddr(v); ok {
				m.addrs.set(v.Name, a)
			}
			m.openForwards(ctx, v)
			go m.watch(v.ID, h, inst)
			m.log.Info("reattached vm", "vm", v.ID, "pid", inst.PID())
			continue
		}
		v.State, v.Reason = api.VMStopped, "its engine exited while bangerd was not running"
		m.cfg.DB.UpdateVM(ctx, v)
		if err := m.netDown(ctx, v); err != nil {
			m.log.Warn("network teardown", "vm", v.ID, "err", err)
		}
		os.Remove(filepath.Join(v.Dir, InitrdFile))
		m.log.Info("vm found stopped on reconcile", "vm", v.ID, "err", err)
	}
}

// Agent returns a live agent session for a running VM.
func (m *Manager) Agent(ctx context.Context, ref string) (*agentproto.Client, api.VM, error) {
	v, err := m.cfg.DB.GetVM(ctx, ref)
	if err != nil {
		return nil, api.VM{}, err
	}
	h := m.handle(v.ID)
	c, err := m.connectAgent(ctx, &v, h, 15*time.Second)
	return c, m.toAPI(v), err
}

// ExecDefaults fills what the exec request leaves empty from the image
// config: working directory and user.
func ExecDefaults(vm api.VM, req api.ExecRequest) agentproto.ExecRequest {
	out := agentproto.ExecRequest{Argv: req.Argv, Env: req.Env, Dir: req.Dir, User: req.User, TTY: req.TTY, Rows: req.Rows, Cols: req.Cols}
	if out.Dir == "" {
		out.Dir = vm.Workspace
	}
	if out.Dir == "" {
		out.Dir = vm.Config.WorkingDir
	}
	if out.User == "" {
		out.User = vm.Config.User
	}
	return out
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
