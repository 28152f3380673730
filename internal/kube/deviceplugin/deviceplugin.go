// Package deviceplugin is banger-node's kubelet device plugin: it makes a
// host device node (/dev/kvm) a resource Pods request (banger.dev/kvm: 1)
// and hands it to the containers the kubelet allocates it to as a device
// node (a DeviceSpec: the kubelet adds it to the container and to its
// device cgroup), so a launcher gets KVM without privileged mode or a
// host path. Many VMs share one /dev/kvm, so the resource is advertised
// as a fixed number of units, as KubeVirt's devices.kubevirt.io/kvm is.
//
// The plugin speaks the kubelet's v1beta1 device plugin API: it serves
// DevicePlugin on a unix socket in the kubelet's device-plugins directory
// and registers it on the kubelet's socket there. A restarted kubelet
// empties that directory and makes its socket again; the plugin notices
// (its own socket gone, or the kubelet's replaced) and serves and
// registers again.
package deviceplugin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

// Resource names banger-node serves.
const (
	ResourceKVM = "banger.dev/kvm"
	ResourceTUN = "banger.dev/tun"
)

// DefaultUnits is how many Pods on a node may hold the resource at once:
// KubeVirt's default for /dev/kvm, and the kubelet's default Pod limit, so
// the device never limits a node before its Pod count does.
const DefaultUnits = 110

// Device is one host device node served as a resource.
type Device struct {
	// Resource is the extended resource name (banger.dev/kvm).
	Resource string
	// Path is the device node, the same on the host and in the container.
	Path string
	// Sysfs is the device's dev file under /sys/class (MAJ:MIN), which
	// says the host has the device: the agent runs unprivileged, so its
	// /dev is not the host's and its device cgroup lets it open none of
	// the host's devices (that grant is what Allocate gives a Pod), but
	// /sys/class shows the host's.
	Sysfs string
	// Units is how many Pods may hold it at once.
	Units int
}

// KVM is /dev/kvm as banger.dev/kvm.
func KVM() Device {
	return Device{Resource: ResourceKVM, Path: "/dev/kvm", Sysfs: "/sys/class/misc/kvm/dev", Units: DefaultUnits}
}

// TUN is /dev/net/tun as banger.dev/tun.
func TUN() Device {
	return Device{Resource: ResourceTUN, Path: "/dev/net/tun", Sysfs: "/sys/class/misc/tun/dev", Units: DefaultUnits}
}

// Present reports whether the host has the device: its sysfs dev file
// holds a device number.
func (d Device) Present() error {
	b, err := os.ReadFile(d.Sysfs)
	if err != nil {
		return fmt.Errorf("%s: %w", d.Path, err)
	}
	maj, min, ok := strings.Cut(strings.TrimSpace(string(b)), ":")
	if _, err := strconv.ParseUint(maj, 10, 32); err != nil || !ok {
		return fmt.Errorf("%s: %s holds %q, not a device number", d.Path, d.Sysfs, b)
	}
	if _, err := strconv.ParseUint(min, 10, 32); err != nil {
		return fmt.Errorf("%s: %s holds %q, not a device number", d.Path, d.Sysfs, b)
	}
	return nil
}

// Plugin serves one Device to the kubelet.
type Plugin struct {
	Device Device
	// Dir is the kubelet's device-plugins directory; empty means
	// pluginapi.DevicePluginPath (/var/lib/kubelet/device-plugins).
	Dir string
	Log *slog.Logger
	// Check is how often the plugin looks at the kubelet's socket and
	// the device (default 2 s).
	Check time.Duration
}

func (p *Plugin) dir() string {
	if p.Dir == "" {
		return pluginapi.DevicePluginPath
	}
	return p.Dir
}

func (p *Plugin) log() *slog.Logger {
	if p.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return p.Log
}

func (p *Plugin) check() time.Duration {
	if p.Check <= 0 {
		return 2 * time.Second
	}
	return p.Check
}

// socketName is the plugin's socket in Dir, named for the resource
// (banger.dev/kvm: banger.dev-kvm.sock) so several plugins share Dir.
func (p *Plugin) socketName() string {
	return strings.ReplaceAll(p.Device.Resource, "/", "-") + ".sock"
}

// Run serves the device and keeps it registered with the kubelet until
// ctx ends: waits until the host has the device and the kubelet's socket is
// there, serves, registers, and starts over whenever the kubelet
// restarts. It returns nil when ctx ends.
func (p *Plugin) Run(ctx context.Context) error {
	if p.Device.Units <= 0 {
		return fmt.Errorf("device %s: units must be positive", p.Device.Resource)
	}
	for ctx.Err() == nil {
		if err := p.Device.Present(); err != nil {
			p.log().Info("no such device here, not advertised", "resource", p.Device.Resource, "err", err)
			if !sleep(ctx, 10*p.check()) {
				break
			}
			continue
		}
		kubelet := filepath.Join(p.dir(), filepath.Base(pluginapi.KubeletSocket))
		before, err := os.Stat(kubelet)
		if err != nil {
			p.log().Info("waiting for the kubelet's socket", "path", kubelet, "err", err)
			if !sleep(ctx, p.check()) {
				break
			}
			continue
		}
		if err := p.serveOnce(ctx, kubelet, before); err != nil {
			p.log().Error("device plugin", "resource", p.Device.Resource, "err", err)
			if !sleep(ctx, p.check()) {
				break
			}
		}
	}
	return nil
}

