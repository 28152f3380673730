// Package firecracker is the Firecracker engine: one firecracker process per
// VM (optionally under the jailer), configured through its API socket, the
// guest console on the process's stdout (appended to console.log), and the
// agent channel on Firecracker's host-initiated vsock (a unix socket that
// speaks "CONNECT <port>\n" / "OK <port>\n").
//
// The engine relies only on documented Firecracker behaviour (the OpenAPI
// file, vsock.md, jailer.md), so a test double that implements those works.
package firecracker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/engine"
	"github.com/bangervm/banger/internal/engine/proc"
)

// Name is the engine's name.
const Name = "firecracker"

// Defaults for Config.
const (
	DefaultBinary     = "firecracker"
	DefaultJailer     = "jailer"
	DefaultChrootBase = "/srv/jailer"
)

// File names inside Spec.Dir (and, under the jailer, inside the chroot).
// Unix socket paths must stay under 108 bytes.
const (
	StateFile   = "engine.json"     // written before the process exists
	PIDFile     = "firecracker.pid" // written once it runs
	APISocket   = "fc.sock"
	VsockSocket = "v.sock"
	ConsoleLog  = "console.log"         // firecracker stdout+stderr: the guest serial console
	LogFile     = "firecracker.log"     // Firecracker's own log, capped (PUT /logger writes LogPipe)
	MetricsFile = "firecracker.metrics" // Firecracker's metrics, JSON lines, capped (PUT /metrics writes MetricsPipe)
	// Firecracker writes its log and metrics into named pipes, which a
	// copier drains into the capped LogFile and MetricsFile: a guest can
	// make Firecracker log (device errors, rate limits), so a file
	// Firecracker appends to directly would grow without bound
	// (prod-host-setup.md, "Log files"). In a jail they are linked in as
	// LogFile and MetricsFile.
	LogPipe     = "firecracker.log.pipe"
	MetricsPipe = "firecracker.metrics.pipe"
)

// maxSocketPath is the longest unix socket path (sun_path is 108 bytes with
// the terminating NUL).
const maxSocketPath = 107

// BaseBootArgs come first on the kernel command line; Spec.Cmdline follows,
// so its arguments win.
const BaseBootArgs = "console=ttyS0 reboot=k panic=1 pci=off"

// Config configures the Firecracker engine. The zero value runs firecracker
// from PATH without the jailer.
type Config struct {
	// Firecracker is the firecracker binary (config firecracker_bin); ""
	// looks it up in PATH.
	Firecracker string
	// Jailer is the jailer binary (config jailer_bin); "" looks it up in
	// PATH. Used only with UseJailer.
	Jailer string
	// UseJailer runs firecracker under the jailer: a chroot per VM under
	// ChrootBase, privileges dropped to UID:GID.
	UseJailer bool
	// ChrootBase is the jailer's --chroot-base-dir; "" means
	// DefaultChrootBase. It must be on the same filesystem as the VM
	// directories so that writable disks can be hard-linked.
	ChrootBase string
	// UID and GID are what the jailer drops to.
	UID, GID int
	// Cgroups are passed to the jailer as --cgroup <file=value>, with
	// CgroupVersion (0: the jailer's default) as --cgroup-version.
	Cgroups       []string
	CgroupVersion int
	// Launcher starts the jailer when this process cannot (the jailer
	// must start as root): the root helper for a daemon running as its
	// owner. nil starts it directly. Used only with UseJailer.
	Launcher Launcher
	// StartTimeout bounds how long Start waits for the API socket; 0 means
	// 10 s.
	StartTimeout time.Duration
	// LogMax caps console.log (Firecracker's output, the guest console);
	// 0 means consolelog.DefaultMax.
	LogMax int64
	// Logger receives state changes; nil discards.
	Logger *slog.Logger
}

