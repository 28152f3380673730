//go:build kube

package launcher

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
	"testing"
	"time"

	"github.com/go-logr/logr"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	crclient "sigs.k8s.io/controller-runtime/pkg/client"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/bangervm/banger/client"
	"github.com/bangervm/banger/internal/kube/api"
	"github.com/bangervm/banger/internal/kube/controller"
	"github.com/bangervm/banger/internal/kube/images"
	"github.com/bangervm/banger/internal/kube/podexec"
	"github.com/bangervm/banger/internal/testutil"
	"github.com/bangervm/banger/internal/testutil/kubecluster"
)

// poll calls ok every second until it reports done, failing the test when
// ctx ends first.
func poll(ctx context.Context, t *testing.T, what string, ok func() (bool, error)) {
	t.Helper()
	for n := 1; ; n++ {
		done, err := ok()
		if done {
			return
		}
		if n%30 == 0 {
			t.Logf("still waiting for %s: %v", what, err)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %v (last: %v)", what, ctx.Err(), err)
		case <-time.After(time.Second):
		}
	}
}

// startController runs the Sandbox controller in this process until the
// test ends.
func startController(t *testing.T, cl *kubecluster.Cluster, s *runtime.Scheme, l controller.Launcher) {
	mgr, err := ctrl.NewManager(cl.Config, ctrl.Options{
		Scheme: s, Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: "0", Cache: controller.CacheOptions(),
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
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("controller: %v", err)
		}
	})
}

// podLog is the launcher container's log, for failures.
func podLog(cl *kubecluster.Cluster, pod string) string {
	b, err := cl.Client.CoreV1().Pods("default").GetLogs(pod, &corev1.PodLogOptions{Container: controller.ContainerName}).DoRaw(context.Background())
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	return string(b)
}

// qemuRSS finds the pod's QEMU on this machine (the pod's processes are
// ours to see) and returns its resident set in KiB.
func qemuRSS(t *testing.T, podUID string) (pid, kib int) {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		comm, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "comm"))
		cg, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cgroup"))
		if !strings.HasPrefix(string(comm), "qemu-system") || !strings.Contains(string(cg), strings.ReplaceAll(podUID, "-", "_")) && !strings.Contains(string(cg), podUID) {
			continue
		}
		st, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "status"))
		for _, line := range strings.Split(string(st), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
				kib, _ = strconv.Atoi(f[1])
				return p, kib
			}
		}
	}
	return 0, 0
}

// podMemory is the Pod's memory cgroup (v1, cgroupfs) figures in MiB:
// resident, page cache and peak usage.
func podMemory(uid string) string {
	dir := "/sys/fs/cgroup/memory/kubepods/burstable/pod" + uid
	st, err := os.ReadFile(filepath.Join(dir, "memory.stat"))
	if err != nil {
		return err.Error()
	}
	var out []string
	for _, line := range strings.Split(string(st), "\n") {
		if f := strings.Fields(line); len(f) == 2 && (f[0] == "total_rss" || f[0] == "total_cache") {
			n, _ := strconv.ParseInt(f[1], 10, 64)
			out = append(out, fmt.Sprintf("%s %d MiB", f[0], n>>20))
		}
	}
	if b, err := os.ReadFile(filepath.Join(dir, "memory.max_usage_in_bytes")); err == nil {
		n, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		out = append(out, fmt.Sprintf("peak %d MiB", n>>20))
	}
	return strings.Join(out, ", ")
}

