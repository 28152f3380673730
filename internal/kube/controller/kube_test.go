//go:build kube

package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	crconfig "sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/yaml"

	"github.com/bangervm/banger/internal/kube/api"
	"github.com/bangervm/banger/internal/testutil/kubecluster"
)

func testScheme(t *testing.T) *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, apiextensionsv1.AddToScheme, api.AddToScheme} {
		if err := add(s); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// runController starts a manager with the Sandbox controller; stop ends it
// and waits until it has.
func runController(t *testing.T, cfg *rest.Config, s *runtime.Scheme, l Launcher) (stop func()) {
	t.Helper()
	yes := true
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 s,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Cache:                  CacheOptions(),
		// The test runs the controller twice in one process.
		Controller: crconfig.Controller{SkipNameValidation: &yes},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := (&Reconciler{Launcher: l}).Setup(mgr); err != nil {
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

// applyYAML creates every object of a multi-document YAML file.
func applyYAML(ctx context.Context, t *testing.T, c client.Client, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range strings.Split(string(b), "\n---\n") {
		var u unstructured.Unstructured
		if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if err := c.Create(ctx, &u); err != nil {
			t.Fatalf("%s: create %s %s: %v", path, u.GetKind(), u.GetName(), err)
		}
	}
}

func waitFor(ctx context.Context, t *testing.T, what string, ok func() (bool, error)) {
	t.Helper()
	var last error
	for {
		done, err := ok()
		if done {
			return
		}
		last = err
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %v (last: %v)", what, ctx.Err(), last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func waitPhase(ctx context.Context, t *testing.T, c client.Client, name, phase string) *api.Sandbox {
	t.Helper()
	var sb api.Sandbox
	waitFor(ctx, t, "sandbox "+name+" "+phase, func() (bool, error) {
		if err := c.Get(ctx, types.NamespacedName{Namespace: "default", Name: name}, &sb); err != nil {
			return false, err
		}
		return sb.Status.Phase == phase, errors.New("status " + sb.Status.Phase + " " + sb.Status.Reason + ": " + sb.Status.Message)
	})
	return &sb
}

func waitGone(ctx context.Context, t *testing.T, c client.Client, obj client.Object) {
	t.Helper()
	waitFor(ctx, t, obj.GetName()+" gone", func() (bool, error) {
		err := c.Get(ctx, client.ObjectKeyFromObject(obj), obj)
		return apierrors.IsNotFound(err), err
	})
}

func launcherPods(ctx context.Context, t *testing.T, c client.Client, sandbox string) []corev1.Pod {
	t.Helper()
	var pods corev1.PodList
	if err := c.List(ctx, &pods, client.InNamespace("default"), client.MatchingLabels{LabelSandbox: sandbox}); err != nil {
		t.Fatal(err)
	}
	return pods.Items
}

// On a real cluster: the CRD installs and rejects bad sizes and net modes;
// a Sandbox gets one launcher Pod owned by it, with the VM's size plus the
// overhead as requests, scheduled and running, its state mirrored into
// the Sandbox's status (and the scheduler's refusal when a second one does
// not fit the node's CPUs); a restarted controller adopts the Pods it made
// and makes no second one; deleting a Sandbox, or its TTL running out,
// deletes the Pod; a deleted launcher Pod fails its Sandbox instead of
// booting a fresh VM. The launcher here is busybox sleeping (the VM launcher is the
// next slice). The controller runs with deploy/kubernetes/rbac.yaml's
// service account's rights only.
func TestSandboxPods(t *testing.T) {
	ctrl.SetLogger(logr.FromSlogHandler(slog.NewTextHandler(os.Stderr, nil)))
	start := time.Now()
	cl := kubecluster.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	s := testScheme(t)
	c, err := client.New(cl.Config, client.Options{Scheme: s})
	if err != nil {
		t.Fatal(err)
	}

	crd, err := api.LoadCRD(api.CRDPath())
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.CreateCRD(ctx, crd); err != nil {
		t.Fatal(err)
	}
	newSandbox := func(name string, spec api.SandboxSpec) *api.Sandbox {
		return &api.Sandbox{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}, Spec: spec}
	}
	// Validation is the apiserver's, from the CRD's schema.
	for _, bad := range []api.SandboxSpec{
		{Image: "debian", Net: "host"},
		{Image: "debian", MemoryMiB: 64},
		{Image: "debian", VCPUs: 65},
		{Image: "debian", DiskSize: "4X"},
		{},
	} {
		err := c.Create(ctx, newSandbox("bad", bad))
		if !apierrors.IsInvalid(err) {
			t.Errorf("create sandbox with spec %+v: %v, want Invalid", bad, err)
		}
		if err == nil {
			_ = c.Delete(ctx, newSandbox("bad", bad))
		}
	}

	// The controller runs as deploy/kubernetes/rbac.yaml's service
	// account: the role grants all it needs.
	applyYAML(ctx, t, c, filepath.Join(filepath.Dir(api.CRDPath()), "rbac.yaml"))
	sa := rest.CopyConfig(cl.Config)
	sa.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:banger-system:banger-controller"}

	l := DefaultLauncher(kubecluster.BusyboxImage)
	l.PullPolicy = corev1.PullNever
	// A shell that ends on SIGTERM: sleep as PID 1 would ignore it and
	// hold every deletion for the whole grace period.
	l.Command = []string{"sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"}
	stop := runController(t, sa, s, l)

	box := newSandbox("box", api.SandboxSpec{Image: "debian", MemoryMiB: 256, DiskSize: "1G", Labels: map[string]string{"team": "a"}})
	if err := c.Create(ctx, box); err != nil {
		t.Fatal(err)
	}
	// Created with defaults from the CRD.
	if err := c.Get(ctx, client.ObjectKeyFromObject(box), box); err != nil {
		t.Fatal(err)
	}
	if box.Spec.VCPUs != 1 || box.Spec.Net != api.NetNone {
		t.Errorf("defaults: vcpus %d net %q, want 1 and none", box.Spec.VCPUs, box.Spec.Net)
	}
	st := waitPhase(ctx, t, c, "box", api.PhaseRunning).Status
	t.Logf("box running at %s", time.Since(start).Round(100*time.Millisecond))
	if st.Node != kubecluster.NodeName || st.PodName != "box-vm" || len(st.Addresses) == 0 {
		t.Errorf("status %+v: want node %s, pod box-vm, an address", st, kubecluster.NodeName)
	}
	pods := launcherPods(ctx, t, c, "box")
	if len(pods) != 1 {
		t.Fatalf("%d launcher pods for box, want 1", len(pods))
	}
	pod := pods[0]
	if !metav1.IsControlledBy(&pod, box) || pod.Labels["team"] != "a" {
		t.Errorf("pod owners %+v labels %v: want box as controller, team=a", pod.OwnerReferences, pod.Labels)
	}
	req := pod.Spec.Containers[0].Resources.Requests
	for name, want := range map[corev1.ResourceName]string{corev1.ResourceCPU: "1100m", corev1.ResourceMemory: "448Mi", corev1.ResourceEphemeralStorage: "1Gi"} {
		if q := req[name]; q.Cmp(resource.MustParse(want)) != 0 {
			t.Errorf("pod request %s = %s, want %s", name, q.String(), want)
		}
	}
	if pod.Status.QOSClass != corev1.PodQOSBurstable {
		t.Errorf("QoS class %s, want Burstable", pod.Status.QOSClass)
	}

	// Restart: the controller finds its Pod by name and owner.
	stop()
	second := newSandbox("second", api.SandboxSpec{Image: "debian", MemoryMiB: 128, DiskSize: "512M"})
	if err := c.Create(ctx, second); err != nil {
		t.Fatal(err)
	}
	runController(t, sa, s, l)
	// The node has 2 CPUs and box holds 1.1 of them: second's 1.1 does
	// not fit, and its status says what the scheduler said.
	waitFor(ctx, t, "second pending, unschedulable", func() (bool, error) {
		if err := c.Get(ctx, client.ObjectKeyFromObject(second), second); err != nil {
			return false, err
		}
		st := second.Status
		return st.Phase == api.PhasePending && st.Reason == "Unschedulable" && strings.Contains(st.Message, "Insufficient cpu"), fmt.Errorf("status %+v", st)
	})
	t.Logf("second unschedulable at %s", time.Since(start).Round(100*time.Millisecond))
	if pods := launcherPods(ctx, t, c, "box"); len(pods) != 1 || pods[0].UID != pod.UID {
		t.Errorf("after a controller restart box has %d pods (first %v), want the one it had (%s)", len(pods), pods, pod.UID)
	}
	if err := c.Get(ctx, client.ObjectKeyFromObject(box), box); err != nil || box.Status.Phase != api.PhaseRunning {
		t.Errorf("box after restart: %+v, %v", box.Status, err)
	}

	// Deleting the Sandbox deletes its Pod (the garbage collector, through
	// the owner reference), which makes room for second.
	if err := c.Delete(ctx, box); err != nil {
		t.Fatal(err)
	}
	waitGone(ctx, t, c, &pod)
	t.Logf("box's pod deleted at %s", time.Since(start).Round(100*time.Millisecond))
	waitPhase(ctx, t, c, "second", api.PhaseRunning)
	t.Logf("second running at %s", time.Since(start).Round(100*time.Millisecond))

	// A launcher Pod deleted behind the controller's back: the VM is
	// gone, and the Sandbox says so rather than booting a fresh one.
	secondPod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "second-vm", Namespace: "default"}}
	if err := c.Delete(ctx, secondPod); err != nil {
		t.Fatal(err)
	}
	waitGone(ctx, t, c, secondPod)
	if st := waitPhase(ctx, t, c, "second", api.PhaseFailed).Status; st.Reason != ReasonPodGone {
		t.Errorf("second after its pod was deleted: %+v, want reason %s", st, ReasonPodGone)
	}
	if pods := launcherPods(ctx, t, c, "second"); len(pods) != 0 {
		t.Errorf("second has %d pods after its pod was deleted, want none made again", len(pods))
	}

	t.Logf("second failed at %s", time.Since(start).Round(100*time.Millisecond))

	// A TTL deletes the Sandbox, and so its Pod.
	brief := newSandbox("brief", api.SandboxSpec{Image: "debian", MemoryMiB: 128, DiskSize: "512M", TTL: &metav1.Duration{Duration: 3 * time.Second}})
	if err := c.Create(ctx, brief); err != nil {
		t.Fatal(err)
	}
	waitGone(ctx, t, c, brief)
	waitFor(ctx, t, "brief's pod gone", func() (bool, error) {
		return len(launcherPods(ctx, t, c, "brief")) == 0, nil
	})
	t.Logf("brief gone at %s", time.Since(start).Round(100*time.Millisecond))
}
