// Package qemu is the QEMU engine: qemu-system-x86_64 with the microvm
// machine, virtio-mmio devices, the guest console in a file, QMP on a unix
// socket, and the agent channel on vhost-vsock where the host has it, else a
// virtio-serial port bridged to a unix socket.
//
// KVM is used only when it can run an ordinary guest; otherwise TCG, with
// tsc_early_khz set from the measured host TSC rate so guests cannot hang in
// clock calibration (see HostTSCKHz).
//
// QEMU is started directly (no -daemonize, no -pidfile) in its own session,
// so the engine knows the pid from the start and writes it itself; the
// process is not a child that dies with the daemon.
package qemu

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/engine"
	"github.com/bangervm/banger/internal/engine/proc"
)

// Name is the engine's name.
const Name = "qemu"

// DefaultBinary is looked up in PATH when Config.Binary is empty.
const DefaultBinary = "qemu-system-x86_64"

// Config configures the QEMU engine. The zero value works.
type Config struct {
	// Binary is the qemu-system-x86_64 path; "" looks it up in PATH.
	Binary string
	// Accel forces an accelerator; "" chooses (see ChooseAccel).
	Accel engine.Accel
	// TBSizeMiB is TCG's translation cache size: 0 means 64 MiB (QEMU's
	// default of 1 GiB costs up to ~200 MB RSS per VM for no measurable
	// speed), a negative value leaves QEMU's default.
	TBSizeMiB int
	// StartTimeout bounds how long Start waits for QEMU to answer on QMP;
	// 0 means 10 s.
	StartTimeout time.Duration
	// Host replaces the probe of the host (tests).
	Host *HostInfo
	// LogMax caps console.log and qemu.log; 0 means
	// consolelog.DefaultMax.
	LogMax int64
	// Logger receives state changes; nil discards.
	Logger *slog.Logger
}

// Engine is the QEMU engine. Create it with New.
type Engine struct {
	cfg      Config
	log      *slog.Logger
	features func() engine.Features
}

var _ engine.Engine = (*Engine)(nil)

// New returns a QEMU engine.
func New(cfg Config) *Engine {
	e := &Engine{cfg: cfg, log: cfg.Logger}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	e.log = e.log.With("engine", Name)
	e.features = sync.OnceValue(e.probe)
	return e
}

// Name returns "qemu".
func (e *Engine) Name() string { return Name }

// Features reports the accelerator and agent transport VMs will get. The
// host is probed once per Engine; a TCG choice is logged once as a warning.
func (e *Engine) Features(ctx context.Context) (engine.Features, error) {
	return e.features(), nil
}

func (e *Engine) probe() engine.Features {
	h := ProbeHost()
	if e.cfg.Host != nil {
		h = *e.cfg.Host
	}
	accel, reason := ChooseAccel(h)
	if e.cfg.Accel != "" {
		accel, reason = e.cfg.Accel, "accelerator "+string(e.cfg.Accel)+" set in the configuration"
	}
	f := engine.Features{Accel: accel, AccelReason: reason, AgentTransport: engine.AgentSerial}
	if h.VhostVsock {
		f.HasVsock, f.AgentTransport = true, engine.AgentVsock
	}
	if accel == engine.AccelTCG {
		e.log.Warn(reason)
	}
	return f
}

// state is what Start leaves in engine.json, before the process exists, so
// that teardown and Attach know every path without guessing.
type state struct {
	Engine      string   `json:"engine"`
	ID          string   `json:"id"`
	Binary      string   `json:"binary"`
	PIDFile     string   `json:"pidFile"`
	QMPSocket   string   `json:"qmpSocket"`
	AgentSocket string   `json:"agentSocket,omitempty"`
	VsockCID    uint32   `json:"vsockCID,omitempty"`
	ConsoleLog  string   `json:"consoleLog"`
	StderrLog   string   `json:"stderrLog"`
	TapName     string   `json:"tapName,omitempty"`
	Argv        []string `json:"argv"`
}

// binary resolves the QEMU executable.
func (e *Engine) binary() (string, error) {
	b := e.cfg.Binary
	if b == "" {
		b = DefaultBinary
	}
	p, err := exec.LookPath(b)
	if err != nil {
		return "", fmt.Errorf("%s not found (install the Debian package qemu-system-x86, or set the QEMU path in the config): %w", b, errdefs.ErrFailedPrecondition)
	}
	return filepath.Abs(p)
}

var versionRE = regexp.MustCompile(`QEMU emulator version (\S+)`)

