package qemu

import (
	"strings"
	"testing"

	"github.com/bangervm/banger/internal/engine"
)

func TestChooseAccel(t *testing.T) {
	flags := func(f string) []string { return strings.Fields("fpu tsc constant_tsc " + f) }
	tests := []struct {
		name   string
		host   HostInfo
		want   engine.Accel
		reason string
	}{
		{"intel vmx", HostInfo{CPUFlags: flags("vmx")}, engine.AccelKVM, "KVM available"},
		{"amd svm", HostInfo{CPUFlags: flags("svm")}, engine.AccelKVM, "KVM available"},
		{"no /dev/kvm", HostInfo{KVMErr: "open /dev/kvm: no such file or directory", CPUFlags: flags("vmx")}, engine.AccelTCG, "no such file"},
		{"no permission", HostInfo{KVMErr: "open /dev/kvm: permission denied", CPUFlags: flags("svm")}, engine.AccelTCG, "permission denied"},
		{"pvm only", HostInfo{CPUFlags: flags("hypervisor"), KVMPVM: true}, engine.AccelTCG, "PVM-only"},
		{"pvm module but real vmx", HostInfo{CPUFlags: flags("vmx"), KVMPVM: true}, engine.AccelKVM, "KVM available"},
		{"no hardware virtualization", HostInfo{CPUFlags: flags("hypervisor")}, engine.AccelTCG, "no vmx/svm"},
		{"vmx as substring only", HostInfo{CPUFlags: flags("vmxx svmx")}, engine.AccelTCG, "no vmx/svm"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, reason := ChooseAccel(tt.host)
			if got != tt.want || !strings.Contains(reason, tt.reason) || strings.Contains(reason, "\n") {
				t.Errorf("ChooseAccel = %s, %q; want %s, containing %q", got, reason, tt.want, tt.reason)
			}
			if got == engine.AccelTCG && !strings.Contains(reason, "TCG") {
				t.Errorf("TCG reason %q does not say TCG", reason)
			}
		})
	}
}

func TestFeaturesInjectedHost(t *testing.T) {
	e := New(Config{Host: &HostInfo{CPUFlags: []string{"svm"}, VhostVsock: true}})
	f, _ := e.Features(t.Context())
	if f.Accel != engine.AccelKVM || !f.HasVsock || f.AgentTransport != engine.AgentVsock {
		t.Errorf("features %+v", f)
	}
	e = New(Config{Host: &HostInfo{KVMPVM: true}})
	f, _ = e.Features(t.Context())
	if f.Accel != engine.AccelTCG || f.HasVsock || f.AgentTransport != engine.AgentSerial {
		t.Errorf("features %+v", f)
	}
	e = New(Config{Host: &HostInfo{KVMPVM: true}, Accel: engine.AccelKVM})
	if f, _ = e.Features(t.Context()); f.Accel != engine.AccelKVM {
		t.Errorf("forced kvm: %+v", f)
	}
}
