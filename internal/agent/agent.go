// Package agent is banger-agent, the process banger adds to every guest: as
// PID 1 of the initramfs it loads modules, mounts the copy-on-write root and
// switches to it, then stays init (or hands PID 1 to the image's own init
// and keeps serving from a child), and serves the host over the agent
// channel (package agentproto). The host builds the initramfs that carries
// it with package initrd; bangerd never imports this package.
package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bangervm/banger/internal/agentproto"
	"github.com/bangervm/banger/internal/buildinfo"
)

// childConfigPath is where PID 1 leaves the boot configuration for the
// serving child when it hands PID 1 to the image's init.
const childConfigPath = "/run/banger/boot.json"

// Main runs banger-agent with args (without the program name) and returns
// the exit status. As PID 1 it never returns.
func Main(args []string) int {
	// The agent shares a small guest with the user's work: keep the heap
	// tight (its RSS stays a few MiB).
	debug.SetGCPercent(50)
	if os.Getpid() == 1 {
		runInit()
	}
	switch {
	case len(args) == 1 && args[0] == "version":
		fmt.Println(buildinfo.Version)
		return 0
	case len(args) == 3 && args[0] == "serve" && args[1] == "--config":
		return runServe(args[2])
	}
	fmt.Fprintln(os.Stderr, "usage: banger-agent version | serve --config FILE\n(banger-agent runs as a guest's /init; the host adds it to the initramfs)")
	return 2
}

// runInit is the agent as PID 1. It must never return or exit: that
// panics the guest kernel.
func runInit() {
	log, sink := NewLogger(nil)
	mountAll(log, earlyMounts)
	if c, err := os.OpenFile("/dev/console", os.O_WRONLY|unix.O_NOCTTY, 0); err == nil {
		sink.SetConsole(c)
	}
	log.Info("starting", "version", buildinfo.Version)
	// Ctrl-Alt-Del must reach PID 1 as SIGINT (shutdownOnSignal), not
	// restart the kernel on the spot with unwritten data in the cache.
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_CAD_OFF); err != nil {
		log.Warn("turn off the kernel's Ctrl-Alt-Del reboot", "err", err)
	}
	if os.Getenv("PATH") == "" {
		os.Setenv("PATH", DefaultPath)
	}
	cfg, err := readBootConfig(agentproto.BootConfigPath)
	if err != nil {
		log.Error("boot config; booting with defaults", "err", err)
	}
	loadModules(log, modulesLoadPath)
	ctx := context.Background()
	var gate *bootGate
	stopGate := func() {}
	if cfg.AwaitIdentity {
		// The ready point: everything a template of this guest may hold
		// is done, nothing VM-specific is. A clone resumes here.
		gate = newBootGate(log, cfg.Init != "")
		gate.srv = &agentproto.Server{Handler: gate, AgentVersion: buildinfo.Version, Logger: log, Version: hostileVersion}
		gctx, cancel := context.WithCancel(ctx)
		stopGate = cancel
		go serveForever(gctx, log, gate.srv, cfg)
		log.Info("ready point: waiting for the host's identity")
		id := gate.wait()
		if cfg, err = applyIdentity(log, cfg, id); err != nil {
			log.Error("cannot take this VM's identity; powering off", "err", err)
			powerOff(log)
		}
	}
	rooted := false
	if cfg.Root != nil {
		if err := setupRoot(log, *cfg.Root); err != nil {
			// Without its root the VM is useless; power off at once so
			// the host reports the boot failure (with this line from the
			// console) instead of waiting out its boot timeout.
			log.Error("cannot set up the root file system; powering off", "err", err)
			unix.Sync()
			powerOff(log)
		} else {
			rooted = true
			if id, kept, err := ensureMachineID("/", filepath.Join(DiskDir, "upper")); err != nil {
				log.Error("give the VM its machine-id; it may share the image's", "err", err)
			} else {
				log.Info("machine-id", "id", id, "kept", kept)
			}
		}
	}
	mountAll(log, rootMounts)
	if err := os.MkdirAll(stageDir, 0o755); err == nil {
		if err := sink.SetFile(LogFile); err != nil {
			log.Warn("open log file", "err", err)
		}
	}
	if cfg.Hostname != "" {
		if err := unix.Sethostname([]byte(cfg.Hostname)); err != nil {
			log.Warn("set hostname", "err", err)
		}
	}
	if err := configureNetwork(log, cfg.Network); err != nil {
		log.Error("configure network; booting on", "err", err)
	}
	if cfg.Init != "" {
		// The image's init starts the image's own sshd: give it the VM's
		// pinned host key and banger's key before it runs.
		if cfg.SSH != nil && imageHasSSHD("/") {
			if err := prepareImageSSHD(log, "/", *cfg.SSH); err != nil {
				log.Error("prepare the image's sshd; ssh to this VM will fail", "err", err)
			}
		}
		// The serving child opens the agent port: let go of it first.
		stopGate()
		handOver(log, cfg) // returns only if exec failed
		// The agent stays init, so nothing starts the image's sshd: the
		// agent serves SSH itself.
		cfg.Init = ""
		gate = nil
	}

	r := newReaper(log)
	go r.run(ctx)
	srv := newServer(log, cfg, rooted, r)
	stop := cleanStop(log, srv.Handler)
	go shutdownOnSignal(log, stop)
	go watchPowerButtons(log, "/sys/class/input", "/dev/input", func() { stop("power button") })
	if gate != nil {
		gate.open(srv.Handler)
		select {} // the gate's server serves on
	}
	serveForever(ctx, log, srv, cfg)
}