// Version runs the QEMU binary with --version and returns its version
// ("7.2.22"). A missing binary is errdefs.ErrFailedPrecondition naming
// the package to install.
func (e *Engine) Version(ctx context.Context) (string, error) {
	bin, err := e.binary()
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "--version").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%s --version: %w: %s", bin, err, strings.TrimSpace(string(out)))
	}
	m := versionRE.FindStringSubmatch(string(out))
	if m == nil {
		return "", fmt.Errorf("%s --version: no \"QEMU emulator version\" in %q", bin, strings.TrimSpace(string(out)))
	}
	return m[1], nil
}

// Start boots spec. See engine.Engine.
func (e *Engine) Start(ctx context.Context, spec engine.Spec) (engine.Instance, error) {
	inst, err := e.start(ctx, spec, memoryOptions{})
	if err != nil {
		return nil, fmt.Errorf("start vm %s: %w", spec.ID, err)
	}
	return inst, nil
}

// memoryOptions are CmdlineConfig's guest-memory fields: zero for an
// ordinary VM, set for a template or a clone.
type memoryOptions struct {
	path     string
	shared   bool
	incoming bool
}

func (e *Engine) start(ctx context.Context, spec engine.Spec, mem memoryOptions) (*Instance, error) {
	if err := validate(&spec); err != nil {
		return nil, err
	}
	bin, err := e.binary()
	if err != nil {
		return nil, err
	}
	feat := e.features()
	cc := CmdlineConfig{Binary: bin, Spec: spec, Accel: feat.Accel, TBSizeMiB: e.cfg.TBSizeMiB, TapFD: 3,
		MemPath: mem.path, MemShared: mem.shared, Incoming: mem.incoming}
	if cc.TBSizeMiB == 0 {
		cc.TBSizeMiB = 64
	}
	if feat.Accel == engine.AccelTCG {
		khz, err := HostTSCKHz()
		if err != nil {
			e.log.Warn("host TSC rate unknown, guests use -icount (about 1 s slower boots)", "err", err)
		}
		cc.TSCKHz = khz
	}
	if feat.HasVsock {
		cc.VsockCID = spec.VsockCID
		if cc.VsockCID == 0 {
			cc.VsockCID = deriveCID(spec.ID)
		}
	}
	if _, live, _ := e.find(spec.Dir); live != nil {
		return nil, fmt.Errorf("a QEMU process (pid %d) already runs for %s: %w", live.PID(), spec.Dir, errdefs.ErrAlreadyExists)
	}

	st := state{
		Engine:     Name,
		ID:         spec.ID,
		Binary:     bin,
		PIDFile:    filepath.Join(spec.Dir, PIDFile),
		QMPSocket:  filepath.Join(spec.Dir, QMPSocket),
		VsockCID:   cc.VsockCID,
		ConsoleLog: filepath.Join(spec.Dir, ConsoleLog),
		StderrLog:  filepath.Join(spec.Dir, StderrLog),
		Argv:       Cmdline(cc),
	}
	if cc.VsockCID == 0 {
		st.AgentSocket = filepath.Join(spec.Dir, AgentSocket)
	}
	if spec.Net != nil && spec.Net.TapFD == nil && !spec.Net.Detached {
		st.TapName = spec.Net.TapName
	}
	// Stale files from an earlier run would fool the readiness check.
	for _, p := range []string{st.PIDFile, st.QMPSocket, filepath.Join(spec.Dir, AgentSocket)} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
	}
	if err := writeState(spec.Dir, st); err != nil {
		return nil, err
	}
	// Mark where this run's output starts, so errors quote only this run.
	logOff := proc.FileSize(st.StderrLog)
	conOff := proc.FileSize(st.ConsoleLog)

	var extra []*os.File
	if spec.Net != nil && spec.Net.TapFD != nil {
		extra = append(extra, spec.Net.TapFD)
	}
	p, err := proc.Start(st.Argv, proc.StartOptions{Dir: spec.Dir, Log: st.StderrLog, Console: st.ConsoleLog, LogMax: e.cfg.LogMax, ExtraFiles: extra})
	if err != nil {
		return nil, err
	}
	inst := newInstance(spec.ID, st, p, e.log)
	fail := func(err error) (*Instance, error) {
		p.Signal(syscall.SIGKILL)
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if werr := p.Wait(wctx); werr != nil {
			err = errors.Join(err, werr)
		}
		p.WaitLogs(wctx)
		os.Remove(st.PIDFile)
		return nil, fmt.Errorf("%w%s%s", err,
			proc.QuoteTail("qemu output", st.StderrLog, logOff),
			proc.QuoteTail("console", st.ConsoleLog, conOff))
	}
	if err := proc.WriteFileAtomic(st.PIDFile, []byte(strconv.Itoa(p.PID())+"\n")); err != nil {
		return fail(err)
	}
	if err := e.waitReady(ctx, inst); err != nil {
		return fail(err)
	}
	inst.Log.Info("vm started", "pid", p.PID(), "accel", feat.Accel, "tsc_khz", cc.TSCKHz)
	return inst, nil
}

