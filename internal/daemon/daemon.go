// Package daemon wires bangerd together: it takes the state directories,
// opens the store, builds the image and kernel stores, and serves the API
// on the unix socket until its context is cancelled.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/internal/apiserver"
	"github.com/bangervm/banger/internal/buildinfo"
	"github.com/bangervm/banger/internal/config"
	"github.com/bangervm/banger/internal/dns"
	"github.com/bangervm/banger/internal/engine"
	"github.com/bangervm/banger/internal/image"
	"github.com/bangervm/banger/internal/kernel"
	"github.com/bangervm/banger/internal/network"
	"github.com/bangervm/banger/internal/paths"
	"github.com/bangervm/banger/internal/safesocket"
	"github.com/bangervm/banger/internal/sdnotify"
	"github.com/bangervm/banger/internal/sshconf"
	"github.com/bangervm/banger/internal/store"
	"github.com/bangervm/banger/internal/vm"
	"github.com/bangervm/banger/internal/vmtemplate"
)

// Config wires a daemon.
type Config struct {
	Layout   paths.Layout
	Settings config.Config
	Log      *slog.Logger
	// Socket is where the API listens; empty means Layout.Socket(). A
	// Kubernetes launcher serves it at the path its Pod's exec reaches.
	Socket string
	// Launcher is a Kubernetes launcher's daemon, which runs one VM in a
	// Pod sized for it: no VM templates (making one boots a second VM)
	// and no .vm DNS server (no other VM to resolve).
	Launcher bool
	// Network, when set, is the VM network, set up by the caller, used
	// instead of the host's (Settings.Network is then ignored): a
	// launcher's, made in its Pod's network namespace.
	Network *vm.Network
	// ShutdownTimeout bounds how long in-flight requests get to roll back
	// after the context is cancelled.
	ShutdownTimeout time.Duration
	// Accel forces QEMU's accelerator (a launcher whose Sandbox names
	// one); empty chooses as on any host (qemu.ChooseAccel).
	Accel engine.Accel
}

// ErrAlreadyRunning means another daemon holds the lock for this layout.
var ErrAlreadyRunning = errors.New("bangerd is already running")