// On the real test cluster: the controller's launcher Pod, from the image
// internal/kube/images builds, unprivileged with every capability
// dropped, pulls the Sandbox's image from a registry on the node's
// address, boots the VM under QEMU and turns Ready; banger's own client,
// over `banger-launcher api` run through the Pod's exec subresource, runs
// commands in the guest with their output and exit statuses; deleting the
// Sandbox deletes the Pod.
func TestLauncherBootsVM(t *testing.T) {
	ctrl.SetLogger(logr.FromSlogHandler(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	start := time.Now()
	f := newFixture(t)
	img, err := images.LauncherImage(t.Context(), images.LauncherConfig{
		Launcher: f.path("banger-launcher"), Agent: f.path("banger-agent"),
		Kernel: filepath.Join(f.kernelDir, "vmlinux"), Initrd: filepath.Join(f.kernelDir, "initrd.img"),
	})
	if err != nil {
		t.Fatal(err)
	}
	tarPath := filepath.Join(t.TempDir(), "images.tar")
	if err := images.WriteTar(tarPath, map[string]v1.Image{images.Launcher: img}); err != nil {
		t.Fatal(err)
	}
	t.Logf("launcher image built at %s", time.Since(start).Round(100*time.Millisecond))

	cl := kubecluster.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if err := cl.ImportImages(ctx, tarPath); err != nil {
		t.Fatal(err)
	}
	// The registry: pushed to on this machine's loopback, pulled from on
	// the node's address inside the cluster's namespace.
	reg := testutil.NewRegistry(t)
	reg.Push(t, testutil.BusyboxImage(t), "test/busybox:1")
	ln, err := cl.Listen(0)
	if err != nil {
		t.Fatal(err)
	}
	ref := reg.Serve(t, ln) + "/test/busybox:1"

	crd, err := api.LoadCRD(api.CRDPath())
	if err == nil {
		err = cl.CreateCRD(ctx, crd)
	}
	if err != nil {
		t.Fatal(err)
	}
	s := runtime.NewScheme()
	err = errors.Join(clientgoscheme.AddToScheme(s), api.AddToScheme(s))
	var c crclient.Client
	if err == nil {
		c, err = crclient.New(cl.Config, crclient.Options{Scheme: s})
	}
	if err != nil {
		t.Fatal(err)
	}
	l := controller.DefaultLauncher(images.Launcher)
	l.PullPolicy = corev1.PullNever
	startController(t, cl, s, l)

	box := &api.Sandbox{ObjectMeta: metav1.ObjectMeta{Name: "box", Namespace: "default"},
		Spec: api.SandboxSpec{Image: ref, MemoryMiB: 256, DiskSize: "512M"}}
	if err := c.Create(ctx, box); err != nil {
		t.Fatal(err)
	}
	var pod corev1.Pod
	poll(ctx, t, "launcher pod ready", func() (bool, error) {
		if err := c.Get(ctx, crclient.ObjectKey{Namespace: "default", Name: "box-vm"}, &pod); err != nil {
			return false, err
		}
		if pod.Status.Phase == corev1.PodFailed || pod.Status.Phase == corev1.PodSucceeded {
			t.Fatalf("launcher pod %s: %s\n%s", pod.Status.Phase, pod.Status.Message, podLog(cl, pod.Name))
		}
		for _, cond := range pod.Status.Conditions {
			if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue {
				return true, nil
			}
		}
		return false, fmt.Errorf("phase %s, conditions %+v; log:\n%s", pod.Status.Phase, pod.Status.Conditions, podLog(cl, pod.Name))
	})
	t.Logf("launcher pod ready at %s", time.Since(start).Round(100*time.Millisecond))
	sc := pod.Spec.Containers[0].SecurityContext
	if pod.Spec.Containers[0].SecurityContext.Privileged != nil && *sc.Privileged || len(sc.Capabilities.Add) != 0 {
		t.Errorf("launcher container security context %+v: want unprivileged, no capabilities added", sc)
	}

	bc := client.NewWithDial("pod default/box-vm", func(ctx context.Context) (net.Conn, error) {
		return podexec.Dial(ctx, cl.Config, "default", "box-vm", controller.ContainerName)
	})
	checkExec(t, ctx, bc, "box")
	if v, err := bc.VM(ctx, "box"); err != nil || v.State != "running" || v.MemoryMiB != 256 {
		t.Errorf("vm box through the pod: %+v, %v", v, err)
	}
	// The Pod's overhead: what it holds beyond the guest's memory once
	// the guest has touched most of it (busybox dd allocates its buffer).
	if _, code := execIn(t, ctx, bc, "box", "dd", "if=/dev/zero", "of=/dev/null", "bs=160M", "count=1"); code != 0 {
		t.Errorf("dd in the guest: exit %d", code)
	}
	pid, kib := qemuRSS(t, string(pod.UID))
	t.Logf("QEMU (pid %d) resident: %d MiB for a 256 MiB guest (busybox, TCG, 160 MiB touched); pod memory cgroup: %s",
		pid, kib>>10, podMemory(string(pod.UID)))
	t.Logf("commands run at %s", time.Since(start).Round(100*time.Millisecond))

	if err := c.Delete(ctx, box); err != nil {
		t.Fatal(err)
	}
	poll(ctx, t, "launcher pod gone", func() (bool, error) {
		err := c.Get(ctx, crclient.ObjectKeyFromObject(&pod), &corev1.Pod{})
		return apierrors.IsNotFound(err), err
	})
	t.Logf("launcher pod gone at %s", time.Since(start).Round(100*time.Millisecond))
}
