package controller

import (
	"encoding/json"
	"fmt"
	"maps"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/bangervm/banger/internal/config"
	"github.com/bangervm/banger/internal/kube/api"
)

// Labels the controller puts on every launcher Pod; they win over the
// user's labels of the same name.
const (
	LabelSandbox   = "banger.dev/sandbox"
	LabelManagedBy = "app.kubernetes.io/managed-by"
	managedBy      = "banger-controller"
	// EnvSpec carries the Sandbox's spec, as JSON, to the launcher.
	EnvSpec = "BANGER_SANDBOX_SPEC"
	// EnvName carries the Sandbox's name, the VM's name in the launcher.
	EnvName = "BANGER_SANDBOX_NAME"
	// StateVolume is the launcher's state (the VM's disk, the image
	// cache, logs): the Sandbox's claim, mounted at StatePath.
	StateVolume = "state"
	StatePath   = "/var/lib/banger"
	// ContainerName is the launcher's container in the Pod.
	ContainerName = "launcher"
)

// Defaults for spec fields left empty (the CRD defaults them too; these
// cover objects written before a default existed).
const (
	DefaultVCPUs     = 1
	DefaultMemoryMiB = 512
	DefaultDiskSize  = "4G"
)

// Launcher says what runs in each Sandbox's Pod.
type Launcher struct {
	Image      string
	PullPolicy corev1.PullPolicy
	// Command overrides the image's entrypoint when set.
	Command []string
	// Ready is the readiness probe's command: the Pod is Ready once the
	// VM runs and its agent answered. None when empty.
	Ready []string
	// CPUOverhead and MemoryOverhead are added to the VM's size in the
	// Pod's requests: the engine process (QEMU or Firecracker), the
	// launcher and the agent channel. See DefaultLauncher for the values
	// and where they come from.
	CPUOverhead    resource.Quantity
	MemoryOverhead resource.Quantity
	// StateOverhead is added to the VM's disk size in its claim: the
	// room banger's state needs beside the disk.
	StateOverhead resource.Quantity
	// ImageFromNode has the kubelet pull the Sandbox's image and the
	// Pod's init containers hand its files to the launcher (imageInit);
	// false leaves the pull to the launcher (stand-in launchers in tests).
	ImageFromNode bool
	// Accel is the accelerator of Sandboxes that name none (kvm or
	// tcg); empty is tcg. banger-controller's --accel sets it
	// (DefaultAccel unless given).
	Accel string
	// NodeSelector is put on every launcher Pod: the nodes an admin gave
	// to banger (banger-controller --node-selector).
	NodeSelector map[string]string
}

// DefaultLauncher states the overhead of a VM's Pod, measured in one
// (TestLauncherBootsVM, TCG, a 256 MiB busybox guest that touched 160 MiB,
// two runs): QEMU resident 355-396 MiB (the guest's memory, TCG's 64 MiB
// translation cache, device emulation) and the Pod's anonymous memory
// 375-381 MiB, so about 125 MiB beyond guest memory; the cgroup's peak
// reaches the limit through page cache (the disk's), which is reclaimed.
// 128 MiB left the Pod's resident memory a few MiB under its limit; 192
// MiB leaves room for the launcher's streams (exec, cp) and a busier
// guest. 100m CPU for the I/O and agent threads beside the vCPUs is
// stated, not measured. The claim holds 2 GiB beside the VM's disk for
// banger's state: the image cache (the pulled layers and the converted
// base image, about 1 GiB for a Debian image), the kernel, logs.
func DefaultLauncher(image string) Launcher {
	return Launcher{
		Image:          image,
		PullPolicy:     corev1.PullIfNotPresent,
		Command:        []string{"banger-launcher", "run"},
		Ready:          []string{"banger-launcher", "ready"},
		CPUOverhead:    resource.MustParse("100m"),
		MemoryOverhead: resource.MustParse("192Mi"),
		StateOverhead:  resource.MustParse("2Gi"),
		ImageFromNode:  true,
	}
}

