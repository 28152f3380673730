//go:build kube

package install

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"

	"github.com/bangervm/banger/internal/engine"
	"github.com/bangervm/banger/internal/engine/qemu"
	"github.com/bangervm/banger/internal/kube/controller"
	"github.com/bangervm/banger/internal/kube/deviceplugin"
	"github.com/bangervm/banger/internal/testutil"
	"github.com/bangervm/banger/internal/testutil/kubecluster"
)

// bangerNodeLabel is how the test marks the node as banger's, the
// install's --node-selector.
const bangerNodeLabel = "banger.dev/node"

func labelNode(ctx context.Context, t *testing.T, cl *kubecluster.Cluster, key, value string) {
	t.Helper()
	v := any(value)
	if value == "" {
		v = nil // remove it
	}
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"labels": map[string]any{key: v}}})
	if _, err := cl.Client.CoreV1().Nodes().Patch(ctx, kubecluster.NodeName, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatalf("label node %s=%s: %v", key, value, err)
	}
}

// taintNode puts banger's taint on the node (on) or takes it off.
func taintNode(ctx context.Context, t *testing.T, cl *kubecluster.Cluster, on bool) {
	t.Helper()
	n, err := cl.Client.CoreV1().Nodes().Get(ctx, kubecluster.NodeName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var taints []corev1.Taint
	for _, tn := range n.Spec.Taints {
		if tn.Key != controller.Taint {
			taints = append(taints, tn)
		}
	}
	if on {
		taints = append(taints, corev1.Taint{Key: controller.Taint, Effect: corev1.TaintEffectNoSchedule})
	}
	n.Spec.Taints = taints
	if _, err := cl.Client.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("taint node (%v): %v", on, err)
	}
}

