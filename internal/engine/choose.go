package engine

import (
	"fmt"

	"github.com/bangervm/banger/errdefs"
)

// Engine names.
const (
	QEMU        = "qemu"
	Firecracker = "firecracker"
)

// Host is what engine selection needs to know about the host.
type Host struct {
	// FirecrackerErr is nil when a usable Firecracker was found (binary
	// present, supported version), else why not.
	FirecrackerErr error
	// KVMErr is nil when /dev/kvm can run ordinary guests, else why not.
	KVMErr error
}

// Choose picks the engine for a VM: the one asked for (flag, then config),
// else Firecracker when it is installed and KVM works, else QEMU. The
// reason is for people: `banger engine` and vm show print it.
func Choose(flag, config string, h Host) (name, reason string, err error) {
	want, from := flag, "--engine"
	if want == "" {
		want, from = config, "config engine"
	}
	switch want {
	case QEMU:
		return QEMU, from + " = qemu", nil
	case Firecracker:
		if h.FirecrackerErr != nil {
			return "", "", fmt.Errorf("%s = firecracker, but %v: %w", from, h.FirecrackerErr, errdefs.ErrFailedPrecondition)
		}
		if h.KVMErr != nil {
			return "", "", fmt.Errorf("%s = firecracker, but Firecracker needs KVM: %v: %w", from, h.KVMErr, errdefs.ErrFailedPrecondition)
		}
		return Firecracker, from + " = firecracker", nil
	case "":
	default:
		return "", "", fmt.Errorf("engine %q (%s): want qemu or firecracker: %w", want, from, errdefs.ErrInvalidArgument)
	}
	switch {
	case h.FirecrackerErr != nil:
		return QEMU, fmt.Sprintf("Firecracker unavailable (%v)", h.FirecrackerErr), nil
	case h.KVMErr != nil:
		return QEMU, fmt.Sprintf("Firecracker found but KVM is unusable (%v)", h.KVMErr), nil
	}
	return Firecracker, "Firecracker found and KVM usable", nil
}
