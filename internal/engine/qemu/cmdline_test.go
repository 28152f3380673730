package qemu

import (
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/bangervm/banger/internal/engine"
)

func TestCmdline(t *testing.T) {
	base := engine.Spec{ID: "vm1", Dir: "/run/b/vm1", VCPU: 1, MemoryMiB: 256, Kernel: "/k/vmlinux", Initrd: "/k/initrd"}
	common := func(accel string, extra ...string) []string {
		a := []string{"qemu", "-accel", accel}
		a = append(a, extra...)
		return append(a, "-M", "microvm,x-option-roms=off", "-nodefaults", "-no-user-config", "-nographic", "-no-reboot")
	}
	serialAgent := []string{"-device", "virtio-serial-device",
		"-chardev", "socket,id=agent,path=/run/b/vm1/agent.sock,server=on,wait=off",
		"-device", "virtserialport,chardev=agent,name=banger.agent"}
	console := []string{"-chardev", "stdio,id=console,signal=off", "-serial", "chardev:console"}
	qmp := []string{"-qmp", "unix:/run/b/vm1/qmp.sock,server=on,wait=off"}
	cat := func(parts ...[]string) []string { return slices.Concat(parts...) }

	tests := []struct {
		name string
		cfg  CmdlineConfig
		want []string
	}{
		{
			name: "tcg one vcpu with tsc",
			cfg:  CmdlineConfig{Spec: base, Accel: engine.AccelTCG, TSCKHz: 2596150, TBSizeMiB: 64},
			want: cat(common("tcg,tb-size=64"),
				[]string{"-smp", "1", "-m", "256M", "-kernel", "/k/vmlinux", "-initrd", "/k/initrd",
					"-append", "console=ttyS0 quiet panic=-1 tsc_early_khz=2596150"},
				console, serialAgent, qmp),
		},
		{
			name: "tcg multi-threaded for two vcpus, no initrd, extra cmdline",
			cfg: CmdlineConfig{Spec: func() engine.Spec {
				s := base
				s.VCPU, s.Initrd, s.Cmdline = 2, "", "  banger.ip=10.0.0.2 "
				return s
			}(), Accel: engine.AccelTCG, TSCKHz: 1000},
			want: cat(common("tcg,thread=multi"),
				[]string{"-smp", "2", "-m", "256M", "-kernel", "/k/vmlinux",
					"-append", "console=ttyS0 quiet panic=-1 tsc_early_khz=1000 banger.ip=10.0.0.2"},
				console, serialAgent, qmp),
		},
		{
			name: "tcg without tsc rate falls back to icount, single-threaded",
			cfg: CmdlineConfig{Spec: func() engine.Spec {
				s := base
				s.VCPU = 2
				return s
			}(), Accel: engine.AccelTCG},
			want: cat(common("tcg", "-icount", "shift=auto"),
				[]string{"-smp", "2", "-m", "256M", "-kernel", "/k/vmlinux", "-initrd", "/k/initrd",
					"-append", "console=ttyS0 quiet panic=-1"},
				console, serialAgent, qmp),
		},
		{
			name: "kvm ignores tcg settings",
			cfg:  CmdlineConfig{Spec: base, Accel: engine.AccelKVM, TSCKHz: 2596150, TBSizeMiB: 64},
			want: cat(common("kvm", "-cpu", "host"),
				[]string{"-smp", "1", "-m", "256M", "-kernel", "/k/vmlinux", "-initrd", "/k/initrd",
					"-append", "console=ttyS0 quiet panic=-1"},
				console, serialAgent, qmp),
		},
		{
			name: "disks in order, tap by name, vsock",
			cfg: CmdlineConfig{Spec: func() engine.Spec {
				s := base
				s.Disks = []engine.Disk{{Path: "/img/base.ext4", ReadOnly: true}, {Path: "/vm/disk,1.ext4"}}
				s.Net = &engine.NetSpec{TapName: "bgtap0", MAC: "52:54:00:12:34:56"}
				return s
			}(), Accel: engine.AccelKVM, VsockCID: 42},
			want: cat(common("kvm", "-cpu", "host"),
				[]string{"-smp", "1", "-m", "256M", "-kernel", "/k/vmlinux", "-initrd", "/k/initrd",
					"-append", "console=ttyS0 quiet panic=-1"},
				console,
				[]string{"-drive", "id=disk0,file=/img/base.ext4,format=raw,if=none,readonly=on", "-device", "virtio-blk-device,drive=disk0",
					"-drive", "id=disk1,file=/vm/disk,,1.ext4,format=raw,if=none,werror=enospc,rerror=report", "-device", "virtio-blk-device,drive=disk1",
					"-netdev", "tap,id=net0,ifname=bgtap0,script=no,downscript=no", "-device", "virtio-net-device,netdev=net0,mac=52:54:00:12:34:56",
					"-device", "vhost-vsock-device,guest-cid=42"},
				qmp),
		},
		{
			name: "tap passed as fd",
			cfg: CmdlineConfig{Spec: func() engine.Spec {
				s := base
				s.Net = &engine.NetSpec{TapFD: os.Stdin, TapName: "ignored"}
				return s
			}(), Accel: engine.AccelTCG, TSCKHz: 5, TapFD: 3},
			want: cat(common("tcg"),
				[]string{"-smp", "1", "-m", "256M", "-kernel", "/k/vmlinux", "-initrd", "/k/initrd",
					"-append", "console=ttyS0 quiet panic=-1 tsc_early_khz=5"},
				console,
				[]string{"-netdev", "tap,id=net0,fd=3", "-device", "virtio-net-device,netdev=net0"},
				serialAgent, qmp),
		},
		{
			name: "template: guest RAM in a shared file",
			cfg:  CmdlineConfig{Spec: base, Accel: engine.AccelTCG, TSCKHz: 5, MemPath: "/t/a,b/memory", MemShared: true},
			want: cat([]string{"qemu", "-accel", "tcg", "-M", "microvm,x-option-roms=off,memory-backend=mem0",
				"-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
				"-smp", "1", "-m", "256M", "-kernel", "/k/vmlinux",
				"-object", "memory-backend-file,id=mem0,size=256M,mem-path=/t/a,,b/memory,share=on",
				"-initrd", "/k/initrd", "-append", "console=ttyS0 quiet panic=-1 tsc_early_khz=5"},
				console, serialAgent, qmp),
		},
		{
			name: "template NIC with no host side",
			cfg: CmdlineConfig{Spec: func() engine.Spec {
				s := base
				s.Net = &engine.NetSpec{Detached: true, MAC: "52:54:00:00:00:01"}
				return s
			}(), Accel: engine.AccelTCG, TSCKHz: 5},
			want: cat(common("tcg"),
				[]string{"-smp", "1", "-m", "256M", "-kernel", "/k/vmlinux", "-initrd", "/k/initrd",
					"-append", "console=ttyS0 quiet panic=-1 tsc_early_khz=5"},
				console, []string{"-device", "virtio-net-device,mac=52:54:00:00:00:01"}, serialAgent, qmp),
		},
		{
			name: "clone: the template's RAM mapped privately, waiting for its state",
			cfg:  CmdlineConfig{Spec: base, Accel: engine.AccelTCG, TSCKHz: 5, MemPath: "/t/memory", Incoming: true},
			want: cat([]string{"qemu", "-accel", "tcg", "-M", "microvm,x-option-roms=off,memory-backend=mem0",
				"-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
				"-smp", "1", "-m", "256M", "-kernel", "/k/vmlinux",
				"-object", "memory-backend-file,id=mem0,size=256M,mem-path=/t/memory,share=off",
				"-initrd", "/k/initrd", "-append", "console=ttyS0 quiet panic=-1 tsc_early_khz=5"},
				console, serialAgent, qmp, []string{"-incoming", "defer"}),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.Binary = "qemu"
			got := Cmdline(tt.cfg)
			if !slices.Equal(got, tt.want) {
				t.Errorf("Cmdline:\n got %s\nwant %s", strings.Join(got, " "), strings.Join(tt.want, " "))
			}
		})
	}
}