// earlyExitWindow is how long Start watches a fresh process for an early
// exit, even after QMP has answered.
const earlyExitWindow = 200 * time.Millisecond

// waitReady waits until QEMU answers query-status on QMP, which happens only
// after it has built the machine and loaded the kernel, and until the
// process has survived earlyExitWindow.
func (e *Engine) waitReady(ctx context.Context, inst *Instance) error {
	timeout := e.cfg.StartTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	lastErr := errors.New("no QMP socket yet")
	for {
		if inst.P.Exited() {
			return errors.New("qemu exited during start")
		}
		if proc.FileExists(inst.st.QMPSocket) {
			qctx, qcancel := context.WithTimeout(ctx, time.Second)
			var st qmpStatus
			lastErr = qmpCall(qctx, inst.st.QMPSocket, "query-status", nil, &st)
			qcancel()
			if lastErr == nil {
				break
			}
		}
		select {
		case <-ctx.Done():
			if time.Since(start) >= timeout {
				return fmt.Errorf("qemu did not answer on %s within %v: %w", inst.st.QMPSocket, timeout, lastErr)
			}
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	if rest := earlyExitWindow - time.Since(start); rest > 0 {
		time.Sleep(rest)
	}
	if inst.P.Exited() {
		return errors.New("qemu exited during start")
	}
	return nil
}

// validate checks spec before anything is written or started.
func validate(spec *engine.Spec) error {
	inv := func(format string, a ...any) error {
		return fmt.Errorf(format+": %w", append(a, errdefs.ErrInvalidArgument)...)
	}
	if err := spec.Validate(); err != nil {
		return err
	}
	if err := checkSocketPaths(spec.Dir); err != nil {
		return inv("%v", err)
	}
	if n := spec.Net; n != nil && n.TapFD == nil && n.TapName == "" && !n.Detached {
		return inv("network without a tap name or fd")
	}
	if strings.ContainsAny(spec.Cmdline, "\n\x00") {
		return inv("kernel command line contains a newline or NUL")
	}
	return nil
}

// deriveCID maps a VM id to a guest CID in [3, 2^31).
func deriveCID(id string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(id))
	return h.Sum32()%(1<<31-3) + 3
}

// Attach finds the QEMU process an earlier Start left for spec.Dir: the pid
// in qemu.pid if that process's argv holds this directory's QMP socket
// path, else any process whose argv does (the pidfile may not have been
// written). Only spec.ID and spec.Dir are read.
func (e *Engine) Attach(ctx context.Context, spec engine.Spec) (engine.Instance, error) {
	inst, err := e.attach(spec)
	if err != nil {
		return nil, fmt.Errorf("attach vm %s: %w", spec.ID, err)
	}
	return inst, nil
}

func (e *Engine) attach(spec engine.Spec) (*Instance, error) {
	dir, err := filepath.Abs(spec.Dir)
	if err != nil {
		return nil, err
	}
	st, p, err := e.find(dir)
	if err != nil {
		return nil, err
	}
	id := spec.ID
	if id == "" {
		id = st.ID
	}
	inst := newInstance(id, st, p, e.log)
	inst.Log.Info("vm attached", "pid", p.PID())
	return inst, nil
}

// find returns the state QEMU left in dir and its live process, or an
// ErrNotFound error.
func (e *Engine) find(dir string) (state, *proc.Process, error) {
	st, err := readState(dir)
	if err != nil {
		return st, nil, err
	}
	ours := func(argv []string) bool {
		return len(argv) > 0 && strings.Contains(filepath.Base(argv[0]), "qemu") &&
			slices.Contains(argv, "unix:"+opt(st.QMPSocket)+",server=on,wait=off")
	}
	if p, err := proc.FindOwned(st.PIDFile, ours); err != nil || p != nil {
		return st, p, err
	}
	return st, nil, fmt.Errorf("no QEMU process for %s: %w", dir, errdefs.ErrNotFound)
}

func readState(dir string) (state, error) {
	var st state
	if err := proc.ReadState(dir, StateFile, &st); err != nil {
		return state{}, err
	}
	if st.Engine != Name || st.QMPSocket == "" || st.PIDFile == "" {
		return state{}, fmt.Errorf("%s was not written by the qemu engine: %w", filepath.Join(dir, StateFile), errdefs.ErrNotFound)
	}
	return st, nil
}

func writeState(dir string, st state) error {
	return proc.WriteJSON(filepath.Join(dir, StateFile), st)
}