// serveOnce serves the plugin's socket, registers it on the kubelet's
// socket, and returns when ctx ends or the kubelet restarted (its socket
// replaced, or ours removed): the caller then starts over.
func (p *Plugin) serveOnce(ctx context.Context, kubelet string, kubeletInfo os.FileInfo) error {
	sock := filepath.Join(p.dir(), p.socketName())
	if err := os.Remove(sock); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove stale socket %s: %w", sock, err)
	}
	lis, err := net.Listen("unix", sock)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", sock, err)
	}
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	srv := grpc.NewServer()
	pluginapi.RegisterDevicePluginServer(srv, &server{dev: p.Device, ctx: sctx, check: p.check(), log: p.log()})
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	defer func() {
		stop()
		srv.Stop()
		os.Remove(sock)
	}()
	mine, err := os.Stat(sock)
	if err != nil {
		return err
	}
	if err := register(ctx, kubelet, p.Device.Resource, p.socketName()); err != nil {
		return err
	}
	p.log().Info("registered with the kubelet", "resource", p.Device.Resource, "units", p.Device.Units, "socket", sock)
	tick := time.NewTicker(p.check())
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-served:
			return fmt.Errorf("serve %s: %w", sock, err)
		case <-tick.C:
			if !sameFile(sock, mine) || !sameFile(kubelet, kubeletInfo) {
				p.log().Info("the kubelet restarted: registering again", "resource", p.Device.Resource)
				return nil
			}
		}
	}
}

// sameFile reports whether path is still the file fi was read from.
func sameFile(path string, fi os.FileInfo) bool {
	now, err := os.Stat(path)
	return err == nil && os.SameFile(now, fi)
}

// register tells the kubelet at socket that the plugin serves resource on
// endpoint (a socket name in the same directory).
func register(ctx context.Context, socket, resource, endpoint string) error {
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("kubelet socket %s: %w", socket, err)
	}
	defer conn.Close()
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err = pluginapi.NewRegistrationClient(conn).Register(rctx, &pluginapi.RegisterRequest{
		Version:      pluginapi.Version,
		Endpoint:     endpoint,
		ResourceName: resource,
	})
	if err != nil {
		return fmt.Errorf("register %s with the kubelet at %s: %w", resource, socket, err)
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

// server is the DevicePlugin service for one Device.
type server struct {
	pluginapi.UnimplementedDevicePluginServer
	dev   Device
	ctx   context.Context // ends when the plugin stops serving
	check time.Duration
	log   *slog.Logger
}

func (s *server) GetDevicePluginOptions(context.Context, *pluginapi.Empty) (*pluginapi.DevicePluginOptions, error) {
	return &pluginapi.DevicePluginOptions{}, nil
}

// devices lists the Units, all healthy or all not: they are one device.
func (s *server) devices(health string) []*pluginapi.Device {
	ds := make([]*pluginapi.Device, s.dev.Units)
	for i := range ds {
		ds[i] = &pluginapi.Device{ID: unitID(i), Health: health}
	}
	return ds
}

func unitID(i int) string { return "unit-" + strconv.Itoa(i) }

// ListAndWatch sends the units, then again whenever the device comes or
// goes (the node's KVM module unloaded, say), so the
// scheduler stops placing Pods that need it.
func (s *server) ListAndWatch(_ *pluginapi.Empty, stream pluginapi.DevicePlugin_ListAndWatchServer) error {
	health := func() string {
		if s.dev.Present() != nil {
			return pluginapi.Unhealthy
		}
		return pluginapi.Healthy
	}
	last := health()
	if err := stream.Send(&pluginapi.ListAndWatchResponse{Devices: s.devices(last)}); err != nil {
		return err
	}
	tick := time.NewTicker(s.check)
	defer tick.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return nil
		case <-stream.Context().Done():
			return nil
		case <-tick.C:
			if h := health(); h != last {
				s.log.Info("device health changed", "resource", s.dev.Resource, "health", h)
				last = h
				if err := stream.Send(&pluginapi.ListAndWatchResponse{Devices: s.devices(h)}); err != nil {
					return err
				}
			}
		}
	}
}

// Allocate gives each container the device node, read-write (no mknod:
// the container cannot make other device nodes from it).
func (s *server) Allocate(_ context.Context, req *pluginapi.AllocateRequest) (*pluginapi.AllocateResponse, error) {
	resp := &pluginapi.AllocateResponse{}
	for _, c := range req.ContainerRequests {
		for _, id := range c.DevicesIds {
			if !s.isUnit(id) {
				return nil, fmt.Errorf("allocate %s: unknown device %q", s.dev.Resource, id)
			}
		}
		resp.ContainerResponses = append(resp.ContainerResponses, &pluginapi.ContainerAllocateResponse{
			Devices: []*pluginapi.DeviceSpec{{ContainerPath: s.dev.Path, HostPath: s.dev.Path, Permissions: "rw"}},
		})
	}
	return resp, nil
}

func (s *server) isUnit(id string) bool {
	n, ok := strings.CutPrefix(id, "unit-")
	i, err := strconv.Atoi(n)
	return ok && err == nil && i >= 0 && i < s.dev.Units && unitID(i) == id
}

func (s *server) GetPreferredAllocation(context.Context, *pluginapi.PreferredAllocationRequest) (*pluginapi.PreferredAllocationResponse, error) {
	return &pluginapi.PreferredAllocationResponse{}, nil
}

func (s *server) PreStartContainer(context.Context, *pluginapi.PreStartContainerRequest) (*pluginapi.PreStartContainerResponse, error) {
	return &pluginapi.PreStartContainerResponse{}, nil
}
