//go:build kube

package controller_test

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
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/bangervm/banger/internal/kube/api"
	"github.com/bangervm/banger/internal/kube/controller"
	"github.com/bangervm/banger/internal/kube/kubetest"
	"github.com/bangervm/banger/internal/testutil/kubecluster"
)

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

// clusterWithCRD brings a cluster up and installs the CRD; ctx ends 4
// minutes later.
func clusterWithCRD(t *testing.T) (*kubecluster.Cluster, context.Context, client.Client) {
	t.Helper()
	ctrl.SetLogger(logr.FromSlogHandler(slog.NewTextHandler(os.Stderr, nil)))
	cl := kubecluster.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	t.Cleanup(cancel)
	kubetest.InstallCRD(ctx, t, cl)
	return cl, ctx, kubetest.Client(t, cl.Config)
}

func newSandbox(name string, spec api.SandboxSpec) *api.Sandbox {
	return &api.Sandbox{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}, Spec: spec}
}

// controllerAccount applies deploy/kubernetes/rbac.yaml and returns a
// config that impersonates its service account: the controller runs with
// the role's rights only, which proves they are enough.
func controllerAccount(ctx context.Context, t *testing.T, c client.Client, cl *kubecluster.Cluster) *rest.Config {
	t.Helper()
	applyYAML(ctx, t, c, filepath.Join(filepath.Dir(api.CRDPath()), "rbac.yaml"))
	sa := rest.CopyConfig(cl.Config)
	sa.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:banger-system:banger-controller"}
	return sa
}

// testLauncher is busybox standing in for the VM launcher: script runs
// first, then a shell that ends on SIGTERM (sleep as PID 1 would ignore
// it and hold every deletion for the whole grace period), STOP_DELAY
// once the file HOLD names is gone (none unless script sets it).
func testLauncher(script string) controller.Launcher {
	l := controller.DefaultLauncher(kubecluster.BusyboxImage)
	l.PullPolicy = corev1.PullNever
	// Its Sandboxes' images are never pulled: the stand-in is no VM.
	l.ImageFromNode = false
	l.Command = []string{"sh", "-c", script + `trap 'while [ -e "${HOLD:-/nonexistent}" ]; do sleep 0.2; done; exit 0' TERM; sleep 3600 & wait`}
	l.Ready = nil
	return l
}

func waitPhase(ctx context.Context, t *testing.T, c client.Client, name, phase string) *api.Sandbox {
	t.Helper()
	var sb api.Sandbox
	kubetest.Poll(ctx, t, "sandbox "+name+" "+phase, func() (bool, error) {
		if err := c.Get(ctx, types.NamespacedName{Namespace: "default", Name: name}, &sb); err != nil {
			return false, err
		}
		return sb.Status.Phase == phase, errors.New("status " + sb.Status.Phase + " " + sb.Status.Reason + ": " + sb.Status.Message)
	})
	return &sb
}

func waitGone(ctx context.Context, t *testing.T, c client.Client, obj client.Object) {
	t.Helper()
	kubetest.Poll(ctx, t, obj.GetName()+" gone", func() (bool, error) {
		err := c.Get(ctx, client.ObjectKeyFromObject(obj), obj)
		return apierrors.IsNotFound(err), err
	})
}

// checkRequests checks pod's launcher container requests exactly cpu and
// memory: the VM's disk is on its claim, not ephemeral storage.
func checkRequests(t *testing.T, pod *corev1.Pod, cpu, memory string) {
	t.Helper()
	req := pod.Spec.Containers[0].Resources.Requests
	want := map[corev1.ResourceName]string{corev1.ResourceCPU: cpu, corev1.ResourceMemory: memory}
	for name, w := range want {
		if q := req[name]; q.Cmp(resource.MustParse(w)) != 0 {
			t.Errorf("pod %s request %s = %s, want %s", pod.Name, name, q.String(), w)
		}
	}
	if len(req) != len(want) {
		t.Errorf("pod %s requests %v, want cpu and memory only", pod.Name, req)
	}
}

