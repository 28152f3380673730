// Package engine defines the narrow interface every VM engine (QEMU,
// Firecracker) implements, so that VM lifecycle code never branches on an
// engine's name: it reads Features instead.
//
// # Lifecycle and ownership
//
// The caller owns Spec.Dir: it creates the directory (0700) before Start and
// removes it after the VM is gone and torn down. Inside it the engine owns
// every file it writes (state file, pidfile, sockets, logs); their names are
// the engine's business, and Attach finds them again from the directory
// alone. The engine writes what teardown needs (planned socket and pidfile
// paths) before the process exists, so a crash at any point can be cleaned
// up.
//
// Start launches the engine process detached from the caller (own session,
// stdin on /dev/null, never exec.CommandContext): a VM keeps running when
// the daemon exits or restarts. A restarted daemon gets an Instance back with
// Attach. An Instance is a handle, not the VM: dropping it leaves the VM
// running.
//
// Stopping is two steps, both the caller's: first ask the guest agent to sync
// its disks and confirm, then Instance.Shutdown (graceful with a deadline,
// then forced). Kill is the immediate, lossy stop.
package engine

import (
	"context"
	"errors"
	"net"
	"os"
	"time"
)

// Engine starts VMs and re-attaches to VMs started earlier. Implementations
// are safe for concurrent use.
type Engine interface {
	// Name is the engine's short name ("qemu", "firecracker"), for logs and
	// display; callers decide on Features, never on the name.
	Name() string
	// Features reports what this engine can do on this host. It may probe
	// the host on first call and is cheap afterwards.
	Features(ctx context.Context) (Features, error)
	// Start boots the VM described by spec, detached from the caller. It
	// returns once the engine process runs and answers its control socket,
	// not when the guest is up: wait for the guest agent for that. On error
	// no process is left behind; logs stay in spec.Dir. Cancelling ctx
	// aborts the start (and kills the process); after Start returns, ctx
	// has no effect on the VM.
	Start(ctx context.Context, spec Spec) (Instance, error)
	// Attach finds the VM that an earlier Start (possibly by another
	// process, before a daemon restart) left in spec.Dir. Only spec.ID and
	// spec.Dir are used. It returns an error of class errdefs.ErrNotFound
	// when no live engine process belongs to the directory.
	Attach(ctx context.Context, spec Spec) (Instance, error)
}

// Instance is a handle on one running (or exited) VM. Its methods are safe
// for concurrent use. It holds no resources that need closing beyond what
// the garbage collector reclaims.
type Instance interface {
	// PID is the engine process id.
	PID() int
	// DialAgent connects to the guest agent's channel (virtio-serial port
	// or vsock, see Features.AgentTransport). Only one connection can be
	// open at a time; a second DialAgent while one is open fails with
	// errdefs.ErrUnavailable. The channel carries bytes only while the
	// guest side has it open, so handshake (e.g. ping until pong) before
	// trusting it, and never half-close the connection.
	DialAgent(ctx context.Context) (net.Conn, error)
	// Shutdown asks the engine to stop the VM (ACPI power button), waits
	// until the engine process exits or ctx is done (DefaultShutdownTimeout
	// when ctx has no deadline), and then stops it by force. It returns nil
	// when the guest powered off by itself, an error matching ErrForced
	// when the engine had to stop it (the VM is stopped either way), and
	// any other error when the VM may still be running. The caller should
	// have the guest agent sync first: a forced stop loses the guest's
	// unwritten data.
	Shutdown(ctx context.Context) error
	// Kill stops the VM immediately (SIGKILL). It does not wait; call Wait.
	Kill() error
	// Wait blocks until the engine process is gone or ctx is done. It
	// works for processes the caller did not start (after Attach).
	Wait(ctx context.Context) error
	// Exited reports whether the engine process is gone. A live process
	// may hold a guest that is dead or paused (see Status): it still has
	// to be stopped.
	Exited() bool
	// Status reports the VM state, from the engine's control socket when
	// it answers.
	Status(ctx context.Context) (State, error)
	// Stats reports the host's view of the engine process.
	Stats(ctx context.Context) (Stats, error)
}

// DefaultShutdownTimeout bounds Instance.Shutdown when its context has no
// deadline.
const DefaultShutdownTimeout = 10 * time.Second

// ErrForced marks a Shutdown that had to stop the VM by force because the
// guest did not power off in time. The VM is stopped.
var ErrForced = errors.New("stopped by force")

// Spec describes one VM to Start.
type Spec struct {
	// ID is the VM id; engines use it in names and logs.
	ID string
	// Dir is the per-VM directory for the engine's files (state, pidfile,
	// sockets, console.log). It must exist. Unix socket paths inside it
	// must stay under 108 bytes: keep it short.
	Dir string
	// VCPU is the number of virtual CPUs (≥ 1).
	VCPU int
	// MemoryMiB is the guest memory in MiB; more than the host has is
	// refused with errdefs.ErrInvalidArgument.
	MemoryMiB int
	// Kernel is an x86-64 ELF vmlinux (preferred, PVH) or a bzImage.
	Kernel string
	// Initrd is one initramfs file, or "". The caller concatenates the
	// kernel's initramfs and the agent's archive.
	Initrd string
	// Cmdline holds extra kernel arguments. The engine adds its own first
	// (console, panic behaviour, clock settings); later arguments win.
	Cmdline string
	// Disks are attached in order: vda, vdb, ...
	Disks []Disk
	// Net is the VM's NIC, or nil for none.
	Net *NetSpec
	// VsockCID is the guest's vsock context id when the engine uses vsock
	// (Features.HasVsock). It must be ≥ 3 and unique among the host's
	// running VMs; 0 lets the engine derive one from ID.
	VsockCID uint32
}

