package controller

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/bangervm/banger/internal/kube/api"
)

func sandbox(spec api.SandboxSpec) *api.Sandbox {
	return &api.Sandbox{
		ObjectMeta: metav1.ObjectMeta{Name: "box", Namespace: "team", UID: "uid-1",
			CreationTimestamp: metav1.NewTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))},
		Spec: spec,
	}
}

func TestRenderPod(t *testing.T) {
	sb := sandbox(api.SandboxSpec{Image: "debian", VCPUs: 2, MemoryMiB: 256, DiskSize: "1G",
		Labels: map[string]string{"team": "a", LabelSandbox: "spoof"}})
	l := DefaultLauncher("banger/launcher:1")
	pod, err := RenderPod(sb, l)
	if err != nil {
		t.Fatal(err)
	}
	if pod.Name != "box-vm" || pod.Namespace != "team" {
		t.Errorf("pod %s/%s, want team/box-vm", pod.Namespace, pod.Name)
	}
	if !metav1.IsControlledBy(pod, sb) || len(pod.OwnerReferences) != 1 ||
		pod.OwnerReferences[0].Kind != "Sandbox" || pod.OwnerReferences[0].APIVersion != "banger.dev/v1alpha1" ||
		pod.OwnerReferences[0].BlockOwnerDeletion == nil || !*pod.OwnerReferences[0].BlockOwnerDeletion {
		t.Errorf("owner references %+v: want the sandbox as controller, blocking deletion", pod.OwnerReferences)
	}
	if pod.Labels["team"] != "a" || pod.Labels[LabelSandbox] != "box" {
		t.Errorf("labels %v: want the user's and %s=box over the user's", pod.Labels, LabelSandbox)
	}
	if pod.Spec.RestartPolicy != corev1.RestartPolicyNever || *pod.Spec.AutomountServiceAccountToken {
		t.Errorf("restart policy %s, token automount %v: want Never and false", pod.Spec.RestartPolicy, *pod.Spec.AutomountServiceAccountToken)
	}
	c := pod.Spec.Containers[0]
	want := map[corev1.ResourceName]string{
		corev1.ResourceCPU:              "2100m",
		corev1.ResourceMemory:           "448Mi", // 256 + 192 overhead
		corev1.ResourceEphemeralStorage: "1Gi",
	}
	for name, q := range want {
		got := c.Resources.Requests[name]
		if got.Cmp(resource.MustParse(q)) != 0 {
			t.Errorf("request %s = %s, want %s", name, got.String(), q)
		}
	}
	if lim := c.Resources.Limits[corev1.ResourceMemory]; lim.Cmp(resource.MustParse("448Mi")) != 0 {
		t.Errorf("memory limit %s, want 448Mi", lim.String())
	}
	var spec api.SandboxSpec
	if len(c.Env) != 2 || c.Env[0].Name != EnvSpec || json.Unmarshal([]byte(c.Env[0].Value), &spec) != nil ||
		spec.Image != "debian" || spec.Net != api.NetNone || spec.VCPUs != 2 ||
		c.Env[1].Name != EnvName || c.Env[1].Value != "box" {
		t.Errorf("env %+v: want %s with the defaulted spec and %s=box", c.Env, EnvSpec, EnvName)
	}
	if len(c.VolumeMounts) != 1 || c.VolumeMounts[0].Name != StateVolume || c.VolumeMounts[0].MountPath != "/var/lib/banger" ||
		len(pod.Spec.Volumes) != 1 || pod.Spec.Volumes[0].Name != StateVolume {
		t.Errorf("volumes %+v mounted %+v: want the state volume at /var/lib/banger", pod.Spec.Volumes, c.VolumeMounts)
	}
	if p := c.ReadinessProbe; p == nil || p.Exec == nil || strings.Join(p.Exec.Command, " ") != "banger-launcher ready" ||
		strings.Join(c.Command, " ") != "banger-launcher run" {
		t.Errorf("command %q, readiness probe %+v: want banger-launcher run, and ready as the probe", c.Command, p)
	}
	if *c.SecurityContext.AllowPrivilegeEscalation || len(c.SecurityContext.Capabilities.Drop) != 1 {
		t.Errorf("security context %+v: want no escalation, ALL dropped", c.SecurityContext)
	}
}