func launcherPods(ctx context.Context, t *testing.T, c client.Client, sandbox string) []corev1.Pod {
	t.Helper()
	var pods corev1.PodList
	if err := c.List(ctx, &pods, client.InNamespace("default"), client.MatchingLabels{controller.LabelSandbox: sandbox}); err != nil {
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
	start := time.Now()
	cl, ctx, c := clusterWithCRD(t)
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

	sa := controllerAccount(ctx, t, c, cl)
	l := testLauncher("")
	stop := kubetest.StartController(t, sa, l)

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
	checkRequests(t, &pod, "1100m", "448Mi")
	if pod.Status.QOSClass != corev1.PodQOSBurstable {
		t.Errorf("QoS class %s, want Burstable", pod.Status.QOSClass)
	}
	var claim corev1.PersistentVolumeClaim
	if err := c.Get(ctx, types.NamespacedName{Namespace: "default", Name: "box-disk"}, &claim); err != nil {
		t.Fatalf("box's disk claim: %v", err)
	}

	// Restart: the controller finds its Pod and claim by name and owner.
	stop()
	// Three Sandboxes at once land as three Pods with their requests; the
	// node has 2 CPUs and box holds 1.1 of them, so the others' 1.1 and
	// 2.1 do not fit, and their status says what the scheduler said.
	second := newSandbox("second", api.SandboxSpec{Image: "debian", MemoryMiB: 128, DiskSize: "512M"})
	third := newSandbox("third", api.SandboxSpec{Image: "debian", VCPUs: 2, MemoryMiB: 1024, DiskSize: "512M"})
	for _, sb := range []*api.Sandbox{second, third} {
		if err := c.Create(ctx, sb); err != nil {
			t.Fatal(err)
		}
	}
	kubetest.StartController(t, sa, l)
	for _, sb := range []*api.Sandbox{second, third} {
		kubetest.Poll(ctx, t, sb.Name+" pending, unschedulable", func() (bool, error) {
			if err := c.Get(ctx, client.ObjectKeyFromObject(sb), sb); err != nil {
				return false, err
			}
			st := sb.Status
			return st.Phase == api.PhasePending && st.Reason == "Unschedulable" && strings.Contains(st.Message, "Insufficient cpu"), fmt.Errorf("status %+v", st)
		})
	}
	t.Logf("second and third unschedulable at %s", time.Since(start).Round(100*time.Millisecond))
	for name, want := range map[string][2]string{"second": {"1100m", "320Mi"}, "third": {"2100m", "1216Mi"}} {
		pods := launcherPods(ctx, t, c, name)
		if len(pods) != 1 {
			t.Fatalf("%d launcher pods for %s, want 1", len(pods), name)
		}
		checkRequests(t, &pods[0], want[0], want[1])
	}
	if pods := launcherPods(ctx, t, c, "box"); len(pods) != 1 || pods[0].UID != pod.UID {
		t.Errorf("after a controller restart box has %d pods (first %v), want the one it had (%s)", len(pods), pods, pod.UID)
	}
	var claimAfter corev1.PersistentVolumeClaim
	if err := c.Get(ctx, client.ObjectKeyFromObject(&claim), &claimAfter); err != nil || claimAfter.UID != claim.UID {
		t.Errorf("box's claim after a controller restart: uid %s (%v), want the one it had (%s)", claimAfter.UID, err, claim.UID)
	}
	if err := c.Get(ctx, client.ObjectKeyFromObject(box), box); err != nil || box.Status.Phase != api.PhaseRunning {
		t.Errorf("box after restart: %+v, %v", box.Status, err)
	}
	if err := c.Delete(ctx, third); err != nil {
		t.Fatal(err)
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
	if st := waitPhase(ctx, t, c, "second", api.PhaseFailed).Status; st.Reason != controller.ReasonPodGone {
		t.Errorf("second after its pod was deleted: %+v, want reason %s", st, controller.ReasonPodGone)
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
	kubetest.Poll(ctx, t, "brief's pod gone", func() (bool, error) {
		return len(launcherPods(ctx, t, c, "brief")) == 0, nil
	})
	t.Logf("brief gone at %s", time.Since(start).Round(100*time.Millisecond))
}

// diskScript is the stand-in launcher's first step: on a fresh disk it
// writes a token into /var/lib/banger; it logs whether the token was
// there already ("found TOKEN") or made now ("fresh TOKEN"). A Sandbox
// labelled holdstop makes the file hold on its fresh disk, and stops only
// once the test has removed it (as a VM syncing its disk takes its time).
const diskScript = `f=/var/lib/banger/token HOLD=/var/lib/banger/hold
if [ -e $f ]; then echo "found $(cat $f)"; else
  case "$BANGER_SANDBOX_SPEC" in *holdstop*) touch $HOLD;; esac
  cat /proc/sys/kernel/random/uuid >$f && echo "fresh $(cat $f)"
fi
`

// podLog waits for the first line the launcher container logged.
func podLog(ctx context.Context, t *testing.T, cl *kubecluster.Cluster, pod string) string {
	t.Helper()
	var line string
	kubetest.Poll(ctx, t, pod+" logs", func() (bool, error) {
		b, err := cl.Client.CoreV1().Pods("default").GetLogs(pod, &corev1.PodLogOptions{Container: controller.ContainerName}).DoRaw(ctx)
		line, _, _ = strings.Cut(string(b), "\n")
		return line != "", err
	})
	return line
}

// volumeDir is where the hostPath volume bound to claim lives on the
// machine.
func volumeDir(ctx context.Context, t *testing.T, c client.Client, claim string) string {
	t.Helper()
	var pvc corev1.PersistentVolumeClaim
	if err := c.Get(ctx, types.NamespacedName{Namespace: "default", Name: claim}, &pvc); err != nil {
		t.Fatalf("claim %s: %v", claim, err)
	}
	var pv corev1.PersistentVolume
	if err := c.Get(ctx, types.NamespacedName{Name: pvc.Spec.VolumeName}, &pv); err != nil || pv.Spec.HostPath == nil {
		t.Fatalf("volume %q of claim %s: %+v, %v", pvc.Spec.VolumeName, claim, pv.Spec, err)
	}
	return pv.Spec.HostPath.Path
}

func setRunning(ctx context.Context, t *testing.T, c client.Client, sb *api.Sandbox, running bool) {
	t.Helper()
	patch := fmt.Sprintf(`{"spec":{"running":%t}}`, running)
	if err := c.Patch(ctx, sb, client.RawPatch(types.MergePatchType, []byte(patch))); err != nil {
		t.Fatalf("set %s running %t: %v", sb.Name, running, err)
	}
}

// On a real cluster with a dynamic provisioner (the controller-manager's
// hostPath one): a Sandbox's disk is a claim of its own, mounted at
// /var/lib/banger in the launcher; stopping deletes the Pod and keeps the
// claim and what was written on it; a stopped Sandbox stays stopped
// across a controller restart; one started again while its Pod is still
// stopping waits for that Pod and gets a new one (not Failed as a Pod
// lost behind its back); starting makes a new Pod that finds the
// disk as it was; deleting the Sandbox leaves no Pod, claim, volume or
// volume directory. The launcher is busybox writing a token on a fresh
// disk and logging whether it found one (this tests the controller, not
// the VM).
func TestSandboxDisk(t *testing.T) {
	start := time.Now()
	cl, ctx, c := clusterWithCRD(t)
	sa := controllerAccount(ctx, t, c, cl)
	l := testLauncher(diskScript)
	stop := kubetest.StartController(t, sa, l)

	box := newSandbox("box", api.SandboxSpec{Image: "debian", MemoryMiB: 128, DiskSize: "1G"})
	if err := c.Create(ctx, box); err != nil {
		t.Fatal(err)
	}
	if st := waitPhase(ctx, t, c, "box", api.PhaseRunning).Status; st.ClaimName != "box-disk" {
		t.Errorf("status %+v: want claim box-disk", st)
	}
	t.Logf("box running at %s", time.Since(start).Round(100*time.Millisecond))
	var claim corev1.PersistentVolumeClaim
	if err := c.Get(ctx, types.NamespacedName{Namespace: "default", Name: "box-disk"}, &claim); err != nil {
		t.Fatalf("box's disk claim: %v", err)
	}
	size := claim.Spec.Resources.Requests[corev1.ResourceStorage]
	if !metav1.IsControlledBy(&claim, box) || claim.Status.Phase != corev1.ClaimBound || size.Cmp(resource.MustParse("3Gi")) != 0 ||
		claim.Spec.StorageClassName == nil || *claim.Spec.StorageClassName != kubecluster.StorageClass {
		t.Errorf("claim owners %+v phase %s size %s class %v: want box's, Bound, 3Gi, the default class %s",
			claim.OwnerReferences, claim.Status.Phase, size.String(), claim.Spec.StorageClassName, kubecluster.StorageClass)
	}
	pvDir := volumeDir(ctx, t, c, "box-disk")
	tokenFile := filepath.Join(pvDir, "token")
	first := launcherPods(ctx, t, c, "box")
	if len(first) != 1 {
		t.Fatalf("%d launcher pods for box, want 1", len(first))
	}
	token, fresh := strings.CutPrefix(podLog(ctx, t, cl, first[0].Name), "fresh ")
	if !fresh {
		t.Fatalf("first start: launcher logged %q, want a fresh disk", token)
	}
	if b, err := os.ReadFile(tokenFile); err != nil || strings.TrimSpace(string(b)) != token {
		t.Errorf("token on the volume %q (%v), want %q", b, err, token)
	}

	// The claim is made once: its class cannot change under it.
	bad := box.DeepCopy()
	if err := c.Patch(ctx, bad, client.RawPatch(types.MergePatchType, []byte(`{"spec":{"storageClassName":"other"}}`))); !apierrors.IsInvalid(err) {
		t.Errorf("set storageClassName after creation: %v, want Invalid", err)
	}

	// Stop: the Pod goes, the claim and what is on it stay.
	setRunning(ctx, t, c, box, false)
	if st := waitPhase(ctx, t, c, "box", api.PhaseStopped).Status; st.PodName != "" || st.ClaimName != "box-disk" {
		t.Errorf("stopped status %+v: want no pod, claim box-disk", st)
	}
	t.Logf("box stopped at %s", time.Since(start).Round(100*time.Millisecond))
	if pods := launcherPods(ctx, t, c, "box"); len(pods) != 0 {
		t.Errorf("stopped box has %d pods, want none", len(pods))
	}
	var kept corev1.PersistentVolumeClaim
	if err := c.Get(ctx, client.ObjectKeyFromObject(&claim), &kept); err != nil || kept.UID != claim.UID || kept.DeletionTimestamp != nil {
		t.Errorf("claim after stop: uid %s deleting %v (%v), want %s kept", kept.UID, kept.DeletionTimestamp, err, claim.UID)
	}
	if b, err := os.ReadFile(tokenFile); err != nil || strings.TrimSpace(string(b)) != token {
		t.Errorf("token on the volume after stop %q (%v), want %q", b, err, token)
	}

	// A stopped Sandbox stays stopped: a restarted controller (which
	// reconciles every Sandbox as it starts) makes no Pod for it. Another
	// Sandbox running proves the new controller is at work.
	stop()
	kubetest.StartController(t, sa, l)
	flip := newSandbox("flip", api.SandboxSpec{Image: "debian", MemoryMiB: 128, DiskSize: "512M", Labels: map[string]string{"holdstop": "yes"}})
	if err := c.Create(ctx, flip); err != nil {
		t.Fatal(err)
	}
	waitPhase(ctx, t, c, "flip", api.PhaseRunning)
	if err := c.Get(ctx, client.ObjectKeyFromObject(box), box); err != nil || box.Status.Phase != api.PhaseStopped {
		t.Errorf("stopped box after a controller restart: %+v, %v", box.Status, err)
	}
	if pods := launcherPods(ctx, t, c, "box"); len(pods) != 0 {
		t.Errorf("stopped box has %d pods after a controller restart, want none", len(pods))
	}
	// Started again while its Pod is still stopping: the Sandbox waits for
	// that Pod to go, then starts a new one (the Pod it deleted is not one
	// lost behind its back).
	flipPod := launcherPods(ctx, t, c, "flip")
	if len(flipPod) != 1 {
		t.Fatalf("flip has %d pods, want 1", len(flipPod))
	}
	// The launcher logs after it made the hold file.
	podLog(ctx, t, cl, flipPod[0].Name)
	hold := filepath.Join(volumeDir(ctx, t, c, "flip-disk"), "hold")
	if _, err := os.Stat(hold); err != nil {
		t.Fatalf("flip's hold file: %v", err)
	}
	setRunning(ctx, t, c, flip, false)
	waitPhase(ctx, t, c, "flip", api.PhaseStopping)
	setRunning(ctx, t, c, flip, true)
	kubetest.Poll(ctx, t, "the controller to see flip started while stopping", func() (bool, error) {
		err := c.Get(ctx, client.ObjectKeyFromObject(flip), flip)
		return err == nil && flip.Status.ObservedGeneration == flip.Generation, fmt.Errorf("status %+v, generation %d (%v)", flip.Status, flip.Generation, err)
	})
	if flip.Status.Phase != api.PhaseStopping {
		t.Errorf("flip started while its pod stops: %+v, want Stopping", flip.Status)
	}
	if err := os.Remove(hold); err != nil {
		t.Fatal(err)
	}
	kubetest.Poll(ctx, t, "flip running in a new pod", func() (bool, error) {
		if err := c.Get(ctx, client.ObjectKeyFromObject(flip), flip); err != nil {
			return false, err
		}
		if flip.Status.Phase == api.PhaseFailed {
			t.Fatalf("flip started while stopping: %+v, want a new pod", flip.Status)
		}
		pods := launcherPods(ctx, t, c, "flip")
		return flip.Status.Phase == api.PhaseRunning && len(pods) == 1 && pods[0].UID != flipPod[0].UID,
			fmt.Errorf("status %+v, %d pods", flip.Status, len(pods))
	})
	t.Logf("flip stopped and started at once at %s", time.Since(start).Round(100*time.Millisecond))
	// Stopped, it makes room for box (deleting it would wait for the
	// garbage collector).
	setRunning(ctx, t, c, flip, false)

	// Start: a new Pod on the same claim finds the disk as it was.
	setRunning(ctx, t, c, box, true)
	waitPhase(ctx, t, c, "box", api.PhaseRunning)
	t.Logf("box started again at %s", time.Since(start).Round(100*time.Millisecond))
	second := launcherPods(ctx, t, c, "box")
	if len(second) != 1 || second[0].UID == first[0].UID {
		t.Fatalf("box after start: pods %d, want one new pod", len(second))
	}
	if got := podLog(ctx, t, cl, second[0].Name); got != "found "+token {
		t.Errorf("second start: launcher logged %q, want %q (the disk of the first)", got, "found "+token)
	}

	// Delete: nothing of box is left, down to the volume's directory.
	if err := c.Delete(ctx, box); err != nil {
		t.Fatal(err)
	}
	waitGone(ctx, t, c, &second[0])
	waitGone(ctx, t, c, &claim)
	waitGone(ctx, t, c, &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: claim.Spec.VolumeName}})
	t.Logf("box's pod, claim and volume gone at %s", time.Since(start).Round(100*time.Millisecond))
	if _, err := os.Stat(pvDir); !os.IsNotExist(err) {
		t.Errorf("volume directory %s after delete: %v, want it removed", pvDir, err)
	}
	var left corev1.PersistentVolumeClaimList
	if err := c.List(ctx, &left, client.InNamespace("default"), client.MatchingLabels{controller.LabelSandbox: "box"}); err != nil || len(left.Items) != 0 {
		t.Errorf("claims of box left: %d (%v)", len(left.Items), err)
	}
}
