package agentproto

import (
	"io/fs"
	"time"
)

// ProtocolVersion is the newest version this package speaks. Bump it on
// any change to the session (not to the handshake, whose layout is fixed so
// that versions can always be compared). Version 2 added Identify and the
// agent's ready point.
const ProtocolVersion uint16 = 2

// MinProtocolVersion is the oldest agent version the host still talks to,
// for every operation that version had: a VM booted before an upgrade keeps
// working until it is restarted.
const MinProtocolVersion uint16 = 1

// Info is the answer to Health.
type Info struct {
	AgentVersion    string        `json:"agentVersion"`
	ProtocolVersion uint16        `json:"protocolVersion"`
	Hostname        string        `json:"hostname"`
	Uptime          time.Duration `json:"uptime"` // of the guest kernel
	PID             int           `json:"pid"`    // 1 when the agent is the guest's init
	// AwaitingIdentity is true while the agent waits at its ready point
	// for Identify (protocol 2).
	AwaitingIdentity bool `json:"awaitingIdentity,omitempty"`
}

// Stats is a snapshot of guest resource use.
type Stats struct {
	MemTotal     uint64        `json:"memTotal"` // bytes, from /proc/meminfo
	MemAvailable uint64        `json:"memAvailable"`
	Load1        float64       `json:"load1"`
	Load5        float64       `json:"load5"`
	Load15       float64       `json:"load15"`
	Uptime       time.Duration `json:"uptime"`
	Root         DiskUsage     `json:"root"`           // the guest's /
	Disk         *DiskUsage    `json:"disk,omitempty"` // the per-VM disk, when mounted
	// Block and Net are cumulative I/O counters since boot: the guest's
	// virtio disks (from /proc/diskstats) and its network interfaces but
	// lo (from /proc/net/dev). Older agents send neither.
	Block []IOCounter `json:"block,omitempty"`
	Net   []IOCounter `json:"net,omitempty"`
}

// IOCounter is one device's bytes in and out since boot: read and written
// for a disk, received and sent for a network interface.
type IOCounter struct {
	Name string `json:"name"`
	In   uint64 `json:"in"`
	Out  uint64 `json:"out"`
}

// DiskUsage is the size and use of one file system.
type DiskUsage struct {
	Path  string `json:"path"`
	Total uint64 `json:"total"` // bytes
	Used  uint64 `json:"used"`
	Free  uint64 `json:"free"` // available to unprivileged users
}

// ExecRequest describes a process to run in the guest.
type ExecRequest struct {
	Argv []string `json:"argv"`
	// Env entries ("K=V") are added to the agent's default environment
	// (the image's, with a PATH fallback) and override it.
	Env []string `json:"env,omitempty"`
	Dir string   `json:"dir,omitempty"` // working directory; default "/" (or the user's home)
	// User is a name or uid, optionally ":group" or ":gid"; names are
	// resolved from the guest's /etc/passwd and /etc/group. Empty runs as
	// the agent's user (root).
	User string `json:"user,omitempty"`
	// TTY runs the process on a new pseudo-terminal with Rows×Cols; stdout
	// and stderr are then merged into stdout.
	TTY  bool   `json:"tty,omitempty"`
	Rows uint16 `json:"rows,omitempty"`
	Cols uint16 `json:"cols,omitempty"`
}

// ExitStatus is how a process ended: Code when it exited, Signal (non-zero)
// when a signal killed it.
type ExitStatus struct {
	Code   int `json:"code"`
	Signal int `json:"signal,omitempty"`
}

// FileInfo describes a guest file.
type FileInfo struct {
	Name    string      `json:"name"`
	Size    int64       `json:"size"`
	Mode    fs.FileMode `json:"mode"`
	ModTime time.Time   `json:"modTime"`
}

