package qemu

import (
	"os"
	"slices"
	"strings"

	"github.com/bangervm/banger/internal/engine"
)

// HostInfo is what the accelerator choice depends on, gathered by
// ProbeHost and injectable for tests.
type HostInfo struct {
	// KVMErr is the error from opening /dev/kvm read-write, or "" if it
	// opened.
	KVMErr string
	// CPUFlags are the "flags" of the first processor in /proc/cpuinfo.
	CPUFlags []string
	// KVMPVM: /sys/module/kvm_pvm exists, i.e. KVM can run only
	// paravirtualized (PVM) guests.
	KVMPVM bool
	// VhostVsock: /dev/vhost-vsock exists.
	VhostVsock bool
}

// ProbeHost reads the host facts ChooseAccel needs.
func ProbeHost() HostInfo {
	var h HostInfo
	if f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0); err != nil {
		h.KVMErr = err.Error()
	} else {
		f.Close()
	}
	h.CPUFlags = cpuFlags()
	if _, err := os.Stat("/sys/module/kvm_pvm"); err == nil {
		h.KVMPVM = true
	}
	if _, err := os.Stat("/dev/vhost-vsock"); err == nil {
		h.VhostVsock = true
	}
	return h
}

// cpuFlags returns the flags of the first processor in /proc/cpuinfo.
func cpuFlags() []string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return nil
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "flags" {
			return strings.Fields(v)
		}
	}
	return nil
}

// ChooseAccel decides between KVM and TCG. KVM is used only when /dev/kvm
// opens and the host CPU exposes hardware virtualization (vmx or svm): a
// KVM without them (e.g. kvm_pvm inside a cloud VM) runs only
// paravirtualized guests and either aborts or crawls with a normal kernel.
// The reason is one line, fit to show as a warning when TCG is chosen.
func ChooseAccel(h HostInfo) (engine.Accel, string) {
	hw := slices.Contains(h.CPUFlags, "vmx") || slices.Contains(h.CPUFlags, "svm")
	const tcg = "; using TCG software emulation (slow)"
	switch {
	case h.KVMErr != "":
		return engine.AccelTCG, "KVM unavailable: " + h.KVMErr + tcg
	case !hw && h.KVMPVM:
		return engine.AccelTCG, "KVM unusable: /dev/kvm is PVM-only (kvm_pvm loaded, no vmx/svm in the host CPU flags)" + tcg
	case !hw:
		return engine.AccelTCG, "KVM unusable: the host CPU flags have no vmx/svm (nested virtualization off?)" + tcg
	}
	return engine.AccelKVM, "KVM available"
}
