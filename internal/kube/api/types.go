// Package api holds the Sandbox custom resource (banger.dev/v1alpha1): one
// banger VM on a Kubernetes cluster, run in its own launcher Pod. The CRD
// that serves it is deploy/kubernetes/sandbox-crd.yaml; crd_test.go keeps
// the two in step.
package api

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

const (
	Group   = "banger.dev"
	Version = "v1alpha1"
	Kind    = "Sandbox"
	// Resource is the plural the apiserver serves the kind under.
	Resource = "sandboxes"
)

// GroupVersion is banger.dev/v1alpha1.
var GroupVersion = schema.GroupVersion{Group: Group, Version: Version}

// Net modes, as banger vm run --net takes them.
const (
	NetNone   = "none"
	NetPublic = "public"
	NetFull   = "full"
)

// NetModes are the values spec.net accepts.
var NetModes = []string{NetNone, NetPublic, NetFull}

// Accelerators a Sandbox's VM runs under (spec.accel).
const (
	// AccelKVM: hardware virtualization. The launcher Pod requests
	// banger.dev/kvm (served by banger-node where a node has /dev/kvm), so
	// it lands only on such nodes, and the launcher refuses to run
	// without a usable KVM rather than fall back to emulation.
	AccelKVM = "kvm"
	// AccelTCG: QEMU's software emulation, on any node; slow.
	AccelTCG = "tcg"
)

// AccelModes are the values spec.accel accepts (empty: the controller's
// --accel).
var AccelModes = []string{AccelKVM, AccelTCG}

// Size bounds the CRD enforces (the apiserver rejects anything outside).
const (
	MinVCPUs     = 1
	MaxVCPUs     = 64
	MinMemoryMiB = 128
	MaxMemoryMiB = 1 << 20
)

// Phases a Sandbox reports, mirrored from its launcher Pod.
const (
	// PhasePending: no Pod yet, or the Pod is not scheduled or not started.
	PhasePending = "Pending"
	// PhaseRunning: the launcher container runs.
	PhaseRunning = "Running"
	// PhaseSucceeded: the launcher exited 0 (the VM powered off).
	PhaseSucceeded = "Succeeded"
	// PhaseFailed: the launcher failed, or its Pod vanished; the VM is
	// gone and is not started again behind the user's back.
	PhaseFailed = "Failed"
	// PhaseUnknown: the node stopped reporting (lost or unreachable).
	PhaseUnknown = "Unknown"
	// PhaseTerminating: the Pod is being deleted.
	PhaseTerminating = "Terminating"
	// PhaseStopping: spec.running is false and the controller deleted the
	// Pod; the launcher is stopping the VM (it syncs its disk first).
	PhaseStopping = "Stopping"
	// PhaseStopped: spec.running is false, no Pod runs, the disk is kept.
	PhaseStopped = "Stopped"
)

// SandboxSpec is what the user asks for.
type SandboxSpec struct {
	// Image is the banger image (name or OCI reference) the VM boots.
	Image string `json:"image"`
	// Kernel is the banger kernel name; empty means the launcher's
	// default.
	Kernel string `json:"kernel,omitempty"`
	// VCPUs defaults to 1.
	VCPUs int32 `json:"vcpus,omitempty"`
	// MemoryMiB defaults to 512.
	MemoryMiB int32 `json:"memoryMiB,omitempty"`
	// DiskSize is the VM's root disk, as banger writes sizes (4G, 512M);
	// defaults to 4G.
	DiskSize string `json:"diskSize,omitempty"`
	// Net is none, public or full; defaults to none.
	Net string `json:"net,omitempty"`
	// Accel is kvm or tcg; empty means the controller's --accel (kvm
	// unless the cluster was installed with --accel tcg).
	Accel string `json:"accel,omitempty"`
	// Labels are copied onto the launcher Pod.
	Labels map[string]string `json:"labels,omitempty"`
	// TTL, when set, deletes the Sandbox that long after its creation.
	TTL *metav1.Duration `json:"ttl,omitempty"`
	// Running says whether the VM should run (default true). false stops
	// it: the controller deletes the Pod and keeps the disk; true again
	// starts a new Pod on the same disk.
	Running *bool `json:"running,omitempty"`
	// StorageClassName is the class of the disk's PersistentVolumeClaim;
	// empty means the cluster's default class. Fixed at creation.
	StorageClassName string `json:"storageClassName,omitempty"`
}

// IsRunning is spec.running with its default (true) applied.
func (s SandboxSpec) IsRunning() bool { return s.Running == nil || *s.Running }

// SandboxStatus is what the controller observed.
type SandboxStatus struct {
	Phase string `json:"phase,omitempty"`
	// ObservedGeneration is the spec generation this status answers: a
	// client that changed the spec (running: false, say) knows the
	// controller acted on it once this reaches the new generation.
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Node is the node the launcher Pod was scheduled to.
	Node string `json:"node,omitempty"`
	// Reason says why the Sandbox is not Running, when it is not.
	Reason  string `json:"reason,omitempty"`
	Message string `json:"message,omitempty"`
	// PodName is the launcher Pod (in the Sandbox's namespace).
	PodName string `json:"podName,omitempty"`
	// ClaimName is the disk's PersistentVolumeClaim (in the Sandbox's
	// namespace), set once the controller made it.
	ClaimName string   `json:"claimName,omitempty"`
	Addresses []string `json:"addresses,omitempty"`
}

// Sandbox is one banger VM on the cluster.
type Sandbox struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   SandboxSpec   `json:"spec"`
	Status SandboxStatus `json:"status,omitempty"`
}

// SandboxList is a list of Sandboxes.
type SandboxList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Sandbox `json:"items"`
}

// AddToScheme registers Sandbox and SandboxList with a scheme.
func AddToScheme(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion, &Sandbox{}, &SandboxList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
