package api

import "time"

// Network modes.
const (
	NetNone   = "none"
	NetPublic = "public"
	NetFull   = "full"
)

// VM states. Creating, starting and stopping are recorded before the
// daemon acts, so a daemon killed mid-way knows at its next start what was
// under way (a create is rolled back, a start adopted or undone, a stop
// finished). Paused is never recorded: it is what the engine reports for a
// running VM it has paused (QEMU, after a disk write found the host full),
// with Reason saying why. Unknown is a cluster VM's whose node stopped
// reporting: it may still run there, is running again when the node is
// back, and is not pruned meanwhile.
const (
	VMCreating = "creating"
	VMCreated  = "created"
	VMStarting = "starting"
	VMRunning  = "running"
	VMPaused   = "paused"
	VMStopping = "stopping"
	VMStopped  = "stopped"
	VMError    = "error"
	VMUnknown  = "unknown"
)

// VM routes.
const (
	PathVMs     = "/v1/vms"       // GET list, POST create (stream)
	PathVM      = "/v1/vms/"      // GET, DELETE, PATCH /v1/vms/{ref}; POST /v1/vms/{ref}/{action}
	PathVMPrune = "/v1/vms-prune" // POST
)

// VM actions posted to /v1/vms/{ref}/{action}.
const (
	ActionStart   = "start"
	ActionStop    = "stop"
	ActionRestart = "restart"
	ActionKill    = "kill"
	ActionExec    = "exec"  // upgraded connection, see ExecUpgrade
	ActionLogs    = "logs"  // GET, ?follow=1 streams
	ActionStats   = "stats" // GET
)

// VM is one virtual machine.
type VM struct {
	ID        string      `json:"id"`
	Name      string      `json:"name"`
	State     string      `json:"state"`
	Reason    string      `json:"reason,omitempty"` // why it is in state error, paused, unknown or stopped by itself
	Image     string      `json:"image"`
	Kernel    string      `json:"kernel"`
	Engine    string      `json:"engine"`
	Accel     string      `json:"accel,omitempty"`
	Net       string      `json:"net"`          // none, public or full
	IP        string      `json:"ip,omitempty"` // the guest's address on banger's bridge
	VCPU      int         `json:"vcpu"`
	MemoryMiB int         `json:"memoryMiB"`
	DiskBytes int64       `json:"diskBytes"`
	PID       int         `json:"pid,omitempty"`
	Dir       string      `json:"dir"`
	Config    ImageConfig `json:"config"`
	CreatedAt time.Time   `json:"createdAt"`
	StartedAt *time.Time  `json:"startedAt,omitempty"`
	Forwards  []Forward   `json:"forwards,omitempty"`
	// Workspace is the guest path of the repository shipped in with vm
	// run PATH or vm workspace prepare; vm exec runs there by default.
	Workspace string `json:"workspace,omitempty"`
	// AgentVersion is the version the VM's agent reported when the
	// daemon last connected to it (an exec, a copy, a stop): empty until
	// then. A VM keeps the agent it booted with across a banger update.
	AgentVersion string `json:"agentVersion,omitempty"`
	// Labels are the key=value pairs the VM was created with (see
	// ValidateLabel); vm list and vm prune filter on them.
	Labels map[string]string `json:"labels,omitempty"`
	// ExpiresAt is when the daemon deletes the VM, as vm delete --force
	// does, if it was created with a time-to-live.
	ExpiresAt *time.Time `json:"expiresAt,omitempty"`
	// Node is the Kubernetes node whose launcher Pod runs the VM, on a
	// cluster context; empty on the local daemon.
	Node string `json:"node,omitempty"`
	// StartedFrom is how the VM last started: "cold" (booted) or
	// "template ID" (resumed from that template); empty before its first
	// start.
	StartedFrom string `json:"startedFrom,omitempty"`
}

// CreateVMRequest creates (and by default starts) a VM. Zero sizes take
// the configured defaults; empty image and kernel take the defaults and
// are pulled when absent.
type CreateVMRequest struct {
	Name      string `json:"name,omitempty"`
	Image     string `json:"image,omitempty"`
	Kernel    string `json:"kernel,omitempty"`
	VCPU      int    `json:"vcpu,omitempty"`
	MemoryMiB int    `json:"memoryMiB,omitempty"`
	DiskBytes int64  `json:"diskBytes,omitempty"`
	// Net is none, public (NAT out, no access to the host's networks or
	// other VMs) or full (plain NAT); empty means the default.
	Net string `json:"net,omitempty"`
	// Engine is qemu or firecracker; empty chooses (see banger engine).
	Engine  string `json:"engine,omitempty"`
	NoStart bool   `json:"noStart,omitempty"`
	// Labels mark the VM (see ValidateLabels).
	Labels map[string]string `json:"labels,omitempty"`
	// TTLSeconds, when positive, is how long after its creation the VM
	// is deleted by the daemon (at most MaxTTL).
	TTLSeconds int64 `json:"ttlSeconds,omitempty"`
	// Cold boots the VM even when a template of its shape exists.
	Cold bool `json:"cold,omitempty"`
}

// MaxTTL bounds a VM's time-to-live.
const MaxTTL = 365 * 24 * time.Hour

// PruneVMsRequest narrows prune to the VMs carrying every label given.
type PruneVMsRequest struct {
	Labels map[string]string `json:"labels,omitempty"`
}

// QueryLabel is the query parameter of GET /v1/vms that keeps only VMs
// carrying a label, given as key=value; repeated, all must match.
const QueryLabel = "label"