// Launcher starts the jailer for a process that is not root (the jailer
// must start as root): roothelper.Client implements it.
//
// LaunchJailer builds the jail itself, root's, so that the caller cannot
// change it while the jailer uses it as root: c.ChrootBase is
// <vm dir>/jail (JailDirName), and files are placed in
// <base>/<exec name>/<id>/root. The jailer runs with c's other arguments,
// its stdout and stderr on console, in a session of its own that outlives
// the launcher and the caller. It returns the jailer's process, which
// becomes firecracker's when the jailer execs (same pid).
//
// KillJailer sends SIGKILL to a jailer it launched, which the caller
// cannot signal while it still runs as root. RemoveJail removes the jail
// of c's VM once its process has exited (the caller cannot: it is root's).
type Launcher interface {
	LaunchJailer(ctx context.Context, c JailerConfig, files []JailFile, console *os.File) (*proc.Process, error)
	KillJailer(ctx context.Context, pid int) error
	RemoveJail(ctx context.Context, c JailerConfig) error
}

// Engine is the Firecracker engine. Create it with New.
type Engine struct {
	cfg Config
	log *slog.Logger
}

var _ engine.Engine = (*Engine)(nil)

// New returns a Firecracker engine.
func New(cfg Config) *Engine {
	e := &Engine{cfg: cfg, log: cfg.Logger}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	e.log = e.log.With("engine", Name)
	return e
}

// Name returns "firecracker".
func (e *Engine) Name() string { return Name }

// Features reports KVM and the vsock agent channel: Firecracker has no
// other accelerator and always has vsock.
func (e *Engine) Features(ctx context.Context) (engine.Features, error) {
	f := engine.Features{
		Accel:          engine.AccelKVM,
		AccelReason:    "Firecracker always uses KVM",
		HasVsock:       true,
		AgentTransport: engine.AgentVsock,
		TemplateTap:    true,
	}
	if err := e.refuseJailed(); err != nil {
		f.TemplatesOff = err.Error()
	}
	return f, nil
}

// state is what Start leaves in engine.json, before the process exists, so
// that teardown and Attach know every path without guessing. Host paths are
// as seen from the host; the API sees chroot-relative ones under the jailer.
type state struct {
	Engine     string   `json:"engine"`
	ID         string   `json:"id"`
	Binary     string   `json:"binary"`
	PIDFile    string   `json:"pidFile"`
	APISocket  string   `json:"apiSocket"`  // host path
	APISockArg string   `json:"apiSockArg"` // the --api-sock argument
	VsockUDS   string   `json:"vsockUDS"`   // host path
	VsockCID   uint32   `json:"vsockCID"`
	ConsoleLog string   `json:"consoleLog"`
	LogFile    string   `json:"logFile"` // host path
	TapName    string   `json:"tapName,omitempty"`
	JailID     string   `json:"jailID,omitempty"`
	JailDir    string   `json:"jailDir,omitempty"` // <base>/<exec name>/<id>, removed with the VM
	ChrootDir  string   `json:"chrootDir,omitempty"`
	Argv       []string `json:"argv"`

	jail JailerConfig // under the jailer: what Argv[1:] was made from
}

// ours reports whether argv is this state's firecracker (or the jailer
// that execs into it: same pid, argv rewritten).
func (st state) ours(argv []string) bool {
	if len(argv) == 0 || !slices.Contains(argv, st.APISockArg) && !slices.Contains(argv, "--api-sock="+st.APISockArg) {
		return false
	}
	if st.JailID != "" {
		return slices.Contains(argv, "--id="+st.JailID) || slices.Contains(argv, st.JailID)
	}
	return true
}

// lookBinary resolves a configured binary; key is its config key.
func lookBinary(name, def, key string) (string, error) {
	if name == "" {
		name = def
	}
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("%s not found (install Firecracker from https://github.com/firecracker-microvm/firecracker/releases, or set %s in the config): %w", name, key, errdefs.ErrFailedPrecondition)
	}
	return filepath.Abs(p)
}

// MinVersion is the oldest supported Firecracker: 1.8 discovers devices
// through ACPI, which stock distribution kernels need.
var MinVersion = [3]int{1, 8, 0}

var versionRE = regexp.MustCompile(`Firecracker v(\d+)\.(\d+)\.(\d+)`)

