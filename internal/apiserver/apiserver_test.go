package apiserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/client"
	"github.com/bangervm/banger/errdefs"
)

// fakeImages is an image store whose pull reports progress and then waits
// for release or cancellation.
type fakeImages struct {
	images   map[string]api.Image
	release  chan struct{}
	canceled chan struct{}
}

func (f *fakeImages) List(ctx context.Context) ([]api.Image, error) {
	var out []api.Image
	for _, i := range f.images {
		out = append(out, i)
	}
	return out, nil
}

func (f *fakeImages) Get(ctx context.Context, name string) (api.Image, error) {
	i, ok := f.images[name]
	if !ok {
		return i, fmt.Errorf("image %q: %w", name, errdefs.ErrNotFound)
	}
	return i, nil
}

func (f *fakeImages) Delete(ctx context.Context, name string) error {
	if _, err := f.Get(ctx, name); err != nil {
		return err
	}
	delete(f.images, name)
	return nil
}

func (f *fakeImages) Pull(ctx context.Context, req api.PullImageRequest, progress func(api.Event)) (api.Image, error) {
	if req.Ref == "bad" {
		return api.Image{}, fmt.Errorf("image reference %q: %w", req.Ref, errdefs.ErrInvalidArgument)
	}
	progress(api.Event{Phase: "layer", Layer: 1, Layers: 1, Current: 5, Total: 10})
	select {
	case <-f.release:
	case <-ctx.Done():
		close(f.canceled)
		return api.Image{}, ctx.Err()
	}
	img := api.Image{Name: req.Name, Ref: req.Ref}
	f.images[req.Name] = img
	return img, nil
}

func (f *fakeImages) Register(ctx context.Context, req api.RegisterImageRequest, progress func(api.Event)) (api.Image, error) {
	return api.Image{}, fmt.Errorf("register: %w", errdefs.ErrFailedPrecondition)
}

func (f *fakeImages) Promote(ctx context.Context, req api.PromoteImageRequest) (api.Image, error) {
	return api.Image{}, fmt.Errorf("promote: %w", errdefs.ErrFailedPrecondition)
}

func (f *fakeImages) Cache(ctx context.Context) ([]api.CachedBlob, error) { return nil, nil }

func (f *fakeImages) PruneCache(ctx context.Context, req api.PruneCacheRequest) (api.PruneCacheResult, error) {
	return api.PruneCacheResult{DryRun: req.DryRun}, nil
}

type fakeKernels struct{}

func (fakeKernels) List(ctx context.Context) ([]api.Kernel, error) { return nil, nil }
func (fakeKernels) Get(ctx context.Context, name string) (api.Kernel, error) {
	return api.Kernel{}, fmt.Errorf("kernel %q: %w", name, errdefs.ErrNotFound)
}
func (fakeKernels) Delete(ctx context.Context, name string) error { return nil }
func (fakeKernels) Import(ctx context.Context, req api.ImportKernelRequest, p func(api.Event)) (api.Kernel, error) {
	return api.Kernel{Name: req.Name}, nil
}
func (fakeKernels) Pull(ctx context.Context, req api.PullKernelRequest, p func(api.Event)) (api.Kernel, error) {
	return api.Kernel{}, fmt.Errorf("registry down: %w", errdefs.ErrUnavailable)
}

func serve(t *testing.T, imgs *fakeImages) *client.Client {
	t.Helper()
	return serveConfig(t, Config{Images: imgs})
}

// serveConfig serves c (with fake kernels, a test version and a discarding
// log filled in) on a real unix socket and returns a client for it.
func serveConfig(t *testing.T, c Config) *client.Client {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "api.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	c.Kernels, c.Log, c.Version = fakeKernels{}, log, api.VersionInfo{Version: "test", APIVersion: api.Version}
	srv := &http.Server{
		Handler:     New(c),
		ConnContext: PeerCheck(log),
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return client.New(sock)
}

func TestRoundTrip(t *testing.T) {
	imgs := &fakeImages{images: map[string]api.Image{"dev": {Name: "dev"}}, release: make(chan struct{}), canceled: make(chan struct{})}
	c := serve(t, imgs)
	ctx := context.Background()

	if v, err := c.Version(ctx); err != nil || v.Version != "test" {
		t.Fatalf("Version = %+v, %v", v, err)
	}
	if _, err := c.Image(ctx, "dev"); err != nil {
		t.Fatal(err)
	}
	_, err := c.Image(ctx, "nope")
	if !errdefs.IsNotFound(err) || err.Error() != `image "nope": not found` {
		t.Errorf("missing image: %v (class %v)", err, errdefs.Class(err))
	}
	if _, err := c.PullImage(ctx, api.PullImageRequest{Ref: "bad"}, nil); !errdefs.IsInvalidArgument(err) {
		t.Errorf("bad ref: %v", err)
	}
	if _, err := c.PullKernel(ctx, api.PullKernelRequest{Ref: "x"}, nil); !errdefs.IsUnavailable(err) {
		t.Errorf("kernel pull: %v", err)
	}
	if _, err := c.RegisterImage(ctx, api.RegisterImageRequest{}, nil); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("register: %v", err)
	}

	// Streaming: progress arrives before the result.
	var got []api.Event
	go func() { time.Sleep(50 * time.Millisecond); close(imgs.release) }()
	img, err := c.PullImage(ctx, api.PullImageRequest{Ref: "r", Name: "new"}, func(e api.Event) { got = append(got, e) })
	if err != nil || img.Name != "new" {
		t.Fatalf("pull = %+v, %v", img, err)
	}
	if len(got) != 1 || got[0].Current != 5 || got[0].Type != api.EventProgress {
		t.Errorf("progress events %+v", got)
	}
	if err := c.DeleteImage(ctx, "new"); err != nil {
		t.Fatal(err)
	}
}