// UpdateVMRequest changes a stopped VM's size.
type UpdateVMRequest struct {
	VCPU      int `json:"vcpu,omitempty"`
	MemoryMiB int `json:"memoryMiB,omitempty"`
}

// StopResult says how a VM was stopped.
type StopResult struct {
	VM     VM     `json:"vm"`
	Method string `json:"method"` // agent (synced, powered off), engine (ACPI/QMP), killed, already-stopped
}

// PruneVMsResult lists the VMs prune deleted.
type PruneVMsResult struct {
	Deleted []string `json:"deleted"`
}

// VMStats is a VM's resource use: the engine process on the host, and the
// guest's view when its agent answers.
type VMStats struct {
	// SampledAt is when the daemon read the counters; rates are the
	// difference of two samples over the difference of their times.
	SampledAt    time.Time   `json:"sampledAt"`
	CPUSeconds   float64     `json:"cpuSeconds"`   // engine process CPU time
	HostRSSBytes uint64      `json:"hostRssBytes"` // engine process RSS
	Guest        *GuestStats `json:"guest,omitempty"`
}

// GuestStats is what the agent reports.
type GuestStats struct {
	MemTotalBytes     uint64  `json:"memTotalBytes"`
	MemAvailableBytes uint64  `json:"memAvailableBytes"`
	Load1             float64 `json:"load1"`
	Load5             float64 `json:"load5"`
	Load15            float64 `json:"load15"`
	UptimeSeconds     float64 `json:"uptimeSeconds"`
	RootTotalBytes    uint64  `json:"rootTotalBytes"`
	RootUsedBytes     uint64  `json:"rootUsedBytes"`
	// Cumulative since boot: bytes read from and written to the guest's
	// disks, and received and sent on its network interfaces (lo aside).
	DiskReadBytes  uint64 `json:"diskReadBytes"`
	DiskWriteBytes uint64 `json:"diskWriteBytes"`
	NetRxBytes     uint64 `json:"netRxBytes"`
	NetTxBytes     uint64 `json:"netTxBytes"`
}

// ExecRequest is the first message of an exec connection.
type ExecRequest struct {
	Argv []string `json:"argv"`
	Env  []string `json:"env,omitempty"`
	Dir  string   `json:"dir,omitempty"`
	User string   `json:"user,omitempty"`
	TTY  bool     `json:"tty,omitempty"`
	Rows uint16   `json:"rows,omitempty"`
	Cols uint16   `json:"cols,omitempty"`
}

// ExecUpgrade is the protocol name of an exec connection: the client sends
// POST /v1/vms/{ref}/exec with "Connection: Upgrade" and "Upgrade:
// banger-exec" and an ExecRequest body; after "101 Switching Protocols"
// both sides exchange frames (see package client for the frame format).
const ExecUpgrade = "banger-exec"

// Exec frame types. A frame is one type byte, a 4-byte big-endian length
// and that many bytes of payload.
const (
	FrameStdin    byte = 'i' // client → daemon
	FrameStdinEOF byte = 'e' // client → daemon, empty
	FrameResize   byte = 'r' // client → daemon, JSON {"rows":R,"cols":C}
	FrameSignal   byte = 's' // client → daemon, JSON {"signal":N}
	FrameStdout   byte = 'o' // daemon → client
	FrameStderr   byte = 'x' // daemon → client
	FrameExit     byte = 'q' // daemon → client, JSON ExitStatus; last frame
	FrameError    byte = '!' // daemon → client, JSON Error; last frame
)

// ExitStatus is how a guest process ended.
type ExitStatus struct {
	Code   int `json:"code"`
	Signal int `json:"signal,omitempty"`
}

// Port is a socket listening in a guest.
type Port struct {
	Proto   string `json:"proto"`   // tcp or tcp6
	Address string `json:"address"` // the address it listens on
	Port    int    `json:"port"`
	URL     string `json:"url,omitempty"` // name.vm:port, when the VM has an address
}

// Forward relays a host port to a VM's port.
type Forward struct {
	HostAddr  string `json:"hostAddr"`
	HostPort  int    `json:"hostPort"`
	GuestPort int    `json:"guestPort"`
	Active    bool   `json:"active"` // listening now (the VM runs)
}

// Forward routes: GET/POST /v1/vms/{ref}/forwards, DELETE .../forwards/{hostPort}.
const (
	ActionPorts    = "ports"
	ActionForwards = "forwards"
)

// EngineInfo says which engine new VMs get and why, and what each engine
// found on this host.
type EngineInfo struct {
	Default string         `json:"default"`
	Reason  string         `json:"reason"`
	Engines []EngineStatus `json:"engines"`
}

// EngineStatus is one engine on this host.
type EngineStatus struct {
	Name      string `json:"name"`
	Available bool   `json:"available"`
	Version   string `json:"version,omitempty"`
	Accel     string `json:"accel,omitempty"`
	Note      string `json:"note,omitempty"` // why unavailable, or a warning
}

// PathEngine reports engine selection.
const PathEngine = "/v1/engine"

// WorkspaceRequest records the workspace of a VM.
type WorkspaceRequest struct {
	Path string `json:"path"`
}

// ActionWorkspace is PUT /v1/vms/{ref}/workspace.
const ActionWorkspace = "workspace"

// Archive route: GET /v1/vms/{ref}/archive?path=P streams a tar of the guest
// path P; PUT with a tar body extracts it into the guest directory P.
const (
	ActionArchive  = "archive"
	TarContentType = "application/x-tar"
)
