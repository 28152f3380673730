package controller

import (
	"fmt"
	"strconv"

	corev1 "k8s.io/api/core/v1"

	"github.com/bangervm/banger/internal/kube/api"
	"github.com/bangervm/banger/internal/kube/rootfs"
)

// ToolsVolume is the emptyDir the tools init container copies the
// launcher's static binary into, for the rootfs init container.
const ToolsVolume = "tools"

// imageVolumes are the Pod's volumes for imageInit.
func imageVolumes(l Launcher) []corev1.Volume {
	if !l.ImageFromNode {
		return nil
	}
	return []corev1.Volume{{Name: ToolsVolume, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
}

// imageInit are the init containers that hand the Sandbox's image to the
// launcher through the node: the kubelet pulls spec.image as it pulls any
// container image (the node's containerd content store is the cache all
// Pods of the node share, garbage-collected by the kubelet; private
// registries work through the Pod's pull secrets and the node's registry
// configuration). "tools" copies the launcher's static binary into an
// emptyDir; "rootfs" runs that binary, never a program of the image, in
// the image, and writes the image's files as a tar onto the Sandbox's
// claim (rootfs.Export), unless the claim already holds the VM. It runs
// as uid 0 with every capability dropped but CAP_DAC_READ_SEARCH (to read
// files of any owner and mode), without privilege escalation, on a
// read-only root filesystem.
func imageInit(spec api.SandboxSpec, l Launcher) []corev1.Container {
	if !l.ImageFromNode {
		return nil
	}
	no, yes := false, true
	var root int64
	tools := corev1.VolumeMount{Name: ToolsVolume, MountPath: rootfs.ToolsPath}
	// A third of the claim's room beside the disk: while the launcher
	// converts the image, the tar, the flattened tree and the ext4 are
	// there at once.
	limit := l.StateOverhead.Value() / 3
	return []corev1.Container{{
		Name:            "tools",
		Image:           l.Image,
		ImagePullPolicy: l.PullPolicy,
		Command:         []string{"banger-launcher", "tools"},
		VolumeMounts:    []corev1.VolumeMount{tools},
		SecurityContext: &corev1.SecurityContext{
			AllowPrivilegeEscalation: &no,
			ReadOnlyRootFilesystem:   &yes,
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		},
	}, {
		Name:            "rootfs",
		Image:           spec.Image,
		ImagePullPolicy: corev1.PullIfNotPresent,
		Command:         []string{rootfs.Tool, "rootfs", strconv.FormatInt(limit, 10)},
		VolumeMounts: []corev1.VolumeMount{
			{Name: ToolsVolume, MountPath: rootfs.ToolsPath, ReadOnly: true},
			{Name: StateVolume, MountPath: rootfs.StatePath},
		},
		SecurityContext: &corev1.SecurityContext{
			RunAsUser:                &root,
			RunAsGroup:               &root,
			RunAsNonRoot:             &no,
			AllowPrivilegeEscalation: &no,
			ReadOnlyRootFilesystem:   &yes,
			Capabilities: &corev1.Capabilities{
				Drop: []corev1.Capability{"ALL"},
				Add:  []corev1.Capability{"DAC_READ_SEARCH"},
			},
		},
	}}
}

// initWaiting is why an init container waits, when one waits for a reason
// other than its turn: the kubelet failing to pull the Sandbox's image
// (ErrImagePull, ImagePullBackOff) above all.
func initWaiting(pod *corev1.Pod) (reason, message string, ok bool) {
	for _, cs := range pod.Status.InitContainerStatuses {
		if w := cs.State.Waiting; w != nil && w.Reason != "" && w.Reason != "PodInitializing" {
			return w.Reason, fmt.Sprintf("init container %s (image %s): %s", cs.Name, cs.Image, w.Message), true
		}
	}
	return "", "", false
}

// initFailed is the init container that ended the Pod, if one did (the
// rootfs container refusing an image past its limits, say; its error is
// its termination message).
func initFailed(pod *corev1.Pod) *corev1.ContainerStateTerminated {
	for _, cs := range pod.Status.InitContainerStatuses {
		if t := cs.State.Terminated; t != nil && t.ExitCode != 0 {
			t = t.DeepCopy()
			t.Message = fmt.Sprintf("init container %s: %s", cs.Name, t.Message)
			return t
		}
	}
	return nil
}
