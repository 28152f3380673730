package qemu

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/bangervm/banger/internal/engine"
)

// File names inside Spec.Dir. Socket paths are limited to 107 bytes by
// AF_UNIX; the longest name here is what the length check adds to the
// directory.
const (
	StateFile   = "engine.json" // written before the process exists
	PIDFile     = "qemu.pid"    // written once it runs
	QMPSocket   = "qmp.sock"
	AgentSocket = "agent.sock"
	ConsoleLog  = "console.log" // guest serial console (ttyS0): QEMU's stdout, capped
	StderrLog   = "qemu.log"    // QEMU's own stderr, capped
)

// maxSocketPath is the longest path AF_UNIX accepts (108 bytes with NUL).
const maxSocketPath = 107

// CmdlineConfig is everything Cmdline needs; it is plain data so that the
// argv can be table-tested without a host.
type CmdlineConfig struct {
	// Binary is argv[0].
	Binary string
	Spec   engine.Spec
	Accel  engine.Accel
	// TSCKHz is the host TSC rate, given to a TCG guest as tsc_early_khz so
	// its clock calibration cannot hang when the host is busy. 0 under TCG
	// means unknown: the guest then runs with -icount shift=auto (slower,
	// single-threaded TCG).
	TSCKHz int64
	// TBSizeMiB is TCG's translation cache size; 0 leaves QEMU's default
	// (1 GiB, which shows up as RSS).
	TBSizeMiB int
	// TapFD is the fd number of Spec.Net.TapFD in the child, when set.
	TapFD int
	// VsockCID, when non-zero, adds a vhost-vsock device with this guest
	// CID instead of the virtio-serial agent port.
	VsockCID uint32
	// MemPath, when set, puts guest RAM in this file (memory-backend-file):
	// mapped shared for a template (MemShared, so the file holds the RAM
	// a clone maps), private for a clone (copy-on-write: the template
	// never changes).
	MemPath   string
	MemShared bool
	// Incoming starts the machine waiting for migrate-incoming (a clone)
	// instead of running it.
	Incoming bool
}

// Cmdline returns QEMU's argv (argv[0] is cfg.Binary) for a microvm
// machine: no firmware option ROMs, no default devices, the serial console
// on stdout (which the caller caps into console.log), virtio-mmio disks, NIC and agent channel, QMP on
// a unix socket. It does not daemonize: the caller starts the process in its
// own session and so knows its pid.
func Cmdline(cfg CmdlineConfig) []string {
	s := cfg.Spec
	dir := s.Dir
	argv := []string{cfg.Binary}
	add := func(a ...string) { argv = append(argv, a...) }

	accel := string(cfg.Accel)
	icount := false
	switch cfg.Accel {
	case engine.AccelKVM:
	default:
		accel = string(engine.AccelTCG)
		icount = cfg.TSCKHz <= 0
		if s.VCPU > 1 && !icount {
			accel += ",thread=multi" // -icount needs single-threaded TCG
		}
		if cfg.TBSizeMiB > 0 {
			accel += ",tb-size=" + strconv.Itoa(cfg.TBSizeMiB)
		}
	}
	add("-accel", accel)
	if cfg.Accel == engine.AccelKVM {
		add("-cpu", "host")
	}
	if icount {
		add("-icount", "shift=auto")
	}
	machine := "microvm,x-option-roms=off"
	if cfg.MemPath != "" {
		machine += ",memory-backend=mem0"
	}
	add("-M", machine,
		"-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
		"-smp", strconv.Itoa(max(s.VCPU, 1)),
		"-m", strconv.Itoa(s.MemoryMiB)+"M",
		"-kernel", s.Kernel)
	if cfg.MemPath != "" {
		share := "off"
		if cfg.MemShared {
			share = "on"
		}
		add("-object", "memory-backend-file,id=mem0,size="+strconv.Itoa(s.MemoryMiB)+"M,mem-path="+opt(cfg.MemPath)+",share="+share)
	}
	if s.Initrd != "" {
		add("-initrd", s.Initrd)
	}
	add("-append", KernelCmdline(cfg))

	add("-chardev", "stdio,id=console,signal=off", "-serial", "chardev:console")

	for i, d := range s.Disks {
		id := "disk" + strconv.Itoa(i)
		drive := "id=" + id + ",file=" + opt(d.Path) + ",format=raw,if=none"
		if d.ReadOnly {
			drive += ",readonly=on"
		} else {
			// A write that finds the host's file system full pauses the
			// guest (status io-error) instead of failing inside it: once
			// space is freed the write is retried and nothing is lost.
			// Other errors reach the guest as I/O errors.
			drive += ",werror=enospc,rerror=report"
		}
		add("-drive", drive, "-device", "virtio-blk-device,drive="+id)
	}

	if n := s.Net; n != nil && n.Detached {
		dev := "virtio-net-device"
		if n.MAC != "" {
			dev += ",mac=" + n.MAC
		}
		add("-device", dev)
	} else if n != nil {
		nd := "tap,id=net0"
		if n.TapFD != nil {
			nd += ",fd=" + strconv.Itoa(cfg.TapFD)
		} else {
			nd += ",ifname=" + opt(n.TapName) + ",script=no,downscript=no"
		}
		dev := "virtio-net-device,netdev=net0"
		if n.MAC != "" {
			dev += ",mac=" + n.MAC
		}
		add("-netdev", nd, "-device", dev)
	}

	if cfg.VsockCID != 0 {
		add("-device", "vhost-vsock-device,guest-cid="+strconv.FormatUint(uint64(cfg.VsockCID), 10))
	} else {
		add("-device", "virtio-serial-device",
			"-chardev", "socket,id=agent,path="+opt(filepath.Join(dir, AgentSocket))+",server=on,wait=off",
			"-device", "virtserialport,chardev=agent,name="+engine.AgentPortName)
	}

	add("-qmp", "unix:"+opt(filepath.Join(dir, QMPSocket))+",server=on,wait=off")
	if cfg.Incoming {
		add("-incoming", "defer")
	}
	return argv
}

// KernelCmdline is the guest kernel command line: the engine's arguments,
// then Spec.Cmdline, so the caller's arguments win where the kernel takes
// the last one.
func KernelCmdline(cfg CmdlineConfig) string {
	args := []string{"console=ttyS0", "quiet", "panic=-1"}
	if cfg.Accel != engine.AccelKVM && cfg.TSCKHz > 0 {
		args = append(args, "tsc_early_khz="+strconv.FormatInt(cfg.TSCKHz, 10))
	}
	if extra := strings.TrimSpace(cfg.Spec.Cmdline); extra != "" {
		args = append(args, extra)
	}
	return strings.Join(args, " ")
}

// opt escapes a value for QEMU's key=value,... option syntax, where a
// literal comma is written twice.
func opt(v string) string { return strings.ReplaceAll(v, ",", ",,") }

// socketPaths returns the unix sockets Start creates in dir.
func socketPaths(dir string, vsock bool) []string {
	if vsock {
		return []string{filepath.Join(dir, QMPSocket)}
	}
	return []string{filepath.Join(dir, QMPSocket), filepath.Join(dir, AgentSocket)}
}

// checkSocketPaths refuses a directory whose socket paths AF_UNIX cannot
// hold.
func checkSocketPaths(dir string) error {
	for _, p := range socketPaths(dir, false) {
		if len(p) > maxSocketPath {
			return fmt.Errorf("socket path %s is %d bytes, over the %d unix sockets allow: use a shorter VM directory", p, len(p), maxSocketPath)
		}
	}
	return nil
}
