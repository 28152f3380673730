package launcher

import (
	"strings"
	"testing"

	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/engine"
	"github.com/bangervm/banger/internal/engine/qemu"
)

// accel kvm never becomes TCG: a Pod without a usable KVM is refused
// with the reason and the way out; tcg is forced even where KVM works.
func TestAccel(t *testing.T) {
	hw := qemu.HostInfo{CPUFlags: []string{"fpu", "vmx"}}
	noDev := qemu.HostInfo{KVMErr: "open /dev/kvm: no such file or directory", CPUFlags: []string{"vmx"}}
	pvm := qemu.HostInfo{CPUFlags: []string{"fpu"}, KVMPVM: true}
	for _, tc := range []struct {
		spec string
		host qemu.HostInfo
		want engine.Accel
		err  string // in the error; "" for none
	}{
		{"kvm", hw, engine.AccelKVM, ""},
		{"kvm", noDev, "", "open /dev/kvm: no such file or directory"},
		{"kvm", pvm, "", "PVM-only"},
		{"tcg", hw, engine.AccelTCG, ""},
		{"tcg", noDev, engine.AccelTCG, ""},
		{"", noDev, "", ""},
	} {
		got, err := Accel(tc.spec, tc.host)
		switch {
		case tc.err == "" && (err != nil || got != tc.want):
			t.Errorf("Accel(%q, %+v) = %q, %v; want %q", tc.spec, tc.host, got, err, tc.want)
		case tc.err != "" && (err == nil || got != ""):
			t.Errorf("Accel(%q, %+v) = %q, %v; want a refusal", tc.spec, tc.host, got, err)
		case tc.err != "":
			msg := err.Error()
			if !strings.Contains(msg, tc.err) || !strings.Contains(msg, "banger.dev/kvm") || !strings.Contains(msg, "spec.accel: tcg") ||
				strings.Contains(msg, "using TCG") || !errdefs.IsFailedPrecondition(err) {
				t.Errorf("Accel(%q, %+v): %v; want the reason, where KVM comes from and the way out, as a failed precondition", tc.spec, tc.host, err)
			}
		}
	}
	if _, err := Accel("hvf", hw); !errdefs.IsInvalidArgument(err) {
		t.Errorf("Accel(hvf): %v, want invalid argument", err)
	}
}
