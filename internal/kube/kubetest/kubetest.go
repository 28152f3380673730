// Package kubetest is what banger's Kubernetes tests share: the programs
// and kernel a launcher needs, the launcher image built from this tree and
// imported into a test cluster, the Sandbox CRD installed, and the Sandbox
// controller run in the test's own process. Tests tagged kube use it with
// internal/testutil/kubecluster; the launcher's untagged VM test uses
// Binaries and Kernel alone.
package kubetest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	kruntime "k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	crclient "sigs.k8s.io/controller-runtime/pkg/client"
	crconfig "sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/bangervm/banger/internal/engine/enginetest"
	"github.com/bangervm/banger/internal/kernel"
	"github.com/bangervm/banger/internal/kube/api"
	"github.com/bangervm/banger/internal/kube/controller"
	"github.com/bangervm/banger/internal/kube/images"
	"github.com/bangervm/banger/internal/testutil"
	"github.com/bangervm/banger/internal/testutil/kubecluster"
)

// Programs are the static builds Binaries provides.
var Programs = []string{"banger-launcher", "banger-agent", "banger-controller", "banger-node"}

// Binaries returns a directory holding static builds of Programs:
// $BANGER_BIN when it has them (make test-kube passes make's static
// builds), else one built now from this tree.
func Binaries(t testing.TB) string {
	t.Helper()
	if dir := os.Getenv("BANGER_BIN"); dir != "" && hasAll(dir) {
		return dir
	}
	dir := t.TempDir()
	args := []string{"build", "-trimpath", "-o", dir + "/"}
	for _, p := range Programs {
		args = append(args, "./cmd/"+p)
	}
	cmd := exec.Command("go", args...)
	cmd.Dir = root()
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build %v: %v\n%s", Programs, err, out)
	}
	return dir
}

func hasAll(dir string) bool {
	for _, p := range Programs {
		if _, err := os.Stat(filepath.Join(dir, p)); err != nil {
			return false
		}
	}
	return true
}

// root is this tree's top directory.
func root() string {
	_, self, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(self), "..", "..", "..")
}

// Kernel stages Debian's cloud kernel as banger imports it (vmlinux and
// initrd.img) in a directory of the test's, and returns the directory.
// It skips (fails under CI) without QEMU and mke2fs, which every use of
// the kernel needs.
func Kernel(t testing.TB) string {
	t.Helper()
	testutil.RequireTool(t, "qemu-system-x86_64", "qemu-system-x86")
	testutil.RequireTool(t, "mke2fs", "e2fsprogs")
	deb := enginetest.DebianCloudDeb(t)
	dir := t.TempDir()
	if _, err := kernel.ImportDeb(t.Context(), dir, deb); err != nil {
		t.Fatal(err)
	}
	return dir
}

// LauncherImage builds images.Launcher (banger.dev/launcher:dev) from
// Binaries and Kernel and returns the path of a docker-save tar of it.
func LauncherImage(t testing.TB) string {
	t.Helper()
	kdir := Kernel(t)
	bin := Binaries(t)
	img, err := images.LauncherImage(t.Context(), images.LauncherConfig{
		Launcher: filepath.Join(bin, "banger-launcher"), Agent: filepath.Join(bin, "banger-agent"),
		Kernel: filepath.Join(kdir, "vmlinux"), Initrd: filepath.Join(kdir, "initrd.img"),
	})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "images.tar")
	if err := images.WriteTar(path, map[string]v1.Image{images.Launcher: img}); err != nil {
		t.Fatal(err)
	}
	return path
}

// ImportLauncher imports the tar LauncherImage made into cl's node and
// returns the controller's default launcher for it, never pulled.
func ImportLauncher(ctx context.Context, t testing.TB, cl *kubecluster.Cluster, tarPath string) controller.Launcher {
	t.Helper()
	if err := cl.ImportImages(ctx, tarPath); err != nil {
		t.Fatal(err)
	}
	l := controller.DefaultLauncher(images.Launcher)
	l.PullPolicy = corev1.PullNever
	return l
}

// Scheme knows client-go's types, CRDs and Sandboxes.
func Scheme(t testing.TB) *kruntime.Scheme {
	t.Helper()
	s := kruntime.NewScheme()
	for _, add := range []func(*kruntime.Scheme) error{clientgoscheme.AddToScheme, apiextensionsv1.AddToScheme, api.AddToScheme} {
		if err := add(s); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// Client is a controller-runtime client of cfg's cluster with Scheme.
func Client(t testing.TB, cfg *rest.Config) crclient.Client {
	t.Helper()
	c, err := crclient.New(cfg, crclient.Options{Scheme: Scheme(t)})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// InstallCRD installs the Sandbox CRD of deploy/kubernetes into cl and
// returns once the apiserver serves it.
func InstallCRD(ctx context.Context, t testing.TB, cl *kubecluster.Cluster) {
	t.Helper()
	crd, err := api.LoadCRD(api.CRDPath())
	if err == nil {
		err = cl.CreateCRD(ctx, crd)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// StartController runs the Sandbox controller with launcher l in this
// process, as cfg's user, until stop is called or the test ends; stop
// waits until it has ended and may be called again. A test may run it
// more than once (a restart).
func StartController(t testing.TB, cfg *rest.Config, l controller.Launcher) (stop func()) {
	t.Helper()
	yes := true
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 Scheme(t),
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Cache:                  controller.CacheOptions(),
		Controller:             crconfig.Controller{SkipNameValidation: &yes},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := (&controller.Reconciler{Launcher: l}).Setup(mgr); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("controller: %v", err)
		}
	}
	t.Cleanup(stop)
	return stop
}

// Poll calls ok every 200 ms until it reports done, failing the test
// when ctx ends first with what it waited for and ok's last error (also
// logged every 30 s meanwhile: a VM boot under TCG takes a while).
func Poll(ctx context.Context, t testing.TB, what string, ok func() (bool, error)) {
	t.Helper()
	var last error
	for n := 1; ; n++ {
		done, err := ok()
		if done {
			return
		}
		last = err
		if n%150 == 0 {
			t.Logf("still waiting for %s: %v", what, err)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %v (last: %v)", what, ctx.Err(), last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// ServeRegistry serves reg on the cluster node's address and lets the
// node's containerd pull from it over plain HTTP: the kubelet pulls a
// Sandbox's image for its rootfs init container. It returns the
// registry's host:port, the prefix of its references.
func ServeRegistry(t testing.TB, cl *kubecluster.Cluster, reg *testutil.Registry) string {
	t.Helper()
	ln, err := cl.Listen(0)
	if err != nil {
		t.Fatal(err)
	}
	host := reg.Serve(t, ln)
	if err := cl.AllowHTTPRegistry(host); err != nil {
		t.Fatal(err)
	}
	return host
}