// BootConfig is what the host tells the agent about the guest it boots. The
// host writes it as JSON to BootConfigPath in the agent's initramfs.
type BootConfig struct {
	Hostname string   `json:"hostname,omitempty"`
	Env      []string `json:"env,omitempty"` // the image's environment, "K=V"
	Dir      string   `json:"dir,omitempty"` // the image's working directory
	User     string   `json:"user,omitempty"`
	// Cmd is the image's entrypoint and command, for the host's use; the
	// agent does not start it.
	Cmd []string `json:"cmd,omitempty"`
	// Root describes the root file system. Nil keeps the initramfs as root
	// (a kernel-only guest).
	Root *RootConfig `json:"root,omitempty"`
	// Network is reserved for the guest network setup.
	Network *NetworkConfig `json:"network,omitempty"`
	// Init is the image's own init (e.g. /sbin/init for systemd). Empty
	// keeps the agent as PID 1; otherwise PID 1 execs Init after
	// switch_root and the agent serves from a child process.
	Init string `json:"init,omitempty"`
	// AgentPort names the virtio-serial port; empty means DefaultPortName.
	AgentPort string `json:"agentPort,omitempty"`
	// SSH, when set, has the agent serve SSH, or ready the image's own
	// sshd when the image's init starts one (see SSHConfig).
	SSH *SSHConfig `json:"ssh,omitempty"`
	// AwaitIdentity stops the boot at the agent's ready point (modules
	// loaded, devices probed, agent channel up; nothing VM-specific done)
	// until the host sends Identify. Hostname, Network and SSH then come
	// from the Identity, not from this file, so the same initramfs, and
	// a template of the guest at that point, serves any VM of its shape.
	AwaitIdentity bool `json:"awaitIdentity,omitempty"`
}

// Identity is what makes a guest stopped at its ready point this VM: sent
// once, right after a cold boot's agent answers or after a template's clone
// resumes. Every clone of one template starts with the same memory, so
// everything that must be unique is in here, applied before it is used.
type Identity struct {
	Hostname string `json:"hostname,omitempty"`
	// MAC is set on the NIC before the link is brought up (a clone's NIC
	// still carries the template's address).
	MAC     string         `json:"mac,omitempty"`
	Network *NetworkConfig `json:"network,omitempty"`
	SSH     *SSHConfig     `json:"ssh,omitempty"`
	// Time is the host's wall clock when the message was sent.
	Time time.Time `json:"time"`
	// Entropy is host randomness mixed into the guest kernel's pool (and
	// the pool reseeded) before anything in the guest reads randomness.
	Entropy []byte `json:"entropy"`
}

// IdentifyResult is the agent's answer to Identify.
type IdentifyResult struct {
	// Reconnect means this session ends: the agent hands PID 1 to the
	// image's init and serves from a new process, which answers the next
	// handshake.
	Reconnect bool `json:"reconnect,omitempty"`
}

// IdentityEntropy is how many bytes of host entropy an Identity carries;
// the agent refuses fewer.
const IdentityEntropy = 64

// RootConfig is the copy-on-write root: a read-only image disk under an
// overlay whose upper layer lives on the VM's own disk.
type RootConfig struct {
	Image  string `json:"image"`            // block device of the image, mounted read-only, e.g. /dev/vda
	Disk   string `json:"disk"`             // block device of the VM's disk, ext4, e.g. /dev/vdb
	FSType string `json:"fsType,omitempty"` // of both; default ext4
}

// NetworkConfig is a placeholder for the guest's static network setup.
type NetworkConfig struct {
	Interface string   `json:"interface,omitempty"`
	Address   string   `json:"address,omitempty"` // CIDR
	Gateway   string   `json:"gateway,omitempty"`
	DNS       []string `json:"dns,omitempty"`
}

// Fixed names shared by the host and the agent.
const (
	// BootConfigPath is where the agent reads its BootConfig (in the
	// initramfs, relative to /).
	BootConfigPath = "/etc/banger/boot.json"
	// DefaultPortName is the virtio-serial port name of the agent channel.
	DefaultPortName = "banger.agent"
	// VsockPort is the vsock port the agent listens on.
	VsockPort = 1024
)
