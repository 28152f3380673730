//go:build kube

package launcher

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
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

// serveHTTP answers every request on ln with body, until the test ends.
func serveHTTP(t *testing.T, ln net.Listener, body string) {
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, body) })}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
}

// fetchAll fetches every url of targets (name → url) from inside vm at
// once with busybox wget, each killed after 5 s (a dropped connection),
// and returns what each printed, errors included, with its exit status.
// (Debian's busybox 1.35 wget crashes with -T.)
func fetchAll(t *testing.T, ctx context.Context, c *client.Client, vm string, targets map[string]string) map[string]string {
	t.Helper()
	var script strings.Builder
	for name, url := range targets {
		// One line per target: the output, newlines folded, then the status.
		fmt.Fprintf(&script, "(out=$(timeout 5 wget -q -O - %s 2>&1); st=$?; echo %s $st $out) &\n", url, name)
	}
	script.WriteString("wait\n")
	out, code := execIn(t, ctx, c, vm, "sh", "-c", script.String())
	if code != 0 {
		t.Fatalf("probes in %s: exit %d: %s", vm, code, out)
	}
	got := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.SplitN(line, " ", 3)
		if len(f) < 2 {
			t.Fatalf("probes in %s: line %q", vm, line)
		}
		got[f[0]] = strings.Join(f[2:], " ") + " (exit " + f[1] + ")"
	}
	return got
}

// podNetNS is the network namespace of the Pod with uid: its QEMU's.
func podNetNS(t *testing.T, uid string) string {
	pid, _ := qemuRSS(t, uid)
	if pid == 0 {
		t.Fatalf("no QEMU of pod %s on this machine", uid)
	}
	return fmt.Sprintf("/proc/%d/ns/net", pid)
}

