package deviceplugin

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

// fakeKubelet is the kubelet's side of registration: a real gRPC
// Registration server on dir/kubelet.sock that passes on each request.
type fakeKubelet struct {
	pluginapi.UnimplementedRegistrationServer
	reqs chan *pluginapi.RegisterRequest
	srv  *grpc.Server
}

func (k *fakeKubelet) Register(_ context.Context, r *pluginapi.RegisterRequest) (*pluginapi.Empty, error) {
	k.reqs <- r
	return &pluginapi.Empty{}, nil
}

func startKubelet(t *testing.T, dir string) *fakeKubelet {
	t.Helper()
	lis, err := net.Listen("unix", filepath.Join(dir, "kubelet.sock"))
	if err != nil {
		t.Fatal(err)
	}
	k := &fakeKubelet{reqs: make(chan *pluginapi.RegisterRequest, 4), srv: grpc.NewServer()}
	pluginapi.RegisterRegistrationServer(k.srv, k)
	go k.srv.Serve(lis)
	t.Cleanup(k.srv.Stop)
	return k
}

func (k *fakeKubelet) next(t *testing.T) *pluginapi.RegisterRequest {
	t.Helper()
	select {
	case r := <-k.reqs:
		return r
	case <-time.After(30 * time.Second):
		t.Fatal("the plugin did not register within 30s")
		return nil
	}
}

// dialPlugin connects to the plugin's socket as the kubelet does after a
// registration.
func dialPlugin(t *testing.T, dir string, r *pluginapi.RegisterRequest) pluginapi.DevicePluginClient {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+filepath.Join(dir, r.Endpoint), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return pluginapi.NewDevicePluginClient(conn)
}

func TestPluginRegistersServesAndReregisters(t *testing.T) {
	dir := t.TempDir()
	// The device's sysfs file, removed later as when the module goes.
	sysfs := filepath.Join(dir, "dev")
	writeDev(t, sysfs)
	k := startKubelet(t, dir)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	p := &Plugin{Device: Device{Resource: ResourceKVM, Path: "/dev/kvm", Sysfs: sysfs, Units: 3}, Dir: dir, Check: 50 * time.Millisecond}
	go func() { done <- p.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	r := k.next(t)
	if r.Version != pluginapi.Version || r.ResourceName != ResourceKVM || r.Endpoint != "banger.dev-kvm.sock" {
		t.Fatalf("register request = %+v", r)
	}
	cl := dialPlugin(t, dir, r)
	stream, err := cl.ListAndWatch(ctx, &pluginapi.Empty{})
	if err != nil {
		t.Fatal(err)
	}
	first, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if len(first.Devices) != 3 {
		t.Fatalf("%d devices, want 3", len(first.Devices))
	}
	for _, d := range first.Devices {
		if d.Health != pluginapi.Healthy {
			t.Errorf("device %s is %s", d.ID, d.Health)
		}
	}

	resp, err := cl.Allocate(ctx, &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{
		{DevicesIds: []string{first.Devices[1].ID}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.ContainerResponses) != 1 || len(resp.ContainerResponses[0].Devices) != 1 {
		t.Fatalf("allocate response = %+v", resp)
	}
	spec := resp.ContainerResponses[0].Devices[0]
	if spec.HostPath != "/dev/kvm" || spec.ContainerPath != "/dev/kvm" || spec.Permissions != "rw" {
		t.Errorf("device spec = %+v, want /dev/kvm read-write (no mknod)", spec)
	}
	if len(resp.ContainerResponses[0].Mounts) != 0 || len(resp.ContainerResponses[0].Envs) != 0 {
		t.Errorf("allocate gives more than the device: %+v", resp.ContainerResponses[0])
	}
	if _, err := cl.Allocate(ctx, &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{
		{DevicesIds: []string{"unit-3"}},
	}}); err == nil {
		t.Error("allocate of a unit the plugin never listed succeeded")
	}

	// The device goes away: the units turn unhealthy on the same stream.
	if err := os.Remove(sysfs); err != nil {
		t.Fatal(err)
	}
	next, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if len(next.Devices) != 3 || next.Devices[0].Health != pluginapi.Unhealthy {
		t.Fatalf("after the device went: %+v", next.Devices)
	}
	writeDev(t, sysfs)

	// A kubelet restart: it stops, empties its directory (the plugin's
	// socket included) and serves a new socket. The plugin registers
	// again, on a socket that serves.
	k.srv.Stop()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() != "dev" {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
	k2 := startKubelet(t, dir)
	r2 := k2.next(t)
	if r2.ResourceName != ResourceKVM {
		t.Fatalf("re-register request = %+v", r2)
	}
	opts, err := dialPlugin(t, dir, r2).GetDevicePluginOptions(ctx, &pluginapi.Empty{})
	if err != nil {
		t.Fatalf("the plugin's new socket: %v", err)
	}
	if opts.PreStartRequired || opts.GetPreferredAllocationAvailable {
		t.Errorf("options = %+v", opts)
	}
}

func writeDev(t *testing.T, path string) {
	t.Helper()
	if err := os.WriteFile(path, []byte("10:232\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestPresent(t *testing.T) {
	dir := t.TempDir()
	d := Device{Path: "/dev/kvm", Sysfs: filepath.Join(dir, "dev")}
	if err := d.Present(); err == nil {
		t.Error("a missing sysfs file counted as a device")
	}
	for _, bad := range []string{"", "kvm", "10", "10:", ":232", "10:232:1", "-1:2"} {
		if err := os.WriteFile(d.Sysfs, []byte(bad), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := d.Present(); err == nil {
			t.Errorf("%q counted as a device number", bad)
		}
	}
	writeDev(t, d.Sysfs)
	if err := d.Present(); err != nil {
		t.Error(err)
	}
}

// A device that is not there is never advertised: the plugin does not
// register while it waits for it, and registers once it appears.
func TestPluginWaitsForDevice(t *testing.T) {
	dir := t.TempDir()
	sysfs := filepath.Join(dir, "dev")
	k := startKubelet(t, dir)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	registered := make(chan struct{})
	go func() {
		(&Plugin{Device: Device{Resource: ResourceTUN, Path: "/dev/net/tun", Sysfs: sysfs, Units: 1}, Dir: dir, Check: 10 * time.Millisecond}).Run(ctx)
	}()
	go func() {
		<-k.reqs
		close(registered)
	}()
	// The plugin looks for the device every 100 ms here; give it several
	// looks before the device exists.
	time.Sleep(500 * time.Millisecond)
	select {
	case <-registered:
		t.Fatal("registered a device that does not exist")
	default:
	}
	writeDev(t, sysfs)
	select {
	case <-registered:
	case <-time.After(30 * time.Second):
		t.Fatal("did not register once the device appeared")
	}
}
