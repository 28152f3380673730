package doctor

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"syscall"

	"github.com/bangervm/banger/api"
)

func checkArch(_ context.Context, f *facts) Result {
	switch f.GOARCH {
	case "amd64", "arm64":
		return pass("linux/%s", f.GOARCH)
	}
	return fail(fmt.Sprintf("linux/%s is not supported", f.GOARCH), "run banger on an amd64 (x86_64) or arm64 Linux host")
}

// checkKVM looks at /dev/kvm itself, then at what the engine's own probe
// made of it: a /dev/kvm that opens may still be unable to run an
// ordinary guest (a PVM-only KVM inside a cloud VM), and only the probe
// knows.
func checkKVM(_ context.Context, f *facts) Result {
	const slow = "VMs run under QEMU's software emulation (TCG, slow) and Firecracker is not used"
	path := f.dev("kvm")
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return warn("no /dev/kvm: "+slow, "sudo modprobe kvm_intel (or kvm_amd); enable VT-x/AMD-V in the firmware, or nested virtualization on a cloud VM")
	}
	if who, uid, join := f.kvmUser(); uid != 0 && rootOnly(path) {
		return warn(fmt.Sprintf("/dev/kvm is root-only (no group or other access), and the daemon runs as %s: %s", who, slow),
			kvmGroupFix+join+"; or keep TCG")
	}
	if err := f.OpenRW(path); err != nil {
		if errors.Is(err, fs.ErrPermission) {
			return warn("/dev/kvm is not read-write for you: "+slow, "sudo usermod -aG kvm \"$USER\", then log in again (and restart the daemon: banger daemon stop)")
		}
		return warn(fmt.Sprintf("open /dev/kvm: %v: %s", err, slow), "sudo modprobe kvm_intel (or kvm_amd), then banger daemon stop so the daemon probes again")
	}
	if f.engineErr != nil {
		return pass("/dev/kvm opens read-write (what the engine makes of it is unknown: the daemon did not answer)")
	}
	q, ok := engineStatus(f.engine, "qemu")
	switch {
	case !ok || q.Accel == "":
		return pass("/dev/kvm opens read-write")
	case q.Accel == "kvm":
		return pass("/dev/kvm opens read-write and QEMU uses KVM")
	}
	return warn(fmt.Sprintf("/dev/kvm opens, but QEMU uses %s: %s", q.Accel, q.Note),
		"none on this host: KVM needs the CPU's vmx/svm; on a cloud VM pick an instance type with nested virtualization")
}

// kvmGroupFix gives /dev/kvm to a kvm group, as udev does on most
// distributions: by a rule that lasts, and at once (a host without udev
// needs the chgrp and chmod again after each boot).
const kvmGroupFix = `sudo groupadd -f -r kvm; echo 'KERNEL=="kvm", GROUP="kvm", MODE="0660"' | sudo tee /etc/udev/rules.d/65-kvm.rules; sudo chgrp kvm /dev/kvm; sudo chmod 0660 /dev/kvm`

// kvmUser names the user whose daemon opens /dev/kvm, its uid, and how
// that daemon joins the kvm group: the install's owner (its unit gets the
// group when installed after the group exists), else this user.
func (f *facts) kvmUser() (who string, uid int, join string) {
	if f.Install != nil && f.Install.Install != nil {
		o := f.Install.Install.Owner
		return o.Name, o.UID, "; then sudo banger system install (the daemon's unit then gets the kvm group)"
	}
	return fmt.Sprintf("you (uid %d)", f.UID), f.UID, "; then sudo usermod -aG kvm \"$USER\", log in again and banger daemon restart"
}

// rootOnly reports whether only root may open path: root's, with no
// group or other access.
func rootOnly(path string) bool {
	fi, err := os.Stat(path)
	if err != nil {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && st.Uid == 0 && fi.Mode().Perm()&0o066 == 0
}

// checkEngines reports which engine new VMs get and why, and each
// engine's version, as the daemon found them at start.
func checkEngines(_ context.Context, f *facts) Result {
	if f.engineErr != nil {
		return needsDaemon(f.engineErr)
	}
	var parts []string
	for _, e := range f.engine.Engines {
		switch {
		case !e.Available && strings.Contains(f.engine.Reason, e.Note):
			parts = append(parts, e.Name+" unavailable")
		case !e.Available:
			parts = append(parts, fmt.Sprintf("%s unavailable (%s)", e.Name, e.Note))
		case e.Accel != "":
			parts = append(parts, fmt.Sprintf("%s %s (%s)", e.Name, orDash(e.Version), e.Accel))
		default:
			parts = append(parts, fmt.Sprintf("%s %s", e.Name, orDash(e.Version)))
		}
	}
	found := strings.Join(parts, "; ")
	if f.engine.Default == "" {
		return fail("no engine for new VMs: config engine = "+f.Config.Engine+" cannot run here; "+found,
			"install that engine, or remove engine from "+f.Layout.ConfigFile()+", then banger daemon stop")
	}
	def, _ := engineStatus(f.engine, f.engine.Default)
	if !def.Available {
		fix := "set the engine's binary in " + f.Layout.ConfigFile() + ", then banger daemon stop"
		if def.Name == "qemu" {
			fix = "sudo apt-get install qemu-system-x86 (or set qemu_bin in " + f.Layout.ConfigFile() + "), then banger daemon stop"
		}
		return fail(fmt.Sprintf("new VMs get %s, which cannot run: %s", def.Name, def.Note), fix)
	}
	detail := fmt.Sprintf("new VMs get %s (%s); %s", def.Name, f.engine.Reason, found)
	// Firecracker absent is normal; Firecracker installed but unusable
	// (too old, no jailer) is something the user meant to work.
	if fc, ok := engineStatus(f.engine, "firecracker"); ok && !fc.Available && f.firecrackerInstalled() {
		return warn(detail, "install Firecracker ≥ 1.8 with its jailer from https://github.com/firecracker-microvm/firecracker/releases (or set jailer = false), then banger daemon stop")
	}
	return pass("%s", detail)
}

func (f *facts) firecrackerInstalled() bool {
	if f.Config.FirecrackerBin != "" {
		return true
	}
	_, err := f.LookPath("firecracker")
	return err == nil
}

func engineStatus(info api.EngineInfo, name string) (api.EngineStatus, bool) {
	for _, e := range info.Engines {
		if e.Name == name {
			return e, true
		}
	}
	return api.EngineStatus{Name: name}, false
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// checkVhostVsock reports /dev/vhost-vsock as information only: neither
// engine needs it (QEMU falls back to a virtio-serial port for the agent,
// Firecracker has its own vsock over a unix socket).
func checkVhostVsock(_ context.Context, f *facts) Result {
	if _, err := os.Stat(f.dev("vhost-vsock")); err == nil {
		return pass("/dev/vhost-vsock present: QEMU reaches the agent over vsock")
	}
	return pass("/dev/vhost-vsock absent, and not needed: QEMU reaches the agent over a virtio-serial port, Firecracker over its own vsock (a unix socket)")
}

func checkTun(_ context.Context, f *facts) Result {
	if _, err := os.Stat(f.dev("net/tun")); err == nil {
		return pass("/dev/net/tun present")
	}
	if !f.networkWanted() {
		return skip("/dev/net/tun absent; only host networking needs it, and it is off")
	}
	return fail("/dev/net/tun absent: VMs cannot get a tap (a NIC)", "sudo modprobe tun")
}
