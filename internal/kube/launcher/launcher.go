// Package launcher is what runs in a Sandbox's Pod (banger-launcher): a
// one-VM bangerd. `run` serves banger's own API (package daemon; a VM
// with --net public or full gets the Pod's network namespace as its host
// network, see podNetwork) on a unix socket in the container, keeps banger's state
// on the volume at /var/lib/banger, imports the kernel baked into the
// image, makes the Sandbox's image from what the Pod's rootfs init
// container handed over (else pulls it), creates the VM named after the Sandbox
// (or starts it again when the volume already holds it) and, on SIGTERM,
// stops it the data-safe way before exiting 0. `api` joins its stdin and
// stdout to one connection on that socket: the only way in, through the
// Pod's exec subresource (no port is opened, so a guest never reaches the
// API). `ready` is the Pod's readiness probe.
package launcher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	bapi "github.com/bangervm/banger/api"
	"github.com/bangervm/banger/client"
	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/config"
	"github.com/bangervm/banger/internal/daemon"
	"github.com/bangervm/banger/internal/engine"
	"github.com/bangervm/banger/internal/engine/qemu"
	"github.com/bangervm/banger/internal/kube/api"
	"github.com/bangervm/banger/internal/kube/rootfs"
	"github.com/bangervm/banger/internal/paths"
	"github.com/bangervm/banger/internal/safesocket"
	"github.com/bangervm/banger/internal/vm"
)

// Fixed places in the launcher container.
const (
	// Home holds banger's state, the VM's disk included: the Pod mounts
	// its volume here.
	Home = "/var/lib/banger"
	// Runtime holds the API socket, the pidfile and the lock.
	Runtime = "/run/banger"
	// Socket is the API socket `banger-launcher api` reaches.
	Socket = Runtime + "/api.sock"
	// KernelName is the name the image's kernel gets in banger's store.
	KernelName = "launcher"
	// NodeImageName is the name the Sandbox's image gets in banger's
	// store when the node's kubelet pulled it.
	NodeImageName = "sandbox"
)

// Environment the controller sets on the launcher container.
const (
	EnvSpec = "BANGER_SANDBOX_SPEC"
	EnvName = "BANGER_SANDBOX_NAME"
)

// Config is one launcher.
type Config struct {
	Name string          // the Sandbox's, and the VM's, name
	Spec api.SandboxSpec // defaulted by the controller
	// Home and Runtime default to the constants above; Socket to
	// Runtime/api.sock.
	Home, Runtime, Socket string
	// KernelDir holds vmlinux and, optionally, initrd.img: the kernel
	// imported into banger's store on first start.
	KernelDir string
	Log       *slog.Logger
	// StopTimeout bounds the VM's stop on SIGTERM (default 25 s, inside
	// the Pod's 30 s grace period).
	StopTimeout time.Duration
}

// FromEnv reads the Sandbox's name and spec from the environment the
// controller gives the container.
func FromEnv() (name string, spec api.SandboxSpec, err error) {
	name = os.Getenv(EnvName)
	if name == "" {
		return "", spec, fmt.Errorf("%s is not set: the launcher runs in a Sandbox's Pod, made by banger-controller", EnvName)
	}
	raw := os.Getenv(EnvSpec)
	if raw == "" {
		return "", spec, fmt.Errorf("%s is not set: the launcher runs in a Sandbox's Pod, made by banger-controller", EnvSpec)
	}
	if err := json.Unmarshal([]byte(raw), &spec); err != nil {
		return "", spec, fmt.Errorf("%s: %w", EnvSpec, err)
	}
	return name, spec, nil
}