// ParseVersion reads "Firecracker v1.x.y" from `firecracker --version`.
func ParseVersion(out string) ([3]int, error) {
	m := versionRE.FindStringSubmatch(out)
	if m == nil {
		return [3]int{}, fmt.Errorf("no \"Firecracker vX.Y.Z\" in %q", strings.TrimSpace(out))
	}
	var v [3]int
	for i := range v {
		v[i], _ = strconv.Atoi(m[i+1])
	}
	return v, nil
}

// CheckVersion refuses versions older than MinVersion.
func CheckVersion(v [3]int) error {
	if slices.Compare(v[:], MinVersion[:]) < 0 {
		return fmt.Errorf("firecracker v%d.%d.%d is too old: banger needs v%d.%d.%d or newer (ACPI device discovery); install a newer release from https://github.com/firecracker-microvm/firecracker/releases or set firecracker_bin: %w",
			v[0], v[1], v[2], MinVersion[0], MinVersion[1], MinVersion[2], errdefs.ErrFailedPrecondition)
	}
	return nil
}

// Supported returns nil when version (in the "1.x.y" form Version returns)
// is one banger supports, else why not (CheckVersion's error).
func Supported(version string) error {
	v, err := ParseVersion("Firecracker v" + version)
	if err != nil {
		return err
	}
	return CheckVersion(v)
}

// Version runs `firecracker --version` and returns "1.x.y". It does not
// check the supported range (see CheckVersion).
func (e *Engine) Version(ctx context.Context) (string, error) {
	bin, err := lookBinary(e.cfg.Firecracker, DefaultBinary, "firecracker_bin")
	if err != nil {
		return "", err
	}
	v, err := binaryVersion(ctx, bin)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%d.%d.%d", v[0], v[1], v[2]), nil
}

func binaryVersion(ctx context.Context, bin string) ([3]int, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "--version").CombinedOutput()
	if err != nil {
		return [3]int{}, fmt.Errorf("%s --version: %w: %s", bin, err, strings.TrimSpace(string(out)))
	}
	v, err := ParseVersion(string(out))
	if err != nil {
		return [3]int{}, fmt.Errorf("%s --version: %w", bin, err)
	}
	return v, nil
}

// Start boots spec. See engine.Engine.
func (e *Engine) Start(ctx context.Context, spec engine.Spec) (engine.Instance, error) {
	inst, err := e.start(ctx, spec, startMode{})
	if err != nil {
		return nil, fmt.Errorf("start vm %s: %w", spec.ID, err)
	}
	return inst, nil
}