// Run serves until ctx is cancelled (SIGTERM) or a client asks for a
// shutdown, then lets in-flight operations roll back and returns.
func Run(ctx context.Context, c Config) error {
	l := c.Layout
	if err := l.Check(); err != nil {
		return err
	}
	if err := l.Ensure(); err != nil {
		return err
	}
	lock, err := takeLock(l.LockFile())
	if err != nil {
		return err
	}
	defer lock.Close()
	// Written as soon as the lock is held, so that banger daemon stop
	// finds a daemon that is still starting.
	pid := os.Getpid()
	if err := writePIDFile(l.PIDFile(), pid); err != nil {
		return err
	}
	defer os.Remove(l.PIDFile())
	log := c.Log
	if err := clearDir(l.Tmp()); err != nil {
		return err
	}

	db, err := store.Open(ctx, l.DB())
	if err != nil {
		return err
	}
	defer db.Close()
	images, err := image.New(image.Config{Layout: l, DB: db, Log: log.With("op", "image"), DebianMirror: c.Settings.DebianMirror})
	if err != nil {
		return err
	}
	kernels := kernel.NewStore(kernel.StoreConfig{Layout: l, DB: db, Log: log.With("op", "kernel")})
	engs, choose, engInfo := engines(ctx, c.Settings, c.Accel, l.State, log)
	log.Info("engine", "default", engInfo.Default, "reason", engInfo.Reason)
	var netInfo api.NetworkInfo
	netw, netErr := c.Network, error(nil)
	if netw != nil {
		netInfo.Configured, netInfo.Ops, netInfo.Bridge = true, api.OpsLocal, netw.Bridge
		netInfo.Subnet, netInfo.Gateway = netw.Subnet.String(), network.Gateway(netw.Subnet).Addr().String()
	} else {
		netw, netErr = setupNetwork(ctx, db, c.Settings, log, &netInfo)
	}
	netInfo.Enabled = netw != nil
	switch {
	case netErr != nil:
		// VMs without a network still run; asking for one gets this
		// error.
		log.Error("host networking unavailable", "err", netErr)
		netInfo.Reason = netErr.Error()
		netInfo.DNSRouteReason = "host networking is unavailable"
	case netw == nil:
		netInfo.Reason = networkOffReason()
		netInfo.DNSRouteReason = "host networking is off"
		log.Info("host networking is off: VMs get no NIC", "reason", netInfo.Reason)
	}
	autoStop := c.Settings.AutoStopAfter()
	if autoStop > 0 {
		log.Info("stopping VMs idle for longer than auto_stop", "auto_stop", autoStop)
	}
	var templates *vmtemplate.Store
	switch max := c.Settings.TemplateCacheBytes(); {
	case c.Launcher:
		// A launcher runs one VM: no template would be used again.
	case max > 0:
		templates = vmtemplate.New(l.Templates(), max)
	default:
		log.Info("templates are off (template_cache_max = \"0\"): every VM boots cold")
	}
	vms, err := vm.New(ctx, vm.Config{
		Layout: l, DB: db, Images: images, Kernels: kernels, Engines: engs, Choose: choose, Settings: c.Settings,
		AgentBinary: agentBinary(), Log: log.With("op", "vm"), Network: netw, NetworkErr: netErr,
		SSH: &sshconf.Dir{Path: filepath.Join(l.State, "ssh")}, AutoStop: autoStop,
		Templates: templates,
	})
	if err != nil {
		return err
	}
	// Deferred after the store's Close, so it runs first: the manager's
	// goroutines write to the store.
	defer vms.Close()
	var dnsSrv *dns.Server
	err = errors.New("a launcher runs no .vm DNS server")
	if !c.Launcher {
		dnsSrv, err = dns.Listen(dns.Config{Addr: c.Settings.DNSAddr, Lookup: vms.Lookup, Logger: log.With("op", "dns")})
	}
	switch {
	case c.Launcher:
		netInfo.DNSRouteReason = err.Error()
	case err != nil:
		log.Warn("no .vm DNS server", "err", err)
		netInfo.DNSError = err.Error()
		if netw != nil {
			netInfo.DNSRouteReason = "no .vm DNS server to route to"
		}
	default:
		go dnsSrv.Serve(ctx)
		defer dnsSrv.Close()
		netInfo.DNSAddr = dnsSrv.Addr().String()
		log.Info("dns server", "addr", netInfo.DNSAddr)
		if netw != nil {
			// Deferred after Close, so it runs first: the resolver stops
			// asking before the server goes.
			revert, whyNot := routeDNS(ctx, netw, dnsSrv.Addr(), log)
			if revert != nil {
				defer revert()
			}
			netInfo.DNSRouted, netInfo.DNSRouteReason = revert != nil, whyNot
		}
	}

	socket := c.Socket
	if socket == "" {
		socket = l.Socket()
	}
	ln, err := safesocket.Listen(socket, 0o600)
	if err != nil {
		return err
	}
	defer ln.Close()

	ctx, stop := context.WithCancel(ctx)
	defer stop()
	srv := &http.Server{
		Handler: apiserver.New(apiserver.Config{
			Images: images, Kernels: kernels, VMs: vms, Templates: vms, Engine: engInfo, Network: netInfo, Log: log, Shutdown: stop,
			Version: api.VersionInfo{Version: buildinfo.Version, Commit: buildinfo.Commit, BuildTime: buildinfo.BuildTime, APIVersion: api.Version, PID: pid},
		}),
		ConnContext: apiserver.PeerCheck(log),
		// Requests inherit the daemon's context so that a SIGTERM
		// cancels long pulls, which then roll back before Shutdown
		// returns.
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ReadHeaderTimeout: 10 * time.Second,
	}
	log.Info("bangerd started", "pid", pid, "socket", socket, "version", buildinfo.Version)
	// Under systemd (Type=notify), `systemctl start` returns once the
	// socket is listening.
	if err := sdnotify.Ready(); err != nil {
		log.Warn("tell systemd bangerd is ready", "err", err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	serveErr := make(chan error, 1)
	go func() {
		defer wg.Done()
		serveErr <- srv.Serve(ln)
	}()
	select {
	case <-ctx.Done():
	case err := <-serveErr:
		return fmt.Errorf("serve: %w", err)
	}
	timeout := c.ShutdownTimeout
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	err = srv.Shutdown(sctx)
	wg.Wait()
	images.Close()
	log.Info("bangerd stopped", "err", err)
	return nil
}

func writePIDFile(path string, pid int) error {
	f, err := paths.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("pidfile: %w", err)
	}
	_, err = f.WriteString(strconv.Itoa(pid) + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write pidfile %s: %w", path, err)
	}
	return nil
}

func takeLock(path string) (*os.File, error) {
	f, err := paths.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			pid, _ := os.ReadFile(filepath.Join(filepath.Dir(path), "bangerd.pid"))
			return nil, fmt.Errorf("%w (pid %s) for %s", ErrAlreadyRunning, strings.TrimSpace(string(pid)), filepath.Dir(path))
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return f, nil
}

// clearDir empties the staging directory: whatever is there was left by a
// daemon that died mid-operation.
func clearDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return fmt.Errorf("clear staging: %w", err)
		}
	}
	return nil
}

// agentBinary finds banger-agent: $BANGER_AGENT, beside bangerd, or the
// install location.
func agentBinary() string {
	if p := os.Getenv("BANGER_AGENT"); p != "" {
		return p
	}
	candidates := []string{"/usr/local/lib/banger/banger-agent"}
	if self, err := os.Executable(); err == nil {
		candidates = append([]string{filepath.Join(filepath.Dir(self), "banger-agent")}, candidates...)
	}
	for _, p := range candidates {
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p
		}
	}
	return ""
}