func TestCheckSocketPaths(t *testing.T) {
	if err := checkSocketPaths("/run/user/1000/banger/vms/0123456789abcdef"); err != nil {
		t.Error(err)
	}
	long := "/" + strings.Repeat("d", 100)
	if err := checkSocketPaths(long); err == nil || !strings.Contains(err.Error(), "socket path") {
		t.Errorf("long dir: %v", err)
	}
}

func TestDeriveCID(t *testing.T) {
	a, b := deriveCID("vm-a"), deriveCID("vm-b")
	if a < 3 || b < 3 || a >= 1<<31 || a == b || deriveCID("vm-a") != a {
		t.Errorf("deriveCID: %d %d", a, b)
	}
}

func TestMapStatus(t *testing.T) {
	for _, tt := range []struct {
		in   qmpStatus
		want engine.State
	}{
		{qmpStatus{Running: true, Status: "running"}, engine.StateRunning},
		{qmpStatus{Status: "paused"}, engine.StatePaused},
		{qmpStatus{Status: "prelaunch"}, engine.StatePaused},
		{qmpStatus{Status: "shutdown"}, engine.StateExited},
		{qmpStatus{Status: "guest-panicked"}, engine.StateExited},
		// A disk write failed (the host is full): the guest waits to be
		// resumed, it has not exited.
		{qmpStatus{Status: "io-error"}, engine.StatePaused},
	} {
		if got := mapStatus(tt.in); got != tt.want {
			t.Errorf("mapStatus(%+v) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

func TestIOErrorReason(t *testing.T) {
	file := func(f string) *struct {
		File string `json:"file"`
	} {
		return &struct {
			File string `json:"file"`
		}{f}
	}
	for _, tt := range []struct {
		in   []qmpBlock
		want string
	}{
		{[]qmpBlock{{Device: "disk0", IOStatus: "ok", Inserted: file("/img")}, {Device: "disk1", IOStatus: "nospace", Inserted: file("/vm/disk.ext4")}},
			"paused by QEMU: no space left on the host's file system for disk /vm/disk.ext4"},
		{[]qmpBlock{{Device: "disk1", IOStatus: "failed"}}, "paused by QEMU: a host I/O error on disk disk1"},
		{nil, "paused by QEMU after a disk I/O error"},
	} {
		if got := ioErrorReason(tt.in); got != tt.want {
			t.Errorf("ioErrorReason(%+v) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