// plan checks everything that can be checked before touching the disk and
// returns the state to write.
func (e *Engine) plan(ctx context.Context, spec *engine.Spec, mode startMode) (state, error) {
	if err := validate(spec); err != nil {
		return state{}, err
	}
	bin, err := lookBinary(e.cfg.Firecracker, DefaultBinary, "firecracker_bin")
	if err != nil {
		return state{}, err
	}
	var jailer string
	if e.cfg.UseJailer {
		if jailer, err = lookBinary(e.cfg.Jailer, DefaultJailer, "jailer_bin"); err != nil {
			return state{}, err
		}
	}
	if err := CheckKernel(spec.Kernel); err != nil {
		return state{}, err
	}
	v, err := binaryVersion(ctx, bin)
	if err != nil {
		return state{}, err
	}
	if err := CheckVersion(v); err != nil {
		return state{}, err
	}
	if slices.Compare(v[:], mode.minVersion[:]) < 0 {
		m := mode.minVersion
		return state{}, fmt.Errorf("firecracker v%d.%d.%d is too old for %s: that needs v%d.%d.%d or newer: %w",
			v[0], v[1], v[2], mode.minWhy, m[0], m[1], m[2], errdefs.ErrFailedPrecondition)
	}
	st := state{
		Engine:     Name,
		ID:         spec.ID,
		Binary:     bin,
		PIDFile:    filepath.Join(spec.Dir, PIDFile),
		ConsoleLog: filepath.Join(spec.Dir, ConsoleLog),
		VsockCID:   spec.VsockCID,
	}
	if st.VsockCID == 0 {
		// Firecracker's vsock is per process, not the host's vhost-vsock:
		// every VM can use the first guest CID.
		st.VsockCID = 3
	}
	if spec.Net != nil {
		st.TapName = spec.Net.TapName
	}
	if e.cfg.UseJailer {
		base := e.cfg.ChrootBase
		if base == "" {
			base = DefaultChrootBase
		}
		if e.cfg.Launcher != nil {
			// The launcher's jail, root's, sits in the VM's directory:
			// the same filesystem as its disk, for the hard link.
			base = filepath.Join(spec.Dir, JailDirName)
		}
		if base, err = filepath.Abs(base); err != nil {
			return state{}, err
		}
		st.JailID = JailID(spec.ID)
		st.JailDir = filepath.Join(base, filepath.Base(bin), st.JailID)
		st.ChrootDir = filepath.Join(st.JailDir, "root")
		st.APISocket = filepath.Join(st.ChrootDir, APISocket)
		st.VsockUDS = filepath.Join(st.ChrootDir, VsockSocket)
		st.LogFile = filepath.Join(spec.Dir, LogFile)
		st.APISockArg = "/" + APISocket
		st.jail = JailerConfig{
			ID: st.JailID, ExecFile: bin, UID: e.cfg.UID, GID: e.cfg.GID,
			ChrootBase: base, CgroupVersion: cgroupVersion(e.cfg.CgroupVersion), Cgroups: cgroupLimits(e.cfg.Cgroups, *spec),
			FirecrackerArgs: []string{"--api-sock", st.APISockArg},
		}
		st.Argv = append([]string{jailer}, JailerArgs(st.jail)...)
	} else {
		st.APISocket = filepath.Join(spec.Dir, APISocket)
		st.VsockUDS = filepath.Join(spec.Dir, VsockSocket)
		st.LogFile = filepath.Join(spec.Dir, LogFile)
		st.APISockArg = st.APISocket
		st.Argv = []string{bin, "--api-sock", st.APISockArg}
	}
	for _, p := range []string{st.APISocket, st.VsockUDS} {
		// Guest-initiated vsock connections use <uds_path>_<port>.
		if len(p)+len("_4294967295") > maxSocketPath {
			return state{}, fmt.Errorf("socket path %s is %d bytes, over the %d unix sockets allow (with room for vsock's _<port> suffix): use a shorter VM directory or chroot base: %w",
				p, len(p), maxSocketPath, errdefs.ErrInvalidArgument)
		}
	}
	return st, nil
}