func TestRenderPodDefaultsAndBadSize(t *testing.T) {
	pod, err := RenderPod(sandbox(api.SandboxSpec{Image: "debian"}), DefaultLauncher("l"))
	if err != nil {
		t.Fatal(err)
	}
	r := pod.Spec.Containers[0].Resources.Requests
	if cpu, mem, disk := r[corev1.ResourceCPU], r[corev1.ResourceMemory], r[corev1.ResourceEphemeralStorage]; cpu.String() != "1100m" || mem.String() != "704Mi" || disk.String() != "4Gi" {
		t.Errorf("default requests cpu %s memory %s disk %s, want 1100m 704Mi 4Gi", cpu.String(), mem.String(), disk.String())
	}
	if _, err := RenderPod(sandbox(api.SandboxSpec{Image: "debian", DiskSize: "4X"}), DefaultLauncher("l")); err == nil {
		t.Error("disk size 4X: rendered a pod, want an error")
	}
}

func TestStatusFromPod(t *testing.T) {
	now := metav1.Now()
	base := func(mod func(*corev1.Pod)) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "box-vm"}}
		mod(p)
		return p
	}
	for _, tc := range []struct {
		name         string
		pod          *corev1.Pod
		phase, why   string
		node         string
		addressCount int
	}{
		{"unscheduled", base(func(p *corev1.Pod) {
			p.Status.Phase = corev1.PodPending
			p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: "Unschedulable", Message: "0/1 nodes: Insufficient memory"}}
		}), api.PhasePending, "Unschedulable", "", 0},
		{"image missing", base(func(p *corev1.Pod) {
			p.Spec.NodeName = "n1"
			p.Status.Phase = corev1.PodPending
			p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: ContainerName, State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ErrImageNeverPull"}}}}
		}), api.PhasePending, "ErrImageNeverPull", "n1", 0},
		{"running", base(func(p *corev1.Pod) {
			p.Spec.NodeName = "n1"
			p.Status.Phase = corev1.PodRunning
			p.Status.PodIPs = []corev1.PodIP{{IP: "10.244.0.5"}, {IP: "fd00::5"}}
		}), api.PhaseRunning, "", "n1", 2},
		{"launcher failed", base(func(p *corev1.Pod) {
			p.Spec.NodeName = "n1"
			p.Status.Phase = corev1.PodFailed
			p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: ContainerName, State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1, Reason: "Error"}}}}
		}), api.PhaseFailed, "Error", "n1", 0},
		{"evicted", base(func(p *corev1.Pod) {
			p.Status.Phase = corev1.PodFailed
			p.Status.Reason = "Evicted"
		}), api.PhaseFailed, "Evicted", "", 0},
		{"node lost", base(func(p *corev1.Pod) {
			p.Spec.NodeName = "n1"
			p.Status.Phase = corev1.PodUnknown
			p.Status.Reason = "NodeLost"
		}), api.PhaseUnknown, "NodeLost", "n1", 0},
		{"terminating", base(func(p *corev1.Pod) {
			p.Status.Phase = corev1.PodRunning
			p.DeletionTimestamp = &now
		}), api.PhaseTerminating, "", "", 0},
	} {
		st := StatusFromPod(tc.pod)
		if st.Phase != tc.phase || st.Reason != tc.why || st.Node != tc.node || st.PodName != "box-vm" || len(st.Addresses) != tc.addressCount {
			t.Errorf("%s: status %+v, want phase %s reason %q node %q, %d addresses", tc.name, st, tc.phase, tc.why, tc.node, tc.addressCount)
		}
	}
}

func TestExpiry(t *testing.T) {
	sb := sandbox(api.SandboxSpec{Image: "debian"})
	if _, ok := Expiry(sb); ok {
		t.Error("no TTL: got an expiry")
	}
	sb.Spec.TTL = &metav1.Duration{Duration: 30 * time.Minute}
	if at, ok := Expiry(sb); !ok || !at.Equal(sb.CreationTimestamp.Add(30*time.Minute)) {
		t.Errorf("TTL 30m: expiry %v %v, want creation + 30m", at, ok)
	}
}