// nodeAgentChecks runs on the installed cluster (node labelled, the
// controller selecting it, accel kvm by default): the node agent offers
// banger.dev/kvm; a Pod that asks gets /dev/kvm, unprivileged, and one
// that does not ask has none; with the node tainted a Sandbox's Pod still
// lands there (it tolerates the taint) asking for banger.dev/kvm; with
// the label gone a Sandbox stays Pending with the scheduler's reason. It
// leaves the node labelled and untainted. No VM boots (a guest under this
// machine's PVM-only KVM would hang): the launcher refuses that KVM.
func nodeAgentChecks(ctx context.Context, t *testing.T, cl *kubecluster.Cluster, c *Client) {
	kvm := deviceplugin.KVM()
	_, err := os.Stat(kvm.Sysfs)
	testutil.Require(t, err == nil, "/dev/kvm on this machine (the node agent offers it only where the node has it)")

	// banger-node registered with the real kubelet: the node offers the
	// units.
	err = c.wait(ctx, "the node to offer banger.dev/kvm", func() (bool, error) {
		n, err := cl.Client.CoreV1().Nodes().Get(ctx, kubecluster.NodeName, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		q := n.Status.Allocatable[controller.ResourceKVM]
		return q.Value() == deviceplugin.DefaultUnits, fmt.Errorf("allocatable %s = %s", controller.ResourceKVM, q.String())
	})
	if err != nil {
		t.Fatal(err)
	}

	taintNode(ctx, t, cl, true)
	defer func() {
		taintNode(context.WithoutCancel(ctx), t, cl, false)
		labelNode(context.WithoutCancel(ctx), t, cl, bangerNodeLabel, "yes")
	}()

	// A Pod asking for banger.dev/kvm gets /dev/kvm and opens it
	// read-write, with no privileges and every capability dropped; one
	// that does not ask has no /dev/kvm.
	withKVM := devicePod("with-kvm", true)
	without := devicePod("without-kvm", false)
	for _, p := range []*corev1.Pod{withKVM, without} {
		if _, err := cl.Client.CoreV1().Pods("default").Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if got := podOutput(ctx, t, c, cl, withKVM.Name); !strings.Contains(got, "crw") || !strings.Contains(got, "/dev/kvm") ||
		!strings.Contains(got, "opened read-write") {
		t.Errorf("pod with banger.dev/kvm printed %q: want /dev/kvm, a character device, opened read-write", got)
	}
	if got := podOutput(ctx, t, c, cl, without.Name); !strings.Contains(got, "no /dev/kvm") {
		t.Errorf("pod without banger.dev/kvm printed %q: want no /dev/kvm", got)
	}
	var now int64
	for _, p := range []*corev1.Pod{withKVM, without} {
		if err := cl.Client.CoreV1().Pods("default").Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: &now}); err != nil {
			t.Error(err)
		}
	}

	// Labelled and tainted: a Sandbox lands on the node, asking for KVM.
	createSandbox(ctx, t, c, "placed")
	var pod *corev1.Pod
	err = c.wait(ctx, "placed's pod to be scheduled", func() (bool, error) {
		pod, err = cl.Client.CoreV1().Pods("default").Get(ctx, "placed-vm", metav1.GetOptions{})
		return err == nil && pod.Spec.NodeName != "", err
	})
	if err != nil {
		t.Fatal(err)
	}
	req := pod.Spec.Containers[0].Resources.Requests[controller.ResourceKVM]
	if pod.Spec.NodeName != kubecluster.NodeName || pod.Spec.NodeSelector[bangerNodeLabel] != "yes" || req.Cmp(resource.MustParse("1")) != 0 {
		t.Errorf("placed's pod on %q, selector %v, %s request %s: want the banger node, its label, one unit",
			pod.Spec.NodeName, pod.Spec.NodeSelector, controller.ResourceKVM, req.String())
	}

	// The launcher got /dev/kvm (else it would say it cannot open it)
	// and, where that KVM cannot run an ordinary guest, as here, refuses
	// rather than emulate, saying why in the Sandbox's status.
	if a, reason := qemu.ChooseAccel(qemu.ProbeHost()); a != engine.AccelKVM {
		reason, _, _ = strings.Cut(reason, "; using TCG")
		var msg string
		err = c.wait(ctx, "placed to fail with the launcher's refusal", func() (bool, error) {
			sb, err := c.dyn.Resource(sandboxes).Namespace("default").Get(ctx, "placed", metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			phase, _, _ := unstructured.NestedString(sb.Object, "status", "phase")
			msg, _, _ = unstructured.NestedString(sb.Object, "status", "message")
			return phase == "Failed", fmt.Errorf("status %s: %s", phase, msg)
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("placed: %s", msg)
		if !strings.Contains(msg, "accel kvm: "+reason) || strings.Contains(msg, "open /dev/kvm") || !strings.Contains(msg, "spec.accel: tcg") {
			t.Errorf("placed's status message %q: want the launcher's refusal naming %q and the way out", msg, reason)
		}
	}

	// No node has the label: Pending, and the scheduler says why.
	labelNode(ctx, t, cl, bangerNodeLabel, "")
	createSandbox(ctx, t, c, "nowhere")
	err = c.wait(ctx, "nowhere to be Pending with the scheduler's reason", func() (bool, error) {
		sb, err := c.dyn.Resource(sandboxes).Namespace("default").Get(ctx, "nowhere", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		phase, _, _ := unstructured.NestedString(sb.Object, "status", "phase")
		reason, _, _ := unstructured.NestedString(sb.Object, "status", "reason")
		msg, _, _ := unstructured.NestedString(sb.Object, "status", "message")
		ok := phase == "Pending" && reason == "Unschedulable" && strings.Contains(msg, "node affinity/selector")
		return ok, fmt.Errorf("status %s %s: %s", phase, reason, msg)
	})
	if err != nil {
		t.Error(err)
	}
	for _, name := range []string{"placed", "nowhere"} {
		if err := c.dyn.Resource(sandboxes).Namespace("default").Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			t.Error(err)
		}
	}
}

// devicePod is a busybox Pod that reports on /dev/kvm, unprivileged,
// tolerating banger's taint; with kvm it asks for banger.dev/kvm.
func devicePod(name string, kvm bool) *corev1.Pod {
	no := false
	res := corev1.ResourceRequirements{}
	if kvm {
		one := resource.MustParse("1")
		res.Requests = corev1.ResourceList{controller.ResourceKVM: one}
		res.Limits = corev1.ResourceList{controller.ResourceKVM: one}
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: corev1.PodSpec{
			RestartPolicy:                corev1.RestartPolicyNever,
			AutomountServiceAccountToken: &no,
			Tolerations:                  []corev1.Toleration{{Key: controller.Taint, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}},
			Containers: []corev1.Container{{
				Name: "c", Image: kubecluster.BusyboxImage, ImagePullPolicy: corev1.PullNever,
				Command:   []string{"sh", "-c", `if test -e /dev/kvm; then ls -l /dev/kvm && : <>/dev/kvm && echo opened read-write; else echo no /dev/kvm; fi`},
				Resources: res,
				SecurityContext: &corev1.SecurityContext{
					Privileged: &no, AllowPrivilegeEscalation: &no,
					Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
				},
			}},
		},
	}
}

// podOutput waits until the Pod name has succeeded and returns its log.
func podOutput(ctx context.Context, t *testing.T, c *Client, cl *kubecluster.Cluster, name string) string {
	t.Helper()
	err := c.wait(ctx, "pod "+name+" to succeed", func() (bool, error) {
		p, err := cl.Client.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		if p.Status.Phase == corev1.PodFailed {
			log, _ := cl.Client.CoreV1().Pods("default").GetLogs(name, &corev1.PodLogOptions{}).DoRaw(ctx)
			t.Fatalf("pod %s failed: %s %s: %s", name, p.Status.Reason, p.Status.Message, log)
		}
		return p.Status.Phase == corev1.PodSucceeded, fmt.Errorf("phase %s %v", p.Status.Phase, p.Status.Conditions)
	})
	if err != nil {
		t.Fatal(err)
	}
	log, err := cl.Client.CoreV1().Pods("default").GetLogs(name, &corev1.PodLogOptions{}).DoRaw(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("pod %s: %s", name, log)
	return string(log)
}

func createSandbox(ctx context.Context, t *testing.T, c *Client, name string) {
	t.Helper()
	sb := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "banger.dev/v1alpha1", "kind": "Sandbox",
		"metadata": map[string]any{"name": name, "namespace": "default"},
		"spec":     map[string]any{"image": kubecluster.BusyboxImage, "memoryMiB": int64(128), "diskSize": "512M"},
	}}
	if _, err := c.dyn.Resource(sandboxes).Namespace("default").Create(ctx, sb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}