func (e *Engine) start(ctx context.Context, spec engine.Spec, mode startMode) (inst *Instance, err error) {
	st, err := e.plan(ctx, &spec, mode)
	if err != nil {
		return nil, err
	}
	if _, live, _ := e.find(spec.Dir); live != nil {
		return nil, fmt.Errorf("a firecracker process (pid %d) already runs for %s: %w", live.PID(), spec.Dir, errdefs.ErrAlreadyExists)
	}
	if st.JailDir != "" {
		if _, err := os.Stat(st.JailDir); err == nil {
			if e.cfg.Launcher == nil {
				return nil, fmt.Errorf("jail %s already exists (left by an earlier run?): %w", st.JailDir, errdefs.ErrAlreadyExists)
			}
			// Left by a run whose cleanup did not happen (a crash): the
			// launcher removes it unless a process still uses it.
			if err := e.cfg.Launcher.RemoveJail(ctx, st.jail); err != nil {
				return nil, fmt.Errorf("jail %s left by an earlier run: %w", st.JailDir, err)
			}
		}
	}

	// Everything made from here on is undone on error, in reverse.
	var undo []func() error
	defer func() {
		if err == nil {
			return
		}
		var errs []error
		for _, f := range slices.Backward(undo) {
			errs = append(errs, f())
		}
		if cerr := errors.Join(errs...); cerr != nil {
			err = fmt.Errorf("%w; cleanup: %w", err, cerr)
		}
	}()
	removeFile := func(p string) func() error {
		return func() error {
			if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
			return nil
		}
	}

	for _, p := range []string{st.PIDFile, st.APISocket, st.VsockUDS} {
		if err := removeFile(p)(); err != nil {
			return nil, err
		}
	}
	undo = append(undo, removeFile(filepath.Join(spec.Dir, StateFile)))
	if err := writeState(spec.Dir, st); err != nil {
		return nil, err
	}
	undo = append(undo, removeFile(st.APISocket), removeFile(st.VsockUDS))

	paths := apiPaths{kernel: spec.Kernel, initrd: spec.Initrd, logFile: filepath.Join(spec.Dir, LogPipe), metricsFile: filepath.Join(spec.Dir, MetricsPipe), vsock: st.VsockUDS}
	for _, d := range spec.Disks {
		paths.disks = append(paths.disks, d.Path)
	}
	pipeOwner := -1 // a jail staged here runs Firecracker as cfg.UID
	if st.JailDir != "" && e.cfg.Launcher == nil {
		pipeOwner = e.cfg.UID
	}
	pipes, err := makePipes(spec.Dir, pipeOwner, e.cfg.GID)
	if err != nil {
		return nil, err
	}
	defer closeAll(pipes) // the copier holds its own
	// Firecracker opens them while start configures it; its jail, if
	// any, holds links. Their names here are not needed after that.
	defer removeFile(paths.logFile)()
	defer removeFile(paths.metricsFile)()
	var files []JailFile
	if st.JailDir != "" && e.cfg.Launcher != nil {
		files, paths = jailFiles(spec)
		files = append(files, mode.templateFiles...)
		undo = append(undo, func() error { return e.cfg.Launcher.RemoveJail(context.WithoutCancel(ctx), st.jail) })
	} else if st.JailDir != "" {
		undo = append(undo, func() error { return os.RemoveAll(st.JailDir) })
		if paths, err = stageJail(st, spec, e.cfg.UID, e.cfg.GID); err != nil {
			return nil, err
		}
	} else if mode.relative {
		links, err := relativePaths(spec, &paths)
		for _, l := range links {
			undo = append(undo, removeFile(l))
		}
		if err != nil {
			return nil, err
		}
	}

	if spec.Net != nil && spec.Net.TapFD != nil {
		// Firecracker opens its tap by name, and a tap takes one
		// attachment: let go of the one the root helper handed over.
		spec.Net.TapFD.Close()
	}
	logOff := proc.FileSize(st.ConsoleLog)
	fcLogOff := proc.FileSize(st.LogFile)
	p, err := e.launch(ctx, st, spec.Dir, files)
	if err != nil {
		return nil, err
	}
	undo = append(undo, func() error {
		if err := p.Signal(syscall.SIGKILL); err != nil && e.cfg.Launcher != nil && st.JailDir != "" {
			// Still the jailer, root's: the launcher may kill it.
			e.cfg.Launcher.KillJailer(context.WithoutCancel(ctx), p.PID())
		}
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		return p.Wait(wctx)
	}, removeFile(st.PIDFile))
	defer func() {
		if err != nil {
			if p.Exited() { // else it is killed after this, by undo
				wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
				p.WaitLogs(wctx)
				cancel()
			}
			err = fmt.Errorf("%w%s%s", err,
				proc.QuoteTail("firecracker output", st.ConsoleLog, logOff),
				proc.QuoteTail("firecracker log", st.LogFile, fcLogOff))
		}
	}()
	if err := p.CopyFIFOs(pipes, []string{st.LogFile, filepath.Join(spec.Dir, MetricsFile)}, e.cfg.LogMax); err != nil {
		return nil, err
	}
	if err := proc.WriteFileAtomic(st.PIDFile, []byte(strconv.Itoa(p.PID())+"\n")); err != nil {
		return nil, err
	}
	inst = e.newInstance(spec.ID, st, p)
	if err := e.waitAPI(ctx, inst); err != nil {
		return nil, err
	}
	if mode.load != nil {
		err = loadSnapshot(ctx, inst.api, paths, *mode.load)
	} else {
		err = configure(ctx, inst.api, spec, st, paths)
	}
	if err != nil {
		return nil, err
	}
	if p.Exited() {
		return nil, errors.New("firecracker exited during start")
	}
	inst.Log.Info("vm started", "pid", p.PID(), "jailed", st.JailID != "")
	return inst, nil
}

