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
		corev1.ResourceCPU:    "2100m",
		corev1.ResourceMemory: "448Mi", // 256 + 192 overhead
	}
	for name, q := range want {
		got := c.Resources.Requests[name]
		if got.Cmp(resource.MustParse(q)) != 0 {
			t.Errorf("request %s = %s, want %s", name, got.String(), q)
		}
	}
	if len(c.Resources.Requests) != len(want) {
		t.Errorf("requests %v: want cpu and memory only (the disk is on the claim, not ephemeral storage)", c.Resources.Requests)
	}
	if v := pod.Spec.Volumes; len(v) == 0 || v[0].Name != StateVolume || v[0].PersistentVolumeClaim == nil || v[0].PersistentVolumeClaim.ClaimName != "box-disk" {
		t.Errorf("volumes %+v: want %s from claim box-disk", v, StateVolume)
	}
	if m := c.VolumeMounts; len(m) != 1 || m[0].Name != StateVolume || m[0].MountPath != "/var/lib/banger" || m[0].ReadOnly {
		t.Errorf("mounts %+v: want %s read-write at /var/lib/banger", m, StateVolume)
	}
	if lim := c.Resources.Limits[corev1.ResourceMemory]; lim.Cmp(resource.MustParse("448Mi")) != 0 {
		t.Errorf("memory limit %s, want 448Mi", lim.String())
	}
	var spec api.SandboxSpec
	if len(c.Env) != 2 || c.Env[0].Name != EnvSpec || json.Unmarshal([]byte(c.Env[0].Value), &spec) != nil ||
		spec.Image != "debian" || spec.Net != api.NetNone || spec.VCPUs != 2 || spec.Running == nil || !*spec.Running ||
		c.Env[1].Name != EnvName || c.Env[1].Value != "box" {
		t.Errorf("env %+v: want %s with the defaulted spec and %s=box", c.Env, EnvSpec, EnvName)
	}
	if p := c.ReadinessProbe; p == nil || p.Exec == nil || strings.Join(p.Exec.Command, " ") != "banger-launcher ready" ||
		strings.Join(c.Command, " ") != "banger-launcher run" {
		t.Errorf("command %q, readiness probe %+v: want banger-launcher run, and ready as the probe", c.Command, p)
	}
	if *c.SecurityContext.AllowPrivilegeEscalation || len(c.SecurityContext.Capabilities.Drop) != 1 {
		t.Errorf("security context %+v: want no escalation, ALL dropped", c.SecurityContext)
	}
}

// A Sandbox with a network gets back exactly NET_ADMIN and MKNOD (its
// Pod's namespace is the VM's host network, /dev/net/tun is made in the
// container); without one, nothing. Every capability else stays dropped,
// escalation off, never privileged.
func TestRenderPodNetCapabilities(t *testing.T) {
	for _, tc := range []struct{ net, add string }{
		{"", ""},
		{api.NetNone, ""},
		{api.NetPublic, "NET_ADMIN,MKNOD"},
		{api.NetFull, "NET_ADMIN,MKNOD"},
	} {
		pod, err := RenderPod(sandbox(api.SandboxSpec{Image: "debian", Net: tc.net}), DefaultLauncher("l"))
		if err != nil {
			t.Fatal(err)
		}
		sc := pod.Spec.Containers[0].SecurityContext
		var add []string
		for _, c := range sc.Capabilities.Add {
			add = append(add, string(c))
		}
		if got := strings.Join(add, ","); got != tc.add || len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" ||
			sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.Privileged != nil && *sc.Privileged {
			t.Errorf("net %q: security context %+v, adds %q: want ALL dropped, %q added, no escalation, unprivileged", tc.net, sc, got, tc.add)
		}
	}
}

func TestRenderPodDefaultsAndBadSize(t *testing.T) {
	pod, err := RenderPod(sandbox(api.SandboxSpec{Image: "debian"}), DefaultLauncher("l"))
	if err != nil {
		t.Fatal(err)
	}
	r := pod.Spec.Containers[0].Resources.Requests
	if cpu, mem := r[corev1.ResourceCPU], r[corev1.ResourceMemory]; cpu.String() != "1100m" || mem.String() != "704Mi" {
		t.Errorf("default requests cpu %s memory %s, want 1100m 704Mi", cpu.String(), mem.String())
	}
	pvc, err := RenderClaim(sandbox(api.SandboxSpec{Image: "debian"}), DefaultLauncher("l"))
	if err != nil {
		t.Fatal(err)
	}
	if q := pvc.Spec.Resources.Requests[corev1.ResourceStorage]; q.String() != "6Gi" {
		t.Errorf("default claim %s, want 6Gi (4G disk + 2Gi state)", q.String())
	}
	for _, render := range []func(*api.Sandbox, Launcher) error{
		func(sb *api.Sandbox, l Launcher) error { _, err := RenderPod(sb, l); return err },
		func(sb *api.Sandbox, l Launcher) error { _, err := RenderClaim(sb, l); return err },
	} {
		if err := render(sandbox(api.SandboxSpec{Image: "debian", DiskSize: "4X"}), DefaultLauncher("l")); err == nil {
			t.Error("disk size 4X: rendered, want an error")
		}
	}
}

