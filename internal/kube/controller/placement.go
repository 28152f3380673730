package controller

import (
	"maps"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/bangervm/banger/internal/kube/api"
)

// DefaultAccel is banger-controller's --accel: kvm, as KubeVirt requires
// KVM unless emulation is allowed. A VM fleet silently emulated runs
// 10-50 times slower on the same CPUs; a Sandbox Pending with
// "Insufficient banger.dev/kvm" names its fix (a node with KVM, or
// --accel tcg).
const DefaultAccel = api.AccelKVM

// Taint is the taint that dedicates nodes to banger: launcher Pods and
// banger-node tolerate it, so an admin who taints and labels nodes (and
// gives the controller --node-selector) keeps other Pods off them and
// Sandboxes on them.
const Taint = "banger.dev/sandbox"

// accel is the Sandbox's accelerator: its own, else the launcher's
// default, else tcg.
func accel(spec api.SandboxSpec, l Launcher) string {
	switch {
	case spec.Accel != "":
		return spec.Accel
	case l.Accel != "":
		return l.Accel
	}
	return api.AccelTCG
}

// deviceRequests adds the host devices the VM's accelerator needs to r:
// banger.dev/kvm for kvm (banger-node's device plugin hands the container
// /dev/kvm, and the scheduler places the Pod only where a node offers it);
// nothing for tcg. Extended resources are requested and limited alike.
func deviceRequests(spec api.SandboxSpec, r corev1.ResourceRequirements) corev1.ResourceRequirements {
	if spec.Accel != api.AccelKVM {
		return r
	}
	one := resource.MustParse("1")
	r.Requests = maps.Clone(r.Requests)
	r.Limits = maps.Clone(r.Limits)
	r.Requests[ResourceKVM] = one
	r.Limits[ResourceKVM] = one
	return r
}

// ResourceKVM is banger-node's /dev/kvm (internal/kube/deviceplugin; not
// imported, which would link gRPC into the controller for a name).
const ResourceKVM corev1.ResourceName = "banger.dev/kvm"

// tolerations let launcher Pods onto nodes dedicated to banger.
func tolerations() []corev1.Toleration {
	return []corev1.Toleration{{Key: Taint, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}}
}

// schedulingHint adds to the scheduler's message what to do when no node
// offers banger.dev/kvm: the message alone names the resource, not where
// it comes from.
func schedulingHint(msg string) string {
	if strings.Contains(msg, "Insufficient "+string(ResourceKVM)) {
		return msg + " (accel kvm needs a node where banger-node offers " + string(ResourceKVM) +
			", one with /dev/kvm; for software emulation set spec.accel: tcg, or install with --accel tcg)"
	}
	return msg
}
