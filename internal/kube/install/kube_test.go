//go:build kube

package install

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/kube/images"
	"github.com/bangervm/banger/internal/kube/kubetest"
	"github.com/bangervm/banger/internal/testutil/kubecluster"
)

// banger cluster install on a real cluster: the CRD, RBAC, the
// controller's Deployment and the node agent's DaemonSet applied (their
// images imported into the node), the controller Available and the node
// agent ready, and a Sandbox given its claim, Pod and status by that
// in-cluster controller, which runs as the installed service account (so
// the role is enough). The node agent offers /dev/kvm to Pods that ask,
// launcher Pods go to the labelled, tainted node the install's
// --node-selector names, or stay Pending saying why, and a launcher with
// accel kvm refuses a KVM that cannot run the guest (nodeAgentChecks).
// Installing again changes nothing. Uninstall refuses while the Sandbox
// exists, and with force leaves nothing: no Sandbox, Pod, claim, volume,
// controller, role, CRD or namespace. The launcher image is the real one,
// but no VM boots: its Sandbox's image (busybox, already on the node) is
// handed over by the Pod's init containers, and on this machine
// (PVM-only KVM) the launcher then refuses accel kvm.
func TestInstall(t *testing.T) {
	start := time.Now()
	bin := kubetest.Binaries(t)
	launcherTar := kubetest.LauncherImage(t)
	cl := kubecluster.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	img, err := images.ControllerImage(filepath.Join(bin, "banger-controller"))
	if err != nil {
		t.Fatal(err)
	}
	node, err := images.NodeImage(filepath.Join(bin, "banger-node"))
	if err != nil {
		t.Fatal(err)
	}
	tarPath := filepath.Join(t.TempDir(), "controller.tar")
	if err := images.WriteTar(tarPath, map[string]v1.Image{images.Controller: img, images.Node: node}); err != nil {
		t.Fatal(err)
	}
	for _, tar := range []string{tarPath, launcherTar} {
		if err := cl.ImportImages(ctx, tar); err != nil {
			t.Fatal(err)
		}
	}
	var out bytes.Buffer
	c, err := New(cl.Config, &out)
	if err != nil {
		t.Fatal(err)
	}
	c.Poll = 200 * time.Millisecond
	// The node is banger's: labelled as the install's selector wants
	// (tainted once the controller runs, which does not tolerate it).
	labelNode(ctx, t, cl, bangerNodeLabel, "yes")
	opts := Options{Namespace: "banger", ControllerImage: images.Controller, LauncherImage: images.Launcher,
		NodeSelector: bangerNodeLabel + "=yes"}
	if err := c.Install(ctx, opts, 3*time.Minute); err != nil {
		t.Fatalf("install: %v\n%s", err, out.String())
	}
	t.Logf("installed at %s:\n%s", time.Since(start).Round(100*time.Millisecond), out.String())
	for _, want := range []string{
		"customresourcedefinition.apiextensions.k8s.io/sandboxes.banger.dev created",
		"namespace/banger created",
		"serviceaccount/banger-controller created",
		"clusterrole.rbac.authorization.k8s.io/banger-controller created",
		"clusterrolebinding.rbac.authorization.k8s.io/banger-controller created",
		"deployment.apps/banger-controller created",
		"daemonset.apps/banger-node created",
		"deployment.apps/banger-controller available",
		"daemonset.apps/banger-node ready on 1 nodes",
	} {
		if !strings.Contains(out.String(), want+"\n") {
			t.Errorf("install output lacks %q", want)
		}
	}
	pods, err := cl.Client.CoreV1().Pods("banger").List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=banger-controller"})
	if err != nil || len(pods.Items) != 1 || pods.Items[0].Spec.ServiceAccountName != "banger-controller" {
		t.Fatalf("controller pods %d (%v): want one, as banger-controller", len(pods.Items), err)
	}

	out.Reset()
	if err := c.Install(ctx, opts, time.Minute); err != nil {
		t.Fatalf("install again: %v", err)
	}
	if strings.Count(out.String(), " unchanged\n") != 7 {
		t.Errorf("install again:\n%s\nwant every object unchanged", out.String())
	}

	// The in-cluster controller serves a Sandbox: claim, Pod, status.
	sb := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "banger.dev/v1alpha1", "kind": "Sandbox",
		"metadata": map[string]any{"name": "box", "namespace": "default"},
		"spec":     map[string]any{"image": kubecluster.BusyboxImage, "memoryMiB": int64(128), "diskSize": "512M"},
	}}
	if _, err := c.dyn.Resource(sandboxes).Namespace("default").Create(ctx, sb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	err = c.wait(ctx, "box's status", func() (bool, error) {
		got, err := c.dyn.Resource(sandboxes).Namespace("default").Get(ctx, "box", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		pod, _, _ := unstructured.NestedString(got.Object, "status", "podName")
		claim, _, _ := unstructured.NestedString(got.Object, "status", "claimName")
		return pod == "box-vm" && claim == "box-disk", nil
	})
	if err != nil {
		t.Fatal(err)
	}
	pod, err := cl.Client.CoreV1().Pods("default").Get(ctx, "box-vm", metav1.GetOptions{})
	if err != nil || len(pod.OwnerReferences) != 1 || pod.OwnerReferences[0].Name != "box" || pod.Spec.Containers[0].Image != images.Launcher {
		t.Fatalf("box's pod: %v: want it owned by box, with the launcher image given at install", err)
	}
	if _, err := cl.Client.CoreV1().PersistentVolumeClaims("default").Get(ctx, "box-disk", metav1.GetOptions{}); err != nil {
		t.Fatalf("box's claim: %v", err)
	}
	t.Logf("box served by the in-cluster controller at %s", time.Since(start).Round(100*time.Millisecond))
	t.Run("NodeAgent", func(t *testing.T) { nodeAgentChecks(ctx, t, cl, c) })
	t.Logf("node agent and placement checked at %s", time.Since(start).Round(100*time.Millisecond))

	out.Reset()
	if err := c.Uninstall(ctx, Options{}, false, time.Minute); !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "default/box") {
		t.Errorf("uninstall with a sandbox: %v, want FailedPrecondition naming default/box", err)
	}
	if out.Len() != 0 {
		t.Errorf("refused uninstall printed %q, want nothing done", out.String())
	}
	// Uninstall finds the namespace it was installed into.
	if err := c.Uninstall(ctx, Options{}, true, 3*time.Minute); err != nil {
		t.Fatalf("uninstall --force: %v\n%s", err, out.String())
	}
	t.Logf("uninstalled at %s:\n%s", time.Since(start).Round(100*time.Millisecond), out.String())
	if !strings.Contains(out.String(), "namespace/banger deleted\n") {
		t.Errorf("uninstall did not delete the namespace it made")
	}

	gone := func(what string, err error) {
		t.Helper()
		if !apierrors.IsNotFound(err) {
			t.Errorf("%s after uninstall: %v, want not found", what, err)
		}
	}
	_, err = cl.Client.CoreV1().Namespaces().Get(ctx, "banger", metav1.GetOptions{})
	gone("namespace banger", err)
	_, err = cl.Client.RbacV1().ClusterRoles().Get(ctx, "banger-controller", metav1.GetOptions{})
	gone("cluster role", err)
	_, err = cl.Client.RbacV1().ClusterRoleBindings().Get(ctx, "banger-controller", metav1.GetOptions{})
	gone("cluster role binding", err)
	_, err = c.dyn.Resource(sandboxes).Namespace("default").List(ctx, metav1.ListOptions{})
	gone("the Sandbox resource", err)
	left, err := cl.Client.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil || len(left.Items) != 0 {
		t.Errorf("pods after uninstall: %d (%v), want none", len(left.Items), err)
	}
	pvcs, err := cl.Client.CoreV1().PersistentVolumeClaims("").List(ctx, metav1.ListOptions{})
	if err != nil || len(pvcs.Items) != 0 {
		t.Errorf("claims after uninstall: %d (%v), want none", len(pvcs.Items), err)
	}
	// The volume goes a moment after its claim (the volume controller
	// deletes it); uninstall waited for the claim only.
	err = c.wait(ctx, "volumes deleted", func() (bool, error) {
		pvs, err := cl.Client.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{})
		return err == nil && len(pvs.Items) == 0, err
	})
	if err != nil {
		t.Error(err)
	}

	// Into a namespace that was there before: banger's objects go in it
	// and out again, the namespace (and what else is in it) stays.
	team := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team"}}
	if _, err := cl.Client.CoreV1().Namespaces().Create(ctx, team, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	opts.Namespace = "team"
	if err := c.Install(ctx, opts, 3*time.Minute); err != nil {
		t.Fatalf("install into team: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "namespace/team exists, left as it is\n") {
		t.Errorf("install into team:\n%s\nwant the namespace left as it is", out.String())
	}
	out.Reset()
	if err := c.Uninstall(ctx, Options{}, false, 3*time.Minute); err != nil {
		t.Fatalf("uninstall from team: %v\n%s", err, out.String())
	}
	t.Logf("installed into and uninstalled from team at %s:\n%s", time.Since(start).Round(100*time.Millisecond), out.String())
	if _, err := cl.Client.CoreV1().Namespaces().Get(ctx, "team", metav1.GetOptions{}); err != nil {
		t.Errorf("namespace team after uninstall: %v, want it kept", err)
	}
	if pods, err := cl.Client.CoreV1().Pods("team").List(ctx, metav1.ListOptions{}); err != nil || len(pods.Items) != 0 {
		t.Errorf("pods in team after uninstall: %d (%v), want none", len(pods.Items), err)
	}
	_, err = cl.Client.AppsV1().Deployments("team").Get(ctx, Deployment, metav1.GetOptions{})
	gone("the controller in team", err)
}