func (c *Config) defaults() {
	if c.Home == "" {
		c.Home = Home
	}
	if c.Runtime == "" {
		c.Runtime = Runtime
	}
	if c.Socket == "" {
		c.Socket = filepath.Join(c.Runtime, "api.sock")
	}
	if c.Log == nil {
		c.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if c.StopTimeout == 0 {
		c.StopTimeout = 25 * time.Second
	}
}

// settings are bangerd's for a Pod: no host networking (a VM with a
// network gets the Pod's own, see podNetwork), QEMU (no Firecracker in the image), the
// image's kernel by default.
func settings() config.Config {
	s := config.Default()
	s.Network = false
	s.Jailer = false
	s.Engine = engine.QEMU
	s.DefaultKernel = KernelName
	return s
}

// Run boots the Sandbox's VM and serves the API until ctx is cancelled
// (SIGTERM), then stops the VM with its data flushed and returns nil. It
// returns early, with an error, if the VM cannot be booted or stops on
// its own with an error; nil if the guest powered itself off.
func Run(ctx context.Context, c Config) error {
	c.defaults()
	mode := c.Spec.Net
	if mode == "" {
		mode = api.NetNone
	}
	if mode != api.NetNone && mode != api.NetPublic && mode != api.NetFull {
		return fmt.Errorf("net %q: want none, public or full: %w", mode, errdefs.ErrInvalidArgument)
	}
	disk, err := config.ParseSize(c.Spec.DiskSize)
	if err != nil && c.Spec.DiskSize != "" {
		return fmt.Errorf("diskSize: %w", err)
	}
	accel, err := Accel(c.Spec.Accel, qemu.ProbeHost())
	if err != nil {
		return err
	}
	// The volume's root comes as the Pod made it (an emptyDir is 0777):
	// banger keeps its state only under directories nobody else can
	// change (paths.Layout.Ensure).
	if err := os.MkdirAll(c.Home, 0o700); err != nil {
		return err
	}
	if err := os.Chmod(c.Home, 0o700); err != nil {
		return fmt.Errorf("state volume %s: %w", c.Home, err)
	}
	l := paths.Layout{
		Config: filepath.Join(c.Home, "config"), State: filepath.Join(c.Home, "state"),
		Cache: filepath.Join(c.Home, "cache"), Runtime: c.Runtime,
	}
	var netw *vm.Network
	if mode != api.NetNone {
		if netw, err = podNetwork(ctx, c.Log); err != nil {
			return fmt.Errorf("net %s: %w", mode, err)
		}
	}
	// The daemon outlives ctx: the VM is stopped through it first.
	dctx, stopDaemon := context.WithCancel(context.WithoutCancel(ctx))
	defer stopDaemon()
	daemonDone := make(chan struct{})
	var daemonErr error
	go func() {
		defer close(daemonDone)
		daemonErr = daemon.Run(dctx, daemon.Config{Layout: l, Settings: settings(), Log: c.Log, Socket: c.Socket, Launcher: true, Accel: accel, Network: netw})
	}()
	stop := func() error {
		stopDaemon()
		<-daemonDone
		return daemonErr
	}
	cl := client.New(c.Socket)
	if err := waitAPI(ctx, cl, daemonDone); err != nil {
		if derr := stop(); derr != nil {
			return fmt.Errorf("banger's daemon in the launcher: %w", derr)
		}
		return err
	}
	c.Log.Info("launcher: api up", "socket", c.Socket)
	if err := boot(ctx, cl, c, disk, mode); err != nil {
		if ctx.Err() != nil {
			// SIGTERM while booting: stop whatever came up.
			stopVM(cl, c)
			stop()
			return nil
		}
		stop()
		return err
	}
	c.Log.Info("launcher: vm running", "vm", c.Name)
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			stopVM(cl, c)
			if err := stop(); err != nil {
				return err
			}
			return nil
		case <-daemonDone:
			return fmt.Errorf("banger's daemon in the launcher ended: %v", daemonErr)
		case <-tick.C:
			v, err := cl.VM(ctx, c.Name)
			if err != nil || v.State == bapi.VMRunning || v.State == bapi.VMPaused || ctx.Err() != nil {
				continue
			}
			stop()
			if v.State == bapi.VMStopped {
				c.Log.Info("launcher: the guest stopped on its own", "vm", c.Name, "reason", v.Reason)
				return nil
			}
			return fmt.Errorf("vm %s is %s: %s", c.Name, v.State, v.Reason)
		}
	}
}

// Accel is QEMU's accelerator for the Sandbox's spec.accel on host h
// (the Pod's view of its node): tcg is forced; kvm is forced too, and
// refused when this Pod's KVM cannot run the guest (no /dev/kvm in the
// container: the Pod was not given banger.dev/kvm; or a KVM that runs
// only paravirtualized guests), never falling back to emulation; empty
// (a Sandbox from before accel) chooses as banger does on any host.
func Accel(spec string, h qemu.HostInfo) (engine.Accel, error) {
	switch spec {
	case "":
		return "", nil
	case api.AccelTCG:
		return engine.AccelTCG, nil
	case api.AccelKVM:
		a, reason := qemu.ChooseAccel(h)
		if a == engine.AccelKVM {
			return a, nil
		}
		reason, _, _ = strings.Cut(reason, "; using TCG")
		return "", fmt.Errorf("accel kvm: %s: this Pod cannot use KVM, and a Sandbox with accel kvm never falls back to emulation; "+
			"run it on a node whose banger-node offers banger.dev/kvm and whose KVM runs ordinary guests, or set spec.accel: tcg: %w",
			reason, errdefs.ErrFailedPrecondition)
	}
	return "", fmt.Errorf("accel %q: want kvm or tcg: %w", spec, errdefs.ErrInvalidArgument)
}