// launch starts st's process: through the Launcher when the jailer is
// used and one is set, else directly; either way its output reaches the
// console log through a capped copier.
func (e *Engine) launch(ctx context.Context, st state, dir string, files []JailFile) (*proc.Process, error) {
	opts := proc.StartOptions{Dir: dir, Log: st.ConsoleLog, LogMax: e.cfg.LogMax}
	if st.JailDir == "" || e.cfg.Launcher == nil {
		return proc.Start(st.Argv, opts)
	}
	return proc.StartWith(opts, func(out *os.File) (*proc.Process, error) {
		return e.cfg.Launcher.LaunchJailer(ctx, st.jail, files, out)
	})
}

// waitAPI waits until Firecracker answers GET / on its API socket.
func (e *Engine) waitAPI(ctx context.Context, inst *Instance) error {
	timeout := e.cfg.StartTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	lastErr := errors.New("no API socket yet")
	for {
		if inst.P.Exited() {
			return errors.New("firecracker exited during start")
		}
		if proc.FileExists(inst.st.APISocket) {
			qctx, qcancel := context.WithTimeout(ctx, time.Second)
			_, lastErr = inst.api.instanceInfo(qctx)
			qcancel()
			if lastErr == nil {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("firecracker did not answer on %s within %v: %w", inst.st.APISocket, timeout, lastErr)
			}
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// validate checks spec before anything is written or started.
func validate(spec *engine.Spec) error {
	inv := func(format string, a ...any) error {
		return fmt.Errorf(format+": %w", append(a, errdefs.ErrInvalidArgument)...)
	}
	if err := spec.Validate(); err != nil {
		return err
	}
	if spec.VCPU > 32 {
		return inv("vcpu %d: Firecracker supports 1 to 32", spec.VCPU)
	}
	if n := spec.Net; n != nil && n.TapName == "" {
		return inv("network without a tap name (Firecracker opens taps by name; a tap fd cannot be passed)")
	}
	if strings.ContainsAny(spec.Cmdline, "\n\x00") {
		return inv("kernel command line contains a newline or NUL")
	}
	return nil
}

// Attach finds the firecracker process an earlier Start left for spec.Dir:
// the pid in firecracker.pid when that process's argv holds this VM's API
// socket, else any such process. Only spec.ID and spec.Dir are read.
func (e *Engine) Attach(ctx context.Context, spec engine.Spec) (engine.Instance, error) {
	inst, err := e.attach(ctx, spec)
	if err != nil {
		return nil, fmt.Errorf("attach vm %s: %w", spec.ID, err)
	}
	return inst, nil
}

func (e *Engine) attach(ctx context.Context, spec engine.Spec) (*Instance, error) {
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
	inst := e.newInstance(id, st, p)
	actx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := inst.api.instanceInfo(actx); err != nil {
		if p.Exited() {
			return nil, fmt.Errorf("firecracker for %s has exited: %w", dir, errdefs.ErrNotFound)
		}
		// Alive but not answering: still hand it back so it can be killed.
		inst.Log.Warn("firecracker API does not answer", "err", err)
	}
	inst.Log.Info("vm attached", "pid", p.PID())
	return inst, nil
}

// find returns the state firecracker left in dir and its live process,
// or an ErrNotFound error.
func (e *Engine) find(dir string) (state, *proc.Process, error) {
	st, err := readState(dir)
	if err != nil {
		return st, nil, err
	}
	if p, err := proc.FindOwned(st.PIDFile, st.ours); err != nil || p != nil {
		return st, p, err
	}
	return st, nil, fmt.Errorf("no firecracker process for %s: %w", dir, errdefs.ErrNotFound)
}