// handOver starts the serving agent as a child and makes PID 1 the image's
// init. It returns only if that exec fails.
func handOver(log *slog.Logger, cfg agentproto.BootConfig) {
	b, _ := json.Marshal(cfg)
	if err := os.WriteFile(childConfigPath, b, 0o600); err != nil {
		log.Error("hand over to init", "err", err)
		return
	}
	// /proc/self/exe still reaches the initramfs binary after switch_root.
	child := exec.Command("/proc/self/exe", "serve", "--config", childConfigPath)
	if c, err := os.OpenFile("/dev/console", os.O_WRONLY|unix.O_NOCTTY, 0); err == nil {
		child.Stdout, child.Stderr = c, c
	}
	child.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := child.Start(); err != nil {
		log.Error("start serving agent; staying init", "err", err)
		return
	}
	log.Info("handing PID 1 to the image's init", "init", cfg.Init, "agent", child.Process.Pid)
	env := mergeEnv([]string{"PATH=" + DefaultPath}, cfg.Env)
	err := syscall.Exec(cfg.Init, []string{cfg.Init}, env)
	log.Error("exec init; the agent stays init", "init", cfg.Init, "err", err)
	_ = child.Process.Kill()
}

// runServe is the serving agent under the image's own init.
func runServe(configPath string) int {
	log, sink := NewLogger(os.Stderr)
	if err := sink.SetFile(LogFile); err != nil {
		log.Warn("open log file", "err", err)
	}
	cfg, err := readBootConfig(configPath)
	if err != nil {
		log.Error("serve", "err", err)
		return 1
	}
	srv := newServer(log, cfg, isMountpoint(DiskDir), nil)
	serveForever(context.Background(), log, srv, cfg)
	return 0
}

func newServer(log *slog.Logger, cfg agentproto.BootConfig, rooted bool, w waiter) *agentproto.Server {
	hc := HandlerConfig{
		Logger:   log,
		Env:      cfg.Env,
		Dir:      cfg.Dir,
		User:     cfg.User,
		Shutdown: func(ctx context.Context) error { return guestShutdown(ctx, log) },
		PowerOff: func() { powerOff(log) },
		SetClock: setClock,
		waiter:   w,
	}
	if rooted {
		hc.DiskPath = DiskDir
	}
	h := NewHandler(hc)
	startSSH(context.Background(), log, cfg.SSH, h, cfg.Init != "") // in the background; the network is up
	var served agentproto.Handler = h
	if hostile != nil {
		served = hostile(log, h)
	}
	return &agentproto.Server{Handler: served, AgentVersion: buildinfo.Version, Logger: log, Version: hostileVersion}
}

// hostile, set only in a test build (tag hostileagent, hostile.go), wraps
// the handler in one that misbehaves on request, to test that the host
// holds against a hostile guest.
var hostile func(*slog.Logger, agentproto.Handler) agentproto.Handler

// hostileVersion, set only in the test build, picks the protocol version
// the handshake announces (agentproto.Server.Version).
var hostileVersion func() uint16

func serveForever(ctx context.Context, log *slog.Logger, srv *agentproto.Server, cfg agentproto.BootConfig) {
	port := cfg.AgentPort
	if port == "" {
		port = agentproto.DefaultPortName
	}
	for ctx.Err() == nil {
		err := serveChannel(ctx, log, srv, port)
		if ctx.Err() != nil {
			return
		}
		log.Error("agent channel", "err", err)
		time.Sleep(time.Second)
	}
}

// shutdownOnSignal treats SIGTERM and SIGINT to PID 1 as a clean
// power-off, never a reboot. SIGINT is Ctrl-Alt-Del (Firecracker's
// SendCtrlAltDel) once runInit has turned the kernel's own reboot off.
func shutdownOnSignal(log *slog.Logger, stop func(why string)) {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	sig := <-sigs
	stop("signal " + sig.String())
}

// cleanStop returns a function that stops the guest as the host's
// Shutdown request does, then powers off; only its first call does
// anything, whatever asked for it (a signal, the power button).
func cleanStop(log *slog.Logger, h agentproto.Handler) func(why string) {
	var once sync.Once
	return func(why string) {
		once.Do(func() {
			log.Info("shutting down", "why", why)
			if err := h.Shutdown(context.Background()); err != nil {
				log.Error("shutdown", "err", err)
			}
			h.PowerOff()
		})
	}
}
