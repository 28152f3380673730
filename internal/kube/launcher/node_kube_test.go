//go:build kube

package launcher

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	crclient "sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/bangervm/banger/client"
	"github.com/bangervm/banger/internal/kube/api"
	"github.com/bangervm/banger/internal/kube/controller"
	"github.com/bangervm/banger/internal/kube/images"
	"github.com/bangervm/banger/internal/kube/kubetest"
	"github.com/bangervm/banger/internal/kube/podexec"
	"github.com/bangervm/banger/internal/testutil"
	"github.com/bangervm/banger/internal/testutil/kubecluster"
)

// The Sandbox's image reaches the VM through the node, with no registry
// anywhere: it is only imported into the node's containerd, under a
// registry name that does not resolve, so a pull by the launcher would
// fail. A Sandbox of it boots and runs commands; a second Sandbox of the
// same image on the node boots from the node's copy too; the first,
// stopped and started, keeps its disk (a file written in the guest is
// there) and its rootfs init container exports nothing.
func TestSandboxImageFromNode(t *testing.T) {
	ctrl.SetLogger(logr.FromSlogHandler(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	start := time.Now()
	tarPath := kubetest.LauncherImage(t)
	cl := kubecluster.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	l := kubetest.ImportLauncher(ctx, t, cl, tarPath)
	const ref = "node-only.invalid/test/busybox:1"
	imgTar := filepath.Join(t.TempDir(), "busybox.tar")
	if err := images.WriteTar(imgTar, map[string]v1.Image{ref: testutil.BusyboxImage(t)}); err != nil {
		t.Fatal(err)
	}
	if err := cl.ImportImages(ctx, imgTar); err != nil {
		t.Fatal(err)
	}
	kubetest.InstallCRD(ctx, t, cl)
	c := kubetest.Client(t, cl.Config)
	kubetest.StartController(t, cl.Config, l)

	newBox := func(name string) *api.Sandbox {
		sb := &api.Sandbox{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
			Spec: api.SandboxSpec{Image: ref, MemoryMiB: 256, DiskSize: "512M"}}
		if err := c.Create(ctx, sb); err != nil {
			t.Fatal(err)
		}
		return sb
	}
	one := newBox("one")
	bc := readyClient(ctx, t, cl, c, "one")
	if log := containerLog(cl, "one-vm", "rootfs"); !strings.Contains(log, "exported") {
		t.Errorf("rootfs init container's log %q: want the export", log)
	}
	checkExec(t, ctx, bc, "one")
	if _, code := execIn(t, ctx, bc, "one", "sh", "-c", "echo kept > /root/mark && sync"); code != 0 {
		t.Fatalf("write /root/mark: exit %d", code)
	}
	t.Logf("one ran at %s", time.Since(start).Round(100*time.Millisecond))

	// Stopped, so the second fits the node's two CPUs.
	setRunning(ctx, t, c, one, false)
	waitPodGone(ctx, t, c, "one-vm")
	two := newBox("two")
	bc2 := readyClient(ctx, t, cl, c, "two")
	checkExec(t, ctx, bc2, "two")
	if err := c.Delete(ctx, two); err != nil {
		t.Fatal(err)
	}
	waitPodGone(ctx, t, c, "two-vm")
	t.Logf("two ran at %s", time.Since(start).Round(100*time.Millisecond))

	setRunning(ctx, t, c, one, true)
	bc = readyClient(ctx, t, cl, c, "one")
	if log := containerLog(cl, "one-vm", "rootfs"); !strings.Contains(log, "nothing to export") {
		t.Errorf("rootfs init container's log after start %q: want nothing exported", log)
	}
	if out, code := execIn(t, ctx, bc, "one", "cat", "/root/mark"); out != "kept\n" || code != 0 {
		t.Errorf("/root/mark after stop and start: %q, exit %d; want kept", out, code)
	}
	t.Logf("one started again at %s", time.Since(start).Round(100*time.Millisecond))
}

// readyClient waits until the Sandbox's Pod is Ready and returns banger's
// client of its launcher.
func readyClient(ctx context.Context, t *testing.T, cl *kubecluster.Cluster, c crclient.Client, name string) *client.Client {
	t.Helper()
	podName := name + "-vm"
	kubetest.Poll(ctx, t, podName+" ready", func() (bool, error) {
		var pod corev1.Pod
		if err := c.Get(ctx, crclient.ObjectKey{Namespace: "default", Name: podName}, &pod); err != nil {
			return false, err
		}
		if pod.Status.Phase == corev1.PodFailed || pod.Status.Phase == corev1.PodSucceeded {
			t.Fatalf("pod %s: %s %s\nrootfs: %s\nlauncher: %s", podName, pod.Status.Phase, pod.Status.Message,
				containerLog(cl, podName, "rootfs"), podLog(cl, podName))
		}
		for _, cond := range pod.Status.Conditions {
			if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue {
				return true, nil
			}
		}
		return false, fmt.Errorf("phase %s, init %+v; log:\n%s", pod.Status.Phase, pod.Status.InitContainerStatuses, podLog(cl, podName))
	})
	return client.NewWithDial("pod default/"+podName, func(ctx context.Context) (net.Conn, error) {
		return podexec.Dial(ctx, cl.Config, "default", podName, controller.ContainerName)
	})
}

func containerLog(cl *kubecluster.Cluster, pod, container string) string {
	b, err := cl.Client.CoreV1().Pods("default").GetLogs(pod, &corev1.PodLogOptions{Container: container}).DoRaw(context.Background())
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	return string(b)
}

func setRunning(ctx context.Context, t *testing.T, c crclient.Client, sb *api.Sandbox, running bool) {
	t.Helper()
	if err := c.Get(ctx, crclient.ObjectKeyFromObject(sb), sb); err != nil {
		t.Fatal(err)
	}
	sb.Spec.Running = &running
	if err := c.Update(ctx, sb); err != nil {
		t.Fatal(err)
	}
}

func waitPodGone(ctx context.Context, t *testing.T, c crclient.Client, name string) {
	t.Helper()
	kubetest.Poll(ctx, t, name+" gone", func() (bool, error) {
		err := c.Get(ctx, crclient.ObjectKey{Namespace: "default", Name: name}, &corev1.Pod{})
		return apierrors.IsNotFound(err), err
	})
}
