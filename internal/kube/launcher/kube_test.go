//go:build kube

package launcher

import (
	"context"
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
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	crclient "sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/bangervm/banger/client"
	"github.com/bangervm/banger/internal/kube/api"
	"github.com/bangervm/banger/internal/kube/controller"
	"github.com/bangervm/banger/internal/kube/kubetest"
	"github.com/bangervm/banger/internal/kube/podexec"
	"github.com/bangervm/banger/internal/testutil"
	"github.com/bangervm/banger/internal/testutil/kubecluster"
)

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
	tarPath := kubetest.LauncherImage(t)
	t.Logf("launcher image built at %s", time.Since(start).Round(100*time.Millisecond))

	cl := kubecluster.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	l := kubetest.ImportLauncher(ctx, t, cl, tarPath)
	// The registry: pushed to on this machine's loopback, pulled from on
	// the node's address inside the cluster's namespace.
	reg := testutil.NewRegistry(t)
	reg.Push(t, testutil.BusyboxImage(t), "test/busybox:1")
	ref := kubetest.ServeRegistry(t, cl, reg) + "/test/busybox:1"
	kubetest.InstallCRD(ctx, t, cl)
	c := kubetest.Client(t, cl.Config)
	kubetest.StartController(t, cl.Config, l)

	box := &api.Sandbox{ObjectMeta: metav1.ObjectMeta{Name: "box", Namespace: "default"},
		Spec: api.SandboxSpec{Image: ref, MemoryMiB: 256, DiskSize: "512M"}}
	if err := c.Create(ctx, box); err != nil {
		t.Fatal(err)
	}
	var pod corev1.Pod
	kubetest.Poll(ctx, t, "launcher pod ready", func() (bool, error) {
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
	kubetest.Poll(ctx, t, "launcher pod gone", func() (bool, error) {
		err := c.Get(ctx, crclient.ObjectKeyFromObject(&pod), &corev1.Pod{})
		return apierrors.IsNotFound(err), err
	})
	t.Logf("launcher pod gone at %s", time.Since(start).Round(100*time.Millisecond))
}
