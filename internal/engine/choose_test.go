package engine

import (
	"errors"
	"strings"
	"testing"

	"github.com/bangervm/banger/errdefs"
)

func TestChoose(t *testing.T) {
	noFC := errors.New("firecracker not found in PATH (config firecracker_bin)")
	noKVM := errors.New("/dev/kvm is PVM-only")
	for _, tt := range []struct {
		name, flag, config string
		h                  Host
		want, reason       string
		class              error
	}{
		{name: "auto, both usable", want: Firecracker, reason: "KVM usable"},
		{name: "auto, no firecracker", h: Host{FirecrackerErr: noFC}, want: QEMU, reason: "not found"},
		{name: "auto, firecracker but no KVM", h: Host{KVMErr: noKVM}, want: QEMU, reason: "KVM is unusable (/dev/kvm is PVM-only)"},
		{name: "config qemu", config: "qemu", want: QEMU, reason: "config engine"},
		{name: "flag beats config", flag: "qemu", config: "firecracker", h: Host{FirecrackerErr: noFC}, want: QEMU, reason: "--engine"},
		{name: "flag firecracker missing", flag: "firecracker", h: Host{FirecrackerErr: noFC}, class: errdefs.ErrFailedPrecondition},
		{name: "config firecracker without KVM", config: "firecracker", h: Host{KVMErr: noKVM}, class: errdefs.ErrFailedPrecondition},
		{name: "unknown", flag: "vbox", class: errdefs.ErrInvalidArgument},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, reason, err := Choose(tt.flag, tt.config, tt.h)
			if tt.class != nil {
				if errdefs.Class(err) != tt.class {
					t.Fatalf("err = %v, want class %v", err, tt.class)
				}
				return
			}
			if err != nil || got != tt.want || !strings.Contains(reason, tt.reason) {
				t.Errorf("Choose = %q, %q, %v; want %q with %q", got, reason, err, tt.want, tt.reason)
			}
		})
	}
}