// A client that goes away cancels the operation in the daemon.
func TestCancelOnDisconnect(t *testing.T) {
	imgs := &fakeImages{images: map[string]api.Image{}, release: make(chan struct{}), canceled: make(chan struct{})}
	c := serve(t, imgs)
	ctx, cancel := context.WithCancel(context.Background())
	_, err := c.PullImage(ctx, api.PullImageRequest{Ref: "r", Name: "x"}, func(api.Event) { cancel() })
	if !errdefs.IsCanceled(err) {
		t.Errorf("err = %v, want canceled", err)
	}
	select {
	case <-imgs.canceled:
	case <-time.After(5 * time.Second):
		t.Fatal("daemon-side pull was not cancelled when the client went away")
	}
}

func TestVersionMismatch(t *testing.T) {
	imgs := &fakeImages{images: map[string]api.Image{}}
	c := serve(t, imgs)
	old := api.Version
	api.Version = "0"
	defer func() { api.Version = old }()
	_, err := c.Images(context.Background())
	if !errdefs.IsVersionMismatch(err) {
		t.Fatalf("err = %v, want version mismatch", err)
	}
	var want = "speaks API v" + old
	if !contains(err.Error(), want) || !contains(err.Error(), "banger daemon stop") {
		t.Errorf("message %q should name the daemon's version and the fix", err)
	}
	if errors.Unwrap(err) == nil {
		t.Error("class lost")
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

// GET /v1/network returns what the daemon recorded at start, as is.
func TestNetworkInfo(t *testing.T) {
	want := api.NetworkInfo{
		Configured: true, Enabled: true, Bridge: "banger0", Subnet: "172.30.0.0/24", Gateway: "172.30.0.1",
		Ops: api.OpsRootHelper, RootHelper: "/run/banger/root.sock", ForwardingWasOn: true,
		DNSAddr: "127.0.0.1:42069", DNSRouteReason: "systemd-resolved is not running",
	}
	c := serveConfig(t, Config{Images: &fakeImages{}, Network: want})
	got, err := c.Network(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("Network() = %+v\nwant %+v", got, want)
	}
	// Networking off: the reason goes through, nothing else is made up.
	off := api.NetworkInfo{Reason: "off: BANGER_NETWORK=off", DNSAddr: "127.0.0.1:42069"}
	c = serveConfig(t, Config{Images: &fakeImages{}, Network: off})
	if got, err := c.Network(context.Background()); err != nil || got != off {
		t.Errorf("Network() = %+v, %v; want %+v", got, err, off)
	}
}

// The version answer lists what is in flight, which banger update reads
// before restarting the daemon: a pull while it runs, nothing after.
func TestVersionListsOperations(t *testing.T) {
	imgs := &fakeImages{images: map[string]api.Image{}, release: make(chan struct{}), canceled: make(chan struct{})}
	c := serve(t, imgs)
	ctx := context.Background()
	started := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		_, err := c.PullImage(ctx, api.PullImageRequest{Ref: "r", Name: "x"}, func(api.Event) { close(started) })
		done <- err
	}()
	<-started
	v, err := c.Version(ctx)
	if err != nil || len(v.Operations) != 1 || v.Operations[0] != "POST "+api.PathImagePull {
		t.Fatalf("during a pull: Version = %+v, %v", v, err)
	}
	close(imgs.release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// The client has the pull's result a moment before the server's
	// handler has returned and the operation is struck off: wait for it.
	for i := 0; ; i++ {
		v, err := c.Version(ctx)
		if err == nil && len(v.Operations) == 0 {
			break
		}
		if i == 500 {
			t.Fatalf("after the pull: Version = %+v, %v; want no operation", v, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
