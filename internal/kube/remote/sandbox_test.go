package remote

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/errdefs"
	kapi "github.com/bangervm/banger/internal/kube/api"
)

var created = time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)

func sandbox(phase string) *kapi.Sandbox {
	return &kapi.Sandbox{
		ObjectMeta: metav1.ObjectMeta{Name: "box", Namespace: "ns", UID: "0a1b2c3d-uid", CreationTimestamp: metav1.NewTime(created),
			Annotations: map[string]string{AnnotationWorkspace: "/root/repo"}},
		Spec:   kapi.SandboxSpec{Image: "reg:5000/dev:1", MemoryMiB: 256, DiskSize: "2G", Labels: map[string]string{"owner": "a"}, TTL: &metav1.Duration{Duration: time.Hour}},
		Status: kapi.SandboxStatus{Phase: phase, Node: "n1", Reason: "R", Message: "m"},
	}
}

func pod(ready bool) *corev1.Pod {
	st := corev1.ConditionFalse
	if ready {
		st = corev1.ConditionTrue
	}
	start := metav1.NewTime(created.Add(time.Second))
	return &corev1.Pod{Status: corev1.PodStatus{StartTime: &start, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: st}}}}
}

func TestVMFromSandbox(t *testing.T) {
	v := VMFromSandbox(sandbox(kapi.PhaseRunning), pod(true))
	exp := created.Add(time.Hour)
	want := api.VM{ID: "0a1b2c3d-uid", Name: "box", State: api.VMRunning, Image: "reg:5000/dev:1", Engine: "qemu", Net: "none", VCPU: 1, MemoryMiB: 256,
		DiskBytes: 2 << 30, Node: "n1", Workspace: "/root/repo", CreatedAt: created, ExpiresAt: &exp}
	if v.ID != want.ID || v.Name != want.Name || v.State != want.State || v.Image != want.Image || v.Engine != want.Engine || v.Net != want.Net ||
		v.VCPU != want.VCPU || v.MemoryMiB != want.MemoryMiB || v.DiskBytes != want.DiskBytes || v.Node != want.Node || v.Workspace != want.Workspace ||
		!v.CreatedAt.Equal(created) || v.ExpiresAt == nil || !v.ExpiresAt.Equal(exp) || v.Labels["owner"] != "a" || v.StartedAt == nil || v.Reason != "" {
		t.Errorf("VMFromSandbox = %+v\nwant %+v", v, want)
	}

	tests := []struct {
		phase  string
		pod    *corev1.Pod
		state  string
		reason string
	}{
		{"", nil, api.VMCreating, "R: m"},
		{kapi.PhasePending, nil, api.VMCreating, "R: m"},
		{kapi.PhaseRunning, nil, api.VMStarting, "waiting for the VM"},
		{kapi.PhaseRunning, pod(false), api.VMStarting, "waiting for the VM"},
		{kapi.PhaseRunning, pod(true), api.VMRunning, ""},
		{kapi.PhaseSucceeded, nil, api.VMStopped, "powered off"},
		{kapi.PhaseFailed, nil, api.VMError, "R: m"},
		{kapi.PhaseUnknown, nil, api.VMUnknown, "node n1 stopped reporting"},
		{kapi.PhaseTerminating, nil, api.VMStopping, "R: m"},
		{kapi.PhaseStopping, nil, api.VMStopping, "R: m"},
		{kapi.PhaseStopped, nil, api.VMStopped, ""},
	}
	lost := sandbox(kapi.PhaseUnknown)
	lost.DeletionTimestamp = &metav1.Time{Time: created}
	if v := VMFromSandbox(lost, nil); v.State != api.VMStopping || !strings.Contains(v.Reason, "being deleted once its node answers") || !strings.Contains(v.Reason, "R: m") {
		t.Errorf("deleted on a lost node: %s %q; want stopping, waiting for the node", v.State, v.Reason)
	}
	for _, tt := range tests {
		v := VMFromSandbox(sandbox(tt.phase), tt.pod)
		if v.State != tt.state || !strings.Contains(v.Reason, tt.reason) || (tt.reason == "" && v.Reason != "") {
			t.Errorf("phase %q ready %v: state %s reason %q; want %s with %q", tt.phase, podReady(tt.pod), v.State, v.Reason, tt.state, tt.reason)
		}
	}
}