// On the real test cluster, whose bridge CNI enforces no NetworkPolicy,
// a guest's --net mode is enforced by its launcher inside its own Pod.
// Servers: one on a public address (TEST-NET-2, on the node's loopback),
// one in a busybox Pod, one on the node's address, the kubernetes
// Service, and one inside each launcher Pod's own namespace. A public
// guest reaches the public server only: not the server Pod, the node,
// the Service, the other Sandbox's Pod nor its own. A full guest reaches
// the server Pod, the node and the Service (the cluster path works), but
// neither the other Sandbox's Pod (closed by that launcher to new
// connections) nor its own (nothing of its launcher is a guest's
// business). Each launcher Pod got NET_ADMIN and MKNOD, no more.
func TestSandboxNetIsolation(t *testing.T) {
	ctrl.SetLogger(logr.FromSlogHandler(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	start := time.Now()
	tarPath := kubetest.LauncherImage(t)
	cl := kubecluster.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	l := kubetest.ImportLauncher(ctx, t, cl, tarPath)
	// Two 1-vCPU Sandboxes at once on the test node's 2 CPUs.
	l.CPUOverhead = resource.Quantity{}
	reg := testutil.NewRegistry(t)
	reg.Push(t, testutil.BusyboxImage(t), "test/busybox:1")
	ref := kubetest.ServeRegistry(t, cl, reg) + "/test/busybox:1"
	kubetest.InstallCRD(ctx, t, cl)
	c := kubetest.Client(t, cl.Config)
	kubetest.StartController(t, cl.Config, l)

	// The servers outside the launcher Pods.
	publicAddr := netip.MustParseAddr("198.51.100.7")
	pubLn, err := cl.ListenPublic(publicAddr, 8080)
	if err != nil {
		t.Fatal(err)
	}
	serveHTTP(t, pubLn, "public-server")
	nodeLn, err := cl.Listen(0)
	if err != nil {
		t.Fatal(err)
	}
	serveHTTP(t, nodeLn, "node-server")
	no := false
	server := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "server", Namespace: "default"},
		Spec: corev1.PodSpec{
			AutomountServiceAccountToken: &no,
			Containers: []corev1.Container{{
				Name: "httpd", Image: kubecluster.BusyboxImage, ImagePullPolicy: corev1.PullNever,
				Command: []string{"/bin/busybox", "sh", "-c",
					"/bin/busybox mkdir -p /tmp/w && echo server-pod > /tmp/w/index.html && exec /bin/busybox httpd -f -p 8080 -h /tmp/w"},
			}},
		},
	}
	if err := c.Create(ctx, server); err != nil {
		t.Fatal(err)
	}

	for name, mode := range map[string]string{"pub": api.NetPublic, "full": api.NetFull} {
		sb := &api.Sandbox{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
			Spec: api.SandboxSpec{Image: ref, MemoryMiB: 256, DiskSize: "512M", Net: mode}}
		if err := c.Create(ctx, sb); err != nil {
			t.Fatal(err)
		}
	}
	pods := map[string]*corev1.Pod{}
	for _, name := range []string{"pub-vm", "full-vm", "server"} {
		var pod corev1.Pod
		kubetest.Poll(ctx, t, name+" ready", func() (bool, error) {
			if err := c.Get(ctx, crclient.ObjectKey{Namespace: "default", Name: name}, &pod); err != nil {
				return false, err
			}
			if pod.Status.Phase == corev1.PodFailed || pod.Status.Phase == corev1.PodSucceeded {
				t.Fatalf("pod %s: %s\n%s", name, pod.Status.Phase, podLog(cl, name))
			}
			for _, cond := range pod.Status.Conditions {
				if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue && pod.Status.PodIP != "" {
					return true, nil
				}
			}
			return false, fmt.Errorf("phase %s, conditions %+v", pod.Status.Phase, pod.Status.Conditions)
		})
		pods[name] = &pod
	}
	t.Logf("pods ready at %s", time.Since(start).Round(100*time.Millisecond))

	for _, name := range []string{"pub-vm", "full-vm"} {
		pod := pods[name]
		caps := pod.Spec.Containers[0].SecurityContext.Capabilities
		if !slices.Equal(caps.Add, []corev1.Capability{"NET_ADMIN", "MKNOD"}) || !slices.Equal(caps.Drop, []corev1.Capability{"ALL"}) {
			t.Errorf("%s capabilities %+v: want ALL dropped, NET_ADMIN and MKNOD added", name, caps)
		}
		// A server in the launcher Pod's own namespace, on every
		// address: what another Pod's guest, or its own guest, must not
		// reach.
		ln, err := kubecluster.ListenIn(podNetNS(t, string(pod.UID)), "0.0.0.0:8080")
		if err != nil {
			t.Fatal(err)
		}
		serveHTTP(t, ln, "launcher-pod-"+name)
	}

	url := func(host string, port int) string { return "http://" + net.JoinHostPort(host, fmt.Sprint(port)) + "/" }
	targets := map[string]string{
		"public":   url(publicAddr.String(), 8080),
		"server":   url(pods["server"].Status.PodIP, 8080),
		"node":     "http://" + nodeLn.Addr().String() + "/",
		"service":  "http://10.96.0.1:443/", // the apiserver answers 400 to plain HTTP
		"pub-pod":  url(pods["pub-vm"].Status.PodIP, 8080),
		"full-pod": url(pods["full-vm"].Status.PodIP, 8080),
	}
	reached := map[string]string{
		"public": "public-server", "server": "server-pod", "node": "node-server", "service": "400",
		"pub-pod": "launcher-pod-pub-vm", "full-pod": "launcher-pod-full-vm",
	}
	want := map[string][]string{
		"pub":  {"public"},
		"full": {"public", "server", "node", "service"},
	}
	for _, vm := range []string{"pub", "full"} {
		bc := client.NewWithDial("pod default/"+vm+"-vm", func(ctx context.Context) (net.Conn, error) {
			return podexec.Dial(ctx, cl.Config, "default", vm+"-vm", controller.ContainerName)
		})
		got := fetchAll(t, ctx, bc, vm, targets)
		for _, target := range []string{"public", "server", "node", "service", "pub-pod", "full-pod"} {
			ok := strings.Contains(got[target], reached[target])
			t.Logf("%s guest → %s: %q", vm, target, got[target])
			if ok != slices.Contains(want[vm], target) {
				t.Errorf("%s guest → %s (%s): reached %v (%q), want %v", vm, target, targets[target], ok, got[target], !ok)
			}
		}
	}
	t.Logf("probes done at %s", time.Since(start).Round(100*time.Millisecond))
}