// Defaulted returns spec with its empty fields set to the defaults.
func Defaulted(spec api.SandboxSpec) api.SandboxSpec {
	if spec.VCPUs == 0 {
		spec.VCPUs = DefaultVCPUs
	}
	if spec.MemoryMiB == 0 {
		spec.MemoryMiB = DefaultMemoryMiB
	}
	if spec.DiskSize == "" {
		spec.DiskSize = DefaultDiskSize
	}
	if spec.Net == "" {
		spec.Net = api.NetNone
	}
	if spec.Running == nil {
		yes := true
		spec.Running = &yes
	}
	return spec
}

// PodName is the launcher Pod's name: fixed per Sandbox, so a restarted
// controller finds the Pod it made instead of making a second one.
func PodName(sb *api.Sandbox) string { return sb.Name + "-vm" }

// ClaimName is the name of the Sandbox's disk claim, fixed as PodName is.
func ClaimName(sb *api.Sandbox) string { return sb.Name + "-disk" }

// Requests are what the scheduler reserves for the Sandbox's Pod: the
// VM's vCPUs and memory plus the launcher's overhead. Memory is also the
// limit: a VM cannot grow past its size, and the kernel's OOM killer
// should pick nothing else on the node for it. The disk is not ephemeral
// storage: it lives on the Sandbox's claim (RenderClaim).
func Requests(spec api.SandboxSpec, l Launcher) corev1.ResourceRequirements {
	cpu := *resource.NewMilliQuantity(int64(spec.VCPUs)*1000, resource.DecimalSI)
	cpu.Add(l.CPUOverhead)
	mem := *resource.NewQuantity(int64(spec.MemoryMiB)<<20, resource.BinarySI)
	mem.Add(l.MemoryOverhead)
	return corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: cpu, corev1.ResourceMemory: mem},
		Limits:   corev1.ResourceList{corev1.ResourceMemory: mem},
	}
}

// ClaimSize is the storage the Sandbox's claim asks for: the VM's disk
// plus the launcher's state overhead.
func ClaimSize(spec api.SandboxSpec, l Launcher) (resource.Quantity, error) {
	disk, err := config.ParseSize(spec.DiskSize)
	if err != nil {
		return resource.Quantity{}, fmt.Errorf("spec.diskSize: %w", err)
	}
	q := *resource.NewQuantity(disk, resource.BinarySI)
	q.Add(l.StateOverhead)
	return q, nil
}

// ownedLabels are the labels of everything the controller makes for sb;
// the controller's cache selects its Pods and claims by them.
func ownedLabels(sb *api.Sandbox, user map[string]string) map[string]string {
	labels := maps.Clone(user)
	if labels == nil {
		labels = map[string]string{}
	}
	labels[LabelSandbox] = sb.Name
	labels[LabelManagedBy] = managedBy
	return labels
}

// ownerRef makes sb the controller of what the controller makes for it:
// the garbage collector deletes those with the Sandbox.
func ownerRef(sb *api.Sandbox) []metav1.OwnerReference {
	yes := true
	return []metav1.OwnerReference{{
		APIVersion:         api.GroupVersion.String(),
		Kind:               api.Kind,
		Name:               sb.Name,
		UID:                sb.UID,
		Controller:         &yes,
		BlockOwnerDeletion: &yes,
	}}
}

// RenderClaim is the Sandbox's disk: a ReadWriteOnce claim owned by it
// (deleting the Sandbox deletes the claim, and the volume with it where
// the class's reclaim policy is Delete), of ClaimSize, in
// spec.storageClassName or the cluster's default class.
func RenderClaim(sb *api.Sandbox, l Launcher) (*corev1.PersistentVolumeClaim, error) {
	spec := Defaulted(sb.Spec)
	size, err := ClaimSize(spec, l)
	if err != nil {
		return nil, err
	}
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{
			Name:            ClaimName(sb),
			Namespace:       sb.Namespace,
			Labels:          ownedLabels(sb, nil),
			OwnerReferences: ownerRef(sb),
		},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: size}},
		},
	}
	if spec.StorageClassName != "" {
		pvc.Spec.StorageClassName = &spec.StorageClassName
	}
	return pvc, nil
}