// The disk's claim: owned by the Sandbox (the garbage collector deletes it
// with the Sandbox), ReadWriteOnce, the disk plus the state overhead, in
// the class asked for or the cluster's default.
func TestRenderClaim(t *testing.T) {
	sb := sandbox(api.SandboxSpec{Image: "debian", DiskSize: "1G", Labels: map[string]string{"team": "a"}})
	pvc, err := RenderClaim(sb, DefaultLauncher("l"))
	if err != nil {
		t.Fatal(err)
	}
	if pvc.Name != "box-disk" || pvc.Namespace != "team" {
		t.Errorf("claim %s/%s, want team/box-disk", pvc.Namespace, pvc.Name)
	}
	if !metav1.IsControlledBy(pvc, sb) || len(pvc.OwnerReferences) != 1 || !*pvc.OwnerReferences[0].BlockOwnerDeletion {
		t.Errorf("owner references %+v: want the sandbox as controller, blocking deletion", pvc.OwnerReferences)
	}
	if pvc.Labels[LabelSandbox] != "box" || pvc.Labels[LabelManagedBy] != managedBy {
		t.Errorf("labels %v: want %s=box and the managed-by label the cache selects", pvc.Labels, LabelSandbox)
	}
	if m := pvc.Spec.AccessModes; len(m) != 1 || m[0] != corev1.ReadWriteOnce {
		t.Errorf("access modes %v, want ReadWriteOnce", m)
	}
	if q := pvc.Spec.Resources.Requests[corev1.ResourceStorage]; q.Cmp(resource.MustParse("3Gi")) != 0 {
		t.Errorf("claim size %s, want 3Gi (1G disk + 2Gi state)", q.String())
	}
	if pvc.Spec.StorageClassName != nil {
		t.Errorf("storage class %q, want none set (the cluster's default)", *pvc.Spec.StorageClassName)
	}
	sb.Spec.StorageClassName = "fast"
	pvc, err = RenderClaim(sb, DefaultLauncher("l"))
	if err != nil {
		t.Fatal(err)
	}
	if pvc.Spec.StorageClassName == nil || *pvc.Spec.StorageClassName != "fast" {
		t.Errorf("storage class %v, want fast", pvc.Spec.StorageClassName)
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

func TestWithNode(t *testing.T) {
	since := metav1.NewTime(time.Date(2026, 12, 3, 22, 0, 0, 0, time.UTC))
	node := func(status corev1.ConditionStatus, msg string) *corev1.Node {
		return &corev1.Node{Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{
			{Type: corev1.NodeMemoryPressure, Status: corev1.ConditionFalse},
			{Type: corev1.NodeReady, Status: status, Message: msg, LastTransitionTime: since},
		}}}
	}
	running := api.SandboxStatus{Phase: api.PhaseRunning, Node: "n1", PodName: "box-vm"}
	for _, tc := range []struct {
		name          string
		st            api.SandboxStatus
		nodeName      string
		node          *corev1.Node
		phase, reason string
		message       []string
	}{
		{"ready node", running, "n1", node(corev1.ConditionTrue, ""), api.PhaseRunning, "", nil},
		{"kubelet silent", running, "n1", node(corev1.ConditionUnknown, "Kubelet stopped posting node status."), api.PhaseUnknown, ReasonNodeLost,
			[]string{"node n1 stopped reporting since 2026-12-03T22:00:00Z: Kubelet stopped posting node status;", "may still run"}},
		{"node not ready", running, "n1", node(corev1.ConditionFalse, "container runtime is down"), api.PhaseUnknown, ReasonNodeNotReady,
			[]string{"node n1 is not ready since", "container runtime is down"}},
		{"node gone", running, "n1", nil, api.PhaseUnknown, ReasonNodeLost, []string{"node n1 is gone;"}},
		{"pending on a lost node", api.SandboxStatus{Phase: api.PhasePending, Reason: "ContainerCreating"}, "n1", node(corev1.ConditionUnknown, ""), api.PhaseUnknown, ReasonNodeLost, []string{"node n1 stopped reporting"}},
		{"unscheduled", api.SandboxStatus{Phase: api.PhasePending, Reason: "Unschedulable"}, "", nil, api.PhasePending, "Unschedulable", nil},
		{"failed stays failed", api.SandboxStatus{Phase: api.PhaseFailed, Reason: "Error"}, "n1", nil, api.PhaseFailed, "Error", nil},
		{"evicted from a lost node", api.SandboxStatus{Phase: api.PhaseTerminating}, "n1", node(corev1.ConditionUnknown, ""), api.PhaseUnknown, ReasonNodeLost,
			[]string{"node n1 stopped reporting since", "is being deleted, which finishes when the node answers"}},
		{"terminating on a ready node", api.SandboxStatus{Phase: api.PhaseTerminating}, "n1", node(corev1.ConditionTrue, ""), api.PhaseTerminating, "", nil},
		{"succeeded stays succeeded", api.SandboxStatus{Phase: api.PhaseSucceeded}, "n1", node(corev1.ConditionUnknown, ""), api.PhaseSucceeded, "", nil},
	} {
		st := WithNode(tc.st, tc.nodeName, tc.node)
		if st.Phase != tc.phase || st.Reason != tc.reason || st.PodName != tc.st.PodName || st.Node != tc.st.Node {
			t.Errorf("%s: %+v, want phase %s reason %q, pod and node kept", tc.name, st, tc.phase, tc.reason)
		}
		for _, m := range tc.message {
			if !strings.Contains(st.Message, m) {
				t.Errorf("%s: message %q, want it to contain %q", tc.name, st.Message, m)
			}
		}
	}
}
