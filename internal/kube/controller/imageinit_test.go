package controller

import (
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/bangervm/banger/internal/kube/api"
	"github.com/bangervm/banger/internal/kube/rootfs"
)

// The Sandbox's image reaches the launcher through the node: the tools
// init container (the launcher's image) copies banger-launcher into an
// emptyDir, the rootfs init container (the Sandbox's image, pulled by the
// kubelet) runs that copy, as root with only CAP_DAC_READ_SEARCH, on a
// read-only root, and writes onto the claim. Without ImageFromNode the
// Pod has neither.
func TestRenderPodImageInit(t *testing.T) {
	sb := sandbox(api.SandboxSpec{Image: "registry.example/team/app:1"})
	pod, err := RenderPod(sb, DefaultLauncher("banger/launcher:1"))
	if err != nil {
		t.Fatal(err)
	}
	v := pod.Spec.Volumes
	if len(v) != 2 || v[1].Name != ToolsVolume || v[1].EmptyDir == nil {
		t.Fatalf("volumes %+v: want the claim and an emptyDir %s", v, ToolsVolume)
	}
	ic := pod.Spec.InitContainers
	if len(ic) != 2 || ic[0].Name != "tools" || ic[1].Name != "rootfs" {
		t.Fatalf("init containers %+v: want tools, then rootfs", ic)
	}
	tools, rfs := ic[0], ic[1]
	if tools.Image != "banger/launcher:1" || !slices.Equal(tools.Command, []string{"banger-launcher", "tools"}) ||
		len(tools.VolumeMounts) != 1 || tools.VolumeMounts[0].MountPath != rootfs.ToolsPath || tools.VolumeMounts[0].ReadOnly {
		t.Errorf("tools %+v: want banger-launcher tools in the launcher image, writing %s", tools, rootfs.ToolsPath)
	}
	if rfs.Image != sb.Spec.Image || rfs.ImagePullPolicy != corev1.PullIfNotPresent ||
		!slices.Equal(rfs.Command, []string{rootfs.Tool, "rootfs", "715827882"}) {
		t.Errorf("rootfs %s %s %q: want the Sandbox's image, IfNotPresent, the copied launcher with a third of the 2 GiB state room", rfs.Image, rfs.ImagePullPolicy, rfs.Command)
	}
	if m := rfs.VolumeMounts; len(m) != 2 || m[0].Name != ToolsVolume || !m[0].ReadOnly || m[1].Name != StateVolume || m[1].MountPath != rootfs.StatePath {
		t.Errorf("rootfs mounts %+v: want tools read-only, the claim at %s", m, rootfs.StatePath)
	}
	for _, c := range ic {
		sc := c.SecurityContext
		if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.Privileged != nil ||
			sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
			t.Errorf("%s security context %+v: want ALL dropped, no escalation, read-only root", c.Name, sc)
		}
	}
	if add := rfs.SecurityContext.Capabilities.Add; !slices.Equal(add, []corev1.Capability{"DAC_READ_SEARCH"}) || *rfs.SecurityContext.RunAsUser != 0 {
		t.Errorf("rootfs adds %v as uid %v: want only DAC_READ_SEARCH, as root", add, rfs.SecurityContext.RunAsUser)
	}
	if add := ic[0].SecurityContext.Capabilities.Add; len(add) != 0 {
		t.Errorf("tools adds %v: want nothing", add)
	}

	l := DefaultLauncher("banger/launcher:1")
	l.ImageFromNode = false
	pod, err = RenderPod(sb, l)
	if err != nil || len(pod.Spec.InitContainers) != 0 || len(pod.Spec.Volumes) != 1 {
		t.Errorf("without ImageFromNode: %v, %d init containers, volumes %+v: want none and the claim only", err, len(pod.Spec.InitContainers), pod.Spec.Volumes)
	}
}

// A Sandbox whose image the kubelet cannot pull says so while Pending,
// and one whose rootfs init container failed says why once Failed; an
// init container merely waiting for its turn is no reason.
func TestStatusFromInitContainers(t *testing.T) {
	pending := &corev1.Pod{Spec: corev1.PodSpec{NodeName: "n1"}, Status: corev1.PodStatus{Phase: corev1.PodPending,
		InitContainerStatuses: []corev1.ContainerStatus{
			{Name: "tools", State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 0}}},
			{Name: "rootfs", Image: "reg.example/app:1", State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ImagePullBackOff", Message: "Back-off pulling image"}}},
		}}}
	st := StatusFromPod(pending)
	if st.Phase != api.PhasePending || st.Reason != "ImagePullBackOff" || !strings.Contains(st.Message, "reg.example/app:1") {
		t.Errorf("pull failing: %+v, want Pending, ImagePullBackOff naming the image", st)
	}
	pending.Status.InitContainerStatuses[1].State.Waiting.Reason = "PodInitializing"
	if st := StatusFromPod(pending); st.Reason != "" {
		t.Errorf("init container waiting its turn: reason %q, want none", st.Reason)
	}
	failed := &corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodFailed,
		InitContainerStatuses: []corev1.ContainerStatus{{Name: "rootfs", State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
			ExitCode: 1, Reason: "Error", Message: "the image has more than 1048576 files"}}}},
		ContainerStatuses: []corev1.ContainerStatus{{Name: ContainerName, State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "PodInitializing"}}}},
	}}
	if st := StatusFromPod(failed); st.Phase != api.PhaseFailed || st.Reason != "Error" || !strings.Contains(st.Message, "init container rootfs: the image has more than") {
		t.Errorf("rootfs failed: %+v, want Failed with its message", st)
	}
}