// RenderPod is the launcher Pod for sb: owned by it (deleting the Sandbox
// deletes the Pod), never restarted (the Pod's life is the VM's), with no
// service account token (the launcher needs no API access), and the
// Sandbox's claim at StatePath, so a new Pod after a stop finds the VM's
// disk. The grace period is the launcher's time to stop the VM cleanly.
func RenderPod(sb *api.Sandbox, l Launcher) (*corev1.Pod, error) {
	spec := Defaulted(sb.Spec)
	if _, err := ClaimSize(spec, l); err != nil {
		return nil, err
	}
	spec.Accel = accel(spec, l)
	specJSON, err := json.Marshal(spec)
	if err != nil {
		return nil, fmt.Errorf("encode spec: %w", err)
	}
	no := false
	var grace int64 = 30
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:            PodName(sb),
			Namespace:       sb.Namespace,
			Labels:          ownedLabels(sb, spec.Labels),
			OwnerReferences: ownerRef(sb),
		},
		Spec: corev1.PodSpec{
			RestartPolicy:                 corev1.RestartPolicyNever,
			AutomountServiceAccountToken:  &no,
			EnableServiceLinks:            &no,
			TerminationGracePeriodSeconds: &grace,
			NodeSelector:                  maps.Clone(l.NodeSelector),
			Tolerations:                   tolerations(),
			Volumes: append([]corev1.Volume{{
				Name: StateVolume,
				VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{
					ClaimName: ClaimName(sb),
				}},
			}}, imageVolumes(l)...),
			InitContainers: imageInit(spec, l),
			Containers: []corev1.Container{{
				Name:            ContainerName,
				Image:           l.Image,
				ImagePullPolicy: l.PullPolicy,
				Command:         l.Command,
				Env:             []corev1.EnvVar{{Name: EnvSpec, Value: string(specJSON)}, {Name: EnvName, Value: sb.Name}},
				VolumeMounts:    []corev1.VolumeMount{{Name: StateVolume, MountPath: StatePath}},
				ReadinessProbe:  readiness(l.Ready),
				Resources:       deviceRequests(spec, Requests(spec, l)),
				SecurityContext: &corev1.SecurityContext{
					AllowPrivilegeEscalation: &no,
					Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}, Add: netCapabilities(spec)},
				},
			}},
		},
	}, nil
}

// netCapabilities are what the launcher container gets back, beyond
// nothing, for a Sandbox with a network (public or full): the Pod's
// network namespace becomes the VM's host network (bridge, tap, iptables
// and nftables rules, per-interface forwarding over rtnetlink), which
// takes CAP_NET_ADMIN in that namespace only, and /dev/net/tun, which no
// container runtime makes, takes CAP_MKNOD (runc's device cgroup already
// allows that one device, c 10:200). Nothing for --net none.
func netCapabilities(spec api.SandboxSpec) []corev1.Capability {
	if spec.Net == api.NetPublic || spec.Net == api.NetFull {
		return []corev1.Capability{"NET_ADMIN", "MKNOD"}
	}
	return nil
}

// readiness runs cmd in the container every 2 s (a guest boots in seconds
// under KVM, tens of seconds under TCG on a busy node).
func readiness(cmd []string) *corev1.Probe {
	if len(cmd) == 0 {
		return nil
	}
	return &corev1.Probe{
		ProbeHandler:   corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: cmd}},
		PeriodSeconds:  2,
		TimeoutSeconds: 10,
	}
}

// Expiry is when a Sandbox with a TTL is to be deleted; ok is false
// without one.
func Expiry(sb *api.Sandbox) (at time.Time, ok bool) {
	if sb.Spec.TTL == nil || sb.Spec.TTL.Duration <= 0 {
		return time.Time{}, false
	}
	return sb.CreationTimestamp.Add(sb.Spec.TTL.Duration), true
}
