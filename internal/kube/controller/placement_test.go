package controller

import (
	"encoding/json"
	"maps"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/bangervm/banger/internal/kube/api"
	"github.com/bangervm/banger/internal/kube/deviceplugin"
)

// The launcher Pod asks for banger.dev/kvm exactly when the Sandbox's
// accelerator (its own, else the controller's) is kvm, and the launcher
// is told which accelerator it is, so it never guesses.
func TestRenderPodAccel(t *testing.T) {
	if ResourceKVM != deviceplugin.ResourceKVM {
		t.Fatalf("the controller requests %s, banger-node serves %s", ResourceKVM, deviceplugin.ResourceKVM)
	}
	for _, tc := range []struct {
		spec, controller, want string
	}{
		{"", "", api.AccelTCG},
		{"", api.AccelKVM, api.AccelKVM},
		{"", api.AccelTCG, api.AccelTCG},
		{api.AccelKVM, api.AccelTCG, api.AccelKVM},
		{api.AccelTCG, api.AccelKVM, api.AccelTCG},
	} {
		l := DefaultLauncher("l")
		l.Accel = tc.controller
		pod, err := RenderPod(sandbox(api.SandboxSpec{Image: "debian", Accel: tc.spec}), l)
		if err != nil {
			t.Fatal(err)
		}
		c := pod.Spec.Containers[0]
		var spec api.SandboxSpec
		if err := json.Unmarshal([]byte(c.Env[0].Value), &spec); err != nil || spec.Accel != tc.want {
			t.Errorf("spec %q, controller %q: the launcher is told %q (%v), want %q", tc.spec, tc.controller, spec.Accel, err, tc.want)
		}
		req, hasReq := c.Resources.Requests[ResourceKVM]
		lim, hasLim := c.Resources.Limits[ResourceKVM]
		if tc.want == api.AccelKVM {
			if !hasReq || !hasLim || req.Cmp(resource.MustParse("1")) != 0 || lim.Cmp(resource.MustParse("1")) != 0 {
				t.Errorf("spec %q, controller %q: requests %v limits %v, want %s: 1 in both", tc.spec, tc.controller,
					c.Resources.Requests, c.Resources.Limits, ResourceKVM)
			}
		} else if hasReq || hasLim {
			t.Errorf("spec %q, controller %q: tcg requests %s", tc.spec, tc.controller, ResourceKVM)
		}
		// Still no privileges: the device comes from the plugin.
		if sc := c.SecurityContext; sc.Privileged != nil && *sc.Privileged || *sc.AllowPrivilegeEscalation {
			t.Errorf("accel %s: security context %+v", tc.want, sc)
		}
		for _, v := range pod.Spec.Volumes {
			if v.HostPath != nil {
				t.Errorf("accel %s: volume %+v: want no host path", tc.want, v)
			}
		}
	}
}

// Launcher Pods go to the nodes the controller's selector names and
// tolerate the taint that keeps other Pods off them.
func TestRenderPodPlacement(t *testing.T) {
	l := DefaultLauncher("l")
	pod, err := RenderPod(sandbox(api.SandboxSpec{Image: "debian"}), l)
	if err != nil {
		t.Fatal(err)
	}
	if len(pod.Spec.NodeSelector) != 0 {
		t.Errorf("node selector %v without one given, want none", pod.Spec.NodeSelector)
	}
	want := corev1.Toleration{Key: "banger.dev/sandbox", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}
	if len(pod.Spec.Tolerations) != 1 || pod.Spec.Tolerations[0] != want {
		t.Errorf("tolerations %+v, want %+v only", pod.Spec.Tolerations, want)
	}
	l.NodeSelector = map[string]string{"banger.dev/node": "yes", "zone": "a"}
	pod, err = RenderPod(sandbox(api.SandboxSpec{Image: "debian"}), l)
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(pod.Spec.NodeSelector, l.NodeSelector) {
		t.Errorf("node selector %v, want %v", pod.Spec.NodeSelector, l.NodeSelector)
	}
	pod.Spec.NodeSelector["zone"] = "b"
	if l.NodeSelector["zone"] != "a" {
		t.Error("the Pod shares the launcher's selector map")
	}
}

func TestDefaultAccel(t *testing.T) {
	if DefaultAccel != api.AccelKVM {
		t.Errorf("DefaultAccel = %q: the README and the manifests say kvm", DefaultAccel)
	}
}

// A Pod no node can take for want of banger.dev/kvm says where the
// resource comes from and how to do without it.
func TestUnschedulableKVMHint(t *testing.T) {
	pod, err := RenderPod(sandbox(api.SandboxSpec{Image: "debian", Accel: api.AccelKVM}), DefaultLauncher("l"))
	if err != nil {
		t.Fatal(err)
	}
	pod.Status.Phase = corev1.PodPending
	pod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: "Unschedulable",
		Message: "0/1 nodes are available: 1 Insufficient banger.dev/kvm. preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod."}}
	st := StatusFromPod(pod)
	if st.Phase != api.PhasePending || st.Reason != "Unschedulable" || !strings.Contains(st.Message, "1 Insufficient banger.dev/kvm") ||
		!strings.Contains(st.Message, "banger-node") || !strings.Contains(st.Message, "accel: tcg") {
		t.Errorf("status %+v: want Pending, the scheduler's message and where banger.dev/kvm comes from", st)
	}
	pod.Status.Conditions[0].Message = "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector."
	if st := StatusFromPod(pod); st.Message != pod.Status.Conditions[0].Message {
		t.Errorf("message %q, want the scheduler's as it is", st.Message)
	}
}
