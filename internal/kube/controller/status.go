package controller

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"

	"github.com/bangervm/banger/internal/kube/api"
)

// Reasons the controller itself sets (others are copied from the Pod).
const (
	ReasonPodGone    = "LauncherPodGone"
	ReasonPodTaken   = "PodNameTaken"
	ReasonClaimGone  = "DiskClaimGone"
	ReasonClaimTaken = "DiskClaimNameTaken"
	ReasonInvalid    = "InvalidSpec"
)

// StatusFromPod mirrors the launcher Pod into a Sandbox status: phase,
// node, addresses, and why it is not running when it is not.
func StatusFromPod(pod *corev1.Pod) api.SandboxStatus {
	st := api.SandboxStatus{PodName: pod.Name, Node: pod.Spec.NodeName}
	for _, ip := range pod.Status.PodIPs {
		st.Addresses = append(st.Addresses, ip.IP)
	}
	if pod.DeletionTimestamp != nil {
		st.Phase = api.PhaseTerminating
		return st
	}
	switch pod.Status.Phase {
	case corev1.PodRunning:
		st.Phase = api.PhaseRunning
	case corev1.PodSucceeded:
		st.Phase = api.PhaseSucceeded
	case corev1.PodFailed:
		st.Phase = api.PhaseFailed
		st.Reason, st.Message = pod.Status.Reason, pod.Status.Message
		t := launcherTerminated(pod)
		if t == nil {
			t = initFailed(pod)
		}
		if t != nil {
			if st.Reason == "" {
				st.Reason = t.Reason
			}
			if st.Message == "" {
				st.Message = fmt.Sprintf("launcher exited %d: %s", t.ExitCode, t.Message)
			}
		}
	case corev1.PodUnknown:
		// The kubelet stopped reporting: the node is lost or cut off.
		st.Phase = api.PhaseUnknown
		st.Reason, st.Message = pod.Status.Reason, pod.Status.Message
	default:
		st.Phase = api.PhasePending
		st.Reason, st.Message = pendingReason(pod)
	}
	return st
}

// pendingReason says why a Pending Pod is not running: not scheduled (the
// scheduler's message names the missing resources), or its container
// waiting (an image it cannot pull, say).
func pendingReason(pod *corev1.Pod) (reason, message string) {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse {
			return c.Reason, schedulingHint(c.Message)
		}
	}
	if reason, message, ok := initWaiting(pod); ok {
		return reason, message
	}
	for _, cs := range pod.Status.ContainerStatuses {
		if cs.Name == ContainerName && cs.State.Waiting != nil {
			return cs.State.Waiting.Reason, cs.State.Waiting.Message
		}
	}
	if pod.Spec.NodeName == "" {
		return "Unscheduled", ""
	}
	return "", ""
}

func launcherTerminated(pod *corev1.Pod) *corev1.ContainerStateTerminated {
	for _, cs := range pod.Status.ContainerStatuses {
		if cs.Name == ContainerName {
			return cs.State.Terminated
		}
	}
	return nil
}
