package controller

import (
	"fmt"
	"strings"
	"time"

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
	// ReasonNodeLost: the Pod's node stopped reporting (its Ready
	// condition Unknown) or is gone. The VM may still run there.
	ReasonNodeLost = "NodeLost"
	// ReasonNodeNotReady: the Pod's node reports itself not ready.
	ReasonNodeNotReady = "NodeNotReady"
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

// WithNode corrects st, mirrored from a Pod on node (nil: no such Node
// any more), for the node's health: a Pod's own status stops changing when
// its kubelet stops reporting (the node lifecycle controller only marks it
// not ready), so a Running Sandbox on a lost node would say Running. It
// becomes Unknown, naming the node and what its Ready condition says, and
// Running again once the node is. A Terminating one becomes Unknown too:
// a Pod on an unreachable node is evicted after its toleration (5 minutes
// by default), and its deletion then waits for the node to answer or be
// deleted. Finished phases are left as they are.
func WithNode(st api.SandboxStatus, nodeName string, node *corev1.Node) api.SandboxStatus {
	switch st.Phase {
	case api.PhaseRunning, api.PhasePending, api.PhaseTerminating:
	default:
		return st
	}
	reason, message, lost := nodeLost(nodeName, node)
	if !lost {
		return st
	}
	if st.Phase == api.PhaseTerminating {
		message += "; its pod (and the VM) is being deleted, which finishes when the node answers or is deleted"
	} else {
		message += "; the VM may still run there, and is reported again when the node is back"
	}
	st.Phase, st.Reason, st.Message = api.PhaseUnknown, reason, message
	return st
}

// nodeLost says whether node (nil: gone), which a Pod was scheduled on,
// is lost, why and since when.
func nodeLost(name string, node *corev1.Node) (reason, message string, lost bool) {
	if name == "" {
		return "", "", false
	}
	if node == nil {
		return ReasonNodeLost, fmt.Sprintf("node %s is gone", name), true
	}
	for _, c := range node.Status.Conditions {
		if c.Type != corev1.NodeReady || c.Status == corev1.ConditionTrue {
			continue
		}
		reason, what := ReasonNodeLost, "stopped reporting"
		if c.Status == corev1.ConditionFalse {
			reason, what = ReasonNodeNotReady, "is not ready"
		}
		message = fmt.Sprintf("node %s %s since %s", name, what, c.LastTransitionTime.UTC().Format(time.RFC3339))
		if m := strings.TrimSuffix(c.Message, "."); m != "" {
			message += ": " + m
		}
		return reason, message, true
	}
	return "", "", false
}

func launcherTerminated(pod *corev1.Pod) *corev1.ContainerStateTerminated {
	for _, cs := range pod.Status.ContainerStatuses {
		if cs.Name == ContainerName {
			return cs.State.Terminated
		}
	}
	return nil
}