// Disk is one virtio block device.
type Disk struct {
	Path     string // raw image file
	ReadOnly bool
}

// NetSpec is one virtio-net device on a tap.
type NetSpec struct {
	// TapName is the name of an existing tap device, opened by the engine.
	// Ignored when TapFD is set.
	TapName string
	// TapFD is an open tap file (e.g. from the root helper), passed to the
	// engine process. The caller keeps ownership and may close it once
	// Start has returned; an engine that can only open taps by name
	// (Firecracker) closes it first, since a tap takes one attachment.
	TapFD *os.File
	// MAC is the guest's MAC address, e.g. "52:54:00:12:34:56".
	MAC string
	// Detached is a NIC with no host side (TapName and TapFD unset), for
	// a template (see Templater): the guest probes the same device its
	// clones get with a tap.
	Detached bool
}

// State is a VM's run state.
type State string

// The states Status reports.
const (
	StateRunning State = "running"
	StatePaused  State = "paused"
	StateExited  State = "exited"
	// StateUnknown: the process is alive but its control socket did not
	// answer.
	StateUnknown State = "unknown"
)

// Stats is the host's view of the engine process.
type Stats struct {
	PID        int
	UserTime   time.Duration // CPU time in user mode
	SystemTime time.Duration // CPU time in kernel mode
	RSSBytes   uint64        // resident set size
	VSizeBytes uint64        // virtual memory size
	Threads    int
}

// CPUTime is the total CPU time of the engine process.
func (s Stats) CPUTime() time.Duration { return s.UserTime + s.SystemTime }

// Accel names a CPU virtualization method.
type Accel string

// The accelerators.
const (
	AccelKVM Accel = "kvm" // hardware virtualization
	AccelTCG Accel = "tcg" // QEMU's software emulation: slow
)

// AgentTransport names how the host reaches the guest agent.
type AgentTransport string

// The agent transports.
const (
	// AgentSerial: a virtio-serial port named AgentPortName in the guest,
	// a unix socket on the host.
	AgentSerial AgentTransport = "serial"
	// AgentVsock: an AF_VSOCK stream on AgentVsockPort in the guest.
	AgentVsock AgentTransport = "vsock"
)

// AgentPortName is the name of the virtio-serial port carrying the agent
// channel; the guest finds it in /sys/class/virtio-ports/*/name.
const AgentPortName = "banger.agent"

// AgentVsockPort is the vsock port the guest agent listens on.
const AgentVsockPort = 1024

// Features describes what an engine can do on this host.
type Features struct {
	// Accel is the accelerator VMs will use.
	Accel Accel
	// AccelReason explains the choice in one line; when Accel is TCG it is
	// the warning to show users ("KVM unusable: ...; using slow TCG").
	AccelReason string
	// HasVsock: the agent channel is vsock (else a serial port).
	HasVsock bool
	// AgentTransport is how DialAgent reaches the guest.
	AgentTransport AgentTransport
	// TemplatesOff, when set, says why this engine, as configured, can
	// make no templates (see Templater): its VMs boot cold, and no
	// template is attempted.
	TemplatesOff string
	// TemplateTap: a template VM's NIC needs a tap of its own (the engine
	// has no NIC without a host side, NetSpec.Detached is refused); its
	// clones are each given theirs.
	TemplateTap bool
}

// Pauser is implemented by instances whose engine pauses a guest by
// itself: QEMU stops a guest whose disk write failed for lack of space on
// the host (rather than failing the write inside the guest), and the guest
// can go on once space is freed. Callers find it by type assertion.
type Pauser interface {
	// PauseReason says, in words for users, why the VM is paused ("no
	// space left on the host for disk ..."); "" when it is not paused.
	PauseReason(ctx context.Context) (string, error)
	// Resume lets a paused VM go on; a write that still fails pauses it
	// again.
	Resume(ctx context.Context) error
}

// ConsoleLogger is implemented by instances whose guest console goes to a
// file; callers find it by type assertion.
type ConsoleLogger interface {
	// ConsoleLog is the path of the guest console log.
	ConsoleLog() string
}

// Templater is implemented by engines that can start a VM from a template
// instead of booting it; callers find it by type assertion.
//
// A template is a VM stopped at its agent's ready point (see package
// agentproto: Identity), saved as guest memory plus device state in a
// directory the caller owns. Clones map the template's memory privately
// (copy-on-write): starting clones never changes a template's files, so any
// number of them can start from one. A clone must be started with a Spec
// whose device layout matches the template's exactly (the same disks in the
// same order, of the same sizes; NIC present or not; vCPUs, memory, kernel,
// initrd); the files behind the disks may differ. Callers key templates by
// all of that.
type Templater interface {
	// StartTemplate boots spec like Start, with guest memory in a file in
	// dir, so that SaveTemplate can keep it.
	StartTemplate(ctx context.Context, spec Spec, dir string) (Instance, error)
	// SaveTemplate pauses inst (from StartTemplate with the same dir),
	// writes its device state into dir and ends the process. On success
	// dir holds a complete template; on error its state is absent.
	SaveTemplate(ctx context.Context, inst Instance, dir string) error
	// StartClone starts spec from the template in dir and resumes it: the
	// guest continues where the template stopped. It returns once the
	// guest runs. A template that cannot be loaded gives an error matching
	// ErrBadTemplate (the caller discards it); no process is left behind.
	StartClone(ctx context.Context, spec Spec, dir string) (Instance, error)
}

// ErrBadTemplate marks a template that is missing, incomplete or that the
// engine could not load: discard it and boot cold.
var ErrBadTemplate = errors.New("template cannot be loaded")