func TestSandboxFromRequest(t *testing.T) {
	sb, err := SandboxFromRequest(api.CreateVMRequest{Image: "img", VCPU: 2, MemoryMiB: 1024, DiskBytes: 3 << 29, Net: "public",
		Labels: map[string]string{"k": "v"}, TTLSeconds: 90}, "ns")
	if err != nil {
		t.Fatal(err)
	}
	if sb.Name != "" || sb.GenerateName != "vm-" || sb.Namespace != "ns" || sb.Spec.Image != "img" || sb.Spec.VCPUs != 2 || sb.Spec.MemoryMiB != 1024 ||
		sb.Spec.DiskSize != "1536M" || sb.Spec.Net != "public" || sb.Spec.Labels["k"] != "v" || sb.Spec.TTL.Duration != 90*time.Second {
		t.Errorf("SandboxFromRequest = %+v", sb)
	}
	for b, want := range map[int64]string{4 << 30: "4G", 512 << 20: "512M", 1000: "1000"} {
		if got := sizeString(b); got != want {
			t.Errorf("sizeString(%d) = %s, want %s", b, got, want)
		}
	}
	for _, bad := range []struct {
		req   api.CreateVMRequest
		want  string
		class func(error) bool
	}{
		{api.CreateVMRequest{}, "--image REF", errdefs.IsInvalidArgument},
		{api.CreateVMRequest{Image: "i", Engine: "firecracker"}, "qemu", errdefs.IsInvalidArgument},
		{api.CreateVMRequest{Image: "i", Labels: map[string]string{"-x": "y"}}, "-x", errdefs.IsInvalidArgument},
	} {
		if _, err := SandboxFromRequest(bad.req, "ns"); err == nil || !strings.Contains(err.Error(), bad.want) || !bad.class(err) {
			t.Errorf("SandboxFromRequest(%+v) = %v, want an error with %q", bad.req, err, bad.want)
		}
	}
}

func TestStartStep(t *testing.T) {
	scheduled := func(mod func(*corev1.Pod)) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "box-vm"}, Spec: corev1.PodSpec{NodeName: "n1"}}
		mod(p)
		return p
	}
	waiting := func(reason string) *corev1.Pod {
		return scheduled(func(p *corev1.Pod) {
			p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "launcher", State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: "msg"}}}}
		})
	}
	tests := []struct {
		phase   string
		pod     *corev1.Pod
		want    string
		wantErr string
	}{
		{phase: kapi.PhasePending, want: "waiting for the controller to make the launcher pod"},
		{phase: kapi.PhasePending, pod: &corev1.Pod{Status: corev1.PodStatus{Conditions: []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Message: "0/1 nodes are available: 1 Insufficient cpu."}}}},
			want: "waiting for a node: 0/1 nodes are available: 1 Insufficient cpu."},
		{phase: kapi.PhasePending, pod: scheduled(func(*corev1.Pod) {}), want: "scheduled on node n1"},
		{phase: kapi.PhasePending, pod: waiting("ContainerCreating"), want: "launcher pod on node n1: ContainerCreating msg"},
		{phase: kapi.PhasePending, pod: waiting("ErrImageNeverPull"), wantErr: "launcher pod box-vm on node n1: ErrImageNeverPull: msg"},
		{phase: kapi.PhaseRunning, pod: scheduled(func(p *corev1.Pod) {
			p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "launcher", State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}}
		}), want: "launcher started on node n1, waiting for the VM to be ready"},
		{phase: kapi.PhaseFailed, wantErr: "the launcher failed (R): m"},
		{phase: kapi.PhaseSucceeded, wantErr: "exited before the VM was ready"},
	}
	for _, tt := range tests {
		got, err := startStep(sandbox(tt.phase), tt.pod)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("startStep(%s, pod %v) = %q, %v; want error %q", tt.phase, tt.pod != nil, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("startStep(%s, pod %v) = %q, %v; want %q", tt.phase, tt.pod != nil, got, err, tt.want)
		}
	}
}