// waitAPI waits until the daemon answers on its socket.
func waitAPI(ctx context.Context, cl *client.Client, daemonDone <-chan struct{}) error {
	for {
		if _, err := cl.Version(ctx); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-daemonDone:
			return errors.New("banger's daemon in the launcher ended before it served")
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// boot makes the VM run: started again if the volume already holds it,
// else created from the Sandbox's image and the image's kernel (imported).
func boot(ctx context.Context, cl *client.Client, c Config, disk int64, mode string) error {
	log := func(e bapi.Event) { c.Log.Info("launcher: "+e.Phase, "message", e.Message) }
	v, err := cl.VM(ctx, c.Name)
	switch {
	case err == nil && v.State == bapi.VMRunning:
		return nil
	case err == nil:
		// A Pod that stopped between creating the VM and marking it
		// created: mark it now, so no later Pod exports the image again.
		if err := rootfs.Done(c.Home); err != nil {
			c.Log.Warn("launcher: mark the vm created", "err", err)
		}
		_, err = cl.StartVM(ctx, c.Name, log)
		if err != nil {
			return fmt.Errorf("start vm %s: %w", c.Name, err)
		}
		return nil
	case !errdefs.IsNotFound(err):
		return err
	}
	kernel := c.Spec.Kernel
	if kernel == "" {
		kernel = KernelName
		if _, err := cl.Kernel(ctx, KernelName); errdefs.IsNotFound(err) {
			req := bapi.ImportKernelRequest{Name: KernelName, Kernel: filepath.Join(c.KernelDir, "vmlinux")}
			if initrd := filepath.Join(c.KernelDir, "initrd.img"); exists(initrd) {
				req.Initrd = initrd
			}
			if _, err := cl.ImportKernel(ctx, req, log); err != nil {
				return fmt.Errorf("import the launcher's kernel: %w", err)
			}
		} else if err != nil {
			return err
		}
	}
	img, err := sandboxImage(ctx, cl, c, kernel, log)
	if err != nil {
		return err
	}
	_, err = cl.CreateVM(ctx, bapi.CreateVMRequest{
		Name: c.Name, Image: img.Name, Kernel: kernel, VCPU: int(c.Spec.VCPUs), MemoryMiB: int(c.Spec.MemoryMiB),
		DiskBytes: disk, Net: mode, Engine: engine.QEMU, Labels: c.Spec.Labels,
	}, log)
	if err != nil {
		return fmt.Errorf("create vm %s: %w", c.Name, err)
	}
	if err := rootfs.Done(c.Home); err != nil {
		c.Log.Warn("launcher: mark the vm created", "err", err)
	}
	return nil
}

// sandboxImage makes the Sandbox's image an image of banger's: from the
// tar the Pod's rootfs init container wrote (the image as the node's
// kubelet pulled it, through the node's cache and pull secrets),
// converted as a pulled image's single layer; else, in a Pod without that
// init container, pulled from its registry by the launcher itself.
func sandboxImage(ctx context.Context, cl *client.Client, c Config, kernel string, log func(bapi.Event)) (bapi.Image, error) {
	tarPath, cfg, ok, err := rootfs.Handed(c.Home)
	if err != nil {
		return bapi.Image{}, err
	}
	if !ok {
		img, err := cl.PullImage(ctx, bapi.PullImageRequest{Ref: c.Spec.Image, Kernel: kernel}, log)
		if err != nil {
			return bapi.Image{}, fmt.Errorf("pull %s: %w", c.Spec.Image, err)
		}
		return img, nil
	}
	c.Log.Info("launcher: image from the node", "image", c.Spec.Image)
	img, err := cl.RegisterImage(ctx, bapi.RegisterImageRequest{Name: NodeImageName, RootFS: tarPath, Format: bapi.RootFSTar, Kernel: kernel, Config: cfg}, log)
	if err != nil {
		return bapi.Image{}, fmt.Errorf("image %s from the node: %w", c.Spec.Image, err)
	}
	return img, nil
}

// stopVM is the data-safe stop of `banger vm stop`: the agent syncs and
// unmounts, then the engine ends.
func stopVM(cl *client.Client, c Config) {
	ctx, cancel := context.WithTimeout(context.Background(), c.StopTimeout)
	defer cancel()
	res, err := cl.StopVM(ctx, c.Name)
	if err != nil && !errdefs.IsNotFound(err) {
		c.Log.Error("launcher: stop vm", "vm", c.Name, "err", err)
		return
	}
	c.Log.Info("launcher: vm stopped", "vm", c.Name, "method", res.Method)
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// Ready reports whether the VM runs and its agent answered (banger marks
// a VM running only then): the Pod's readiness probe.
func Ready(ctx context.Context, socket, name string) error {
	v, err := client.New(socket).VM(ctx, name)
	if err != nil {
		return err
	}
	if v.State != bapi.VMRunning {
		return fmt.Errorf("vm %s is %s", name, v.State)
	}
	return nil
}

// API joins in and out to one connection on the API socket until both
// directions end: what a Pod exec of `banger-launcher api` carries. in's
// end half-closes the connection, so the server still answers what it
// read.
func API(ctx context.Context, socket string, in io.Reader, out io.Writer) error {
	conn, err := safesocket.Dial(ctx, socket)
	if err != nil {
		return fmt.Errorf("launcher api at %s: %w", socket, err)
	}
	defer conn.Close()
	go func() {
		io.Copy(conn, in)
		conn.CloseWrite()
	}()
	_, err = io.Copy(out, conn)
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return err
	}
	return nil
}
