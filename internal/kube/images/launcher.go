package images

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/bangervm/banger/internal/hostcmd"
)

// Where the launcher image keeps its parts. KernelDir holds a kernel as
// banger's kernel store does (vmlinux, initrd.img): the launcher imports
// it into its own store at start.
const (
	LauncherBin = "/usr/local/bin/banger-launcher"
	AgentBin    = "/usr/local/lib/banger/banger-agent"
	KernelDir   = "/usr/lib/banger/kernel"
)

// LauncherConfig names the files on this machine the launcher image is
// made of.
type LauncherConfig struct {
	Launcher string // banger-launcher, static (CGO_ENABLED=0)
	Agent    string // banger-agent, static
	// Kernel and Initrd are a kernel as banger imports it: an ELF
	// vmlinux and its generated initramfs (kernel.ImportDeb stages both).
	Kernel, Initrd string
	// QEMU is qemu-system-x86_64 (default: found in PATH). Its
	// libraries, its TCG accelerator module and the microvm firmware are
	// taken from this machine's QEMU install.
	QEMU string
}

// The host programs the launcher runs: QEMU, what banger's image
// conversion and disk creation shell out to (package hostcmd), and what
// package network does for a VM with a network in the Pod: ip, iptables
// (Debian's is the nf_tables one, which needs no CAP_NET_RAW) and nft.
var hostTools = []string{"mke2fs", "debugfs", "sh", "ip", "iptables", "nft"}

// xtablesDir holds iptables' match and target extensions, which it loads
// at run time (conntrack, comment, MASQUERADE, ...): ldd does not list
// them.
const xtablesDir = "/usr/lib/x86_64-linux-gnu/xtables"

// qemuModuleDirs are where Debian's QEMU looks for its loadable modules;
// under TCG it loads the accelerator from there (accel-tcg-x86_64.so).
var qemuModuleDirs = []string{"/usr/lib/x86_64-linux-gnu/qemu"}

// qemuFirmware are the files QEMU's microvm machine reads from
// /usr/share/qemu: its BIOS (qboot, under two names) and the option ROMs
// -kernel may load (PVH and linuxboot, used when option ROMs are on).
var qemuFirmware = []string{"bios-microvm.bin", "qboot.rom", "pvh.bin", "linuxboot_dma.bin"}

// LauncherImage is banger-launcher with everything it needs to boot a
// guest from inside a container: QEMU and the shared libraries ldd lists
// for it (with the dynamic loader), its TCG module, the microvm firmware,
// mke2fs, debugfs and sh, the CA certificates (image pulls over TLS), the
// guest agent and a kernel, and ip, iptables and nft with iptables'
// extensions, for a VM with a network. Its command is `banger-launcher run`.
func LauncherImage(ctx context.Context, c LauncherConfig) (v1.Image, error) {
	var entries []Entry
	add := func(p, src string) { entries = append(entries, Entry{Path: p, Src: src}) }
	add(LauncherBin, c.Launcher)
	add(AgentBin, c.Agent)
	entries = append(entries, Entry{Path: filepath.Join(KernelDir, "vmlinux"), Src: c.Kernel, Mode: 0o644})
	if c.Initrd != "" {
		entries = append(entries, Entry{Path: filepath.Join(KernelDir, "initrd.img"), Src: c.Initrd, Mode: 0o644})
	}

	qemu := c.QEMU
	if qemu == "" {
		qemu = "qemu-system-x86_64"
	}
	progs := []string{qemu}
	progs = append(progs, hostTools...)
	dynamic := map[string]bool{}
	for i, p := range progs {
		abs, err := exec.LookPath(p)
		if err != nil {
			return nil, fmt.Errorf("launcher image: %s: %w (apt-get install qemu-system-x86 e2fsprogs)", p, err)
		}
		if i == 0 {
			add("/usr/bin/qemu-system-x86_64", abs)
		} else {
			add(abs, abs)
		}
		dynamic[abs] = true
	}
	ext, err := filepath.Glob(filepath.Join(xtablesDir, "*.so"))
	if err != nil || len(ext) == 0 {
		return nil, fmt.Errorf("launcher image: no iptables extensions in %s (apt-get install iptables)", xtablesDir)
	}
	for _, m := range ext {
		add(m, m)
		dynamic[m] = true
	}
	for _, d := range qemuModuleDirs {
		m := filepath.Join(d, "accel-tcg-x86_64.so")
		if _, err := os.Stat(m); err == nil {
			add(m, m)
			dynamic[m] = true
		}
	}
	for f := range dynamic {
		libs, err := hostcmd.Ldd(ctx, f)
		if err != nil {
			return nil, fmt.Errorf("launcher image: %w", err)
		}
		for _, l := range libs {
			entries = append(entries, Entry{Path: l, Src: l, Mode: 0o755})
		}
	}
	for _, fw := range qemuFirmware {
		p := filepath.Join("/usr/share/qemu", fw)
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("launcher image: QEMU firmware %s: %w (apt-get install qemu-system-x86)", p, err)
		}
		entries = append(entries, Entry{Path: p, Src: p, Mode: 0o644})
	}
	for _, opt := range []string{"/etc/mke2fs.conf", "/etc/ssl/certs/ca-certificates.crt"} {
		if _, err := os.Stat(opt); err == nil {
			entries = append(entries, Entry{Path: opt, Src: opt, Mode: 0o644})
		}
	}
	entries = append(entries,
		Entry{Path: "/etc/passwd", Data: []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n")},
		Entry{Path: "/etc/group", Data: []byte("root:x:0:\nnogroup:x:65534:\n")},
		Entry{Path: "/tmp", Dir: true, Mode: 0o1777},
		Entry{Path: "/root", Dir: true, Mode: 0o700},
		Entry{Path: "/run", Dir: true},
		Entry{Path: "/var/lib/banger", Dir: true, Mode: 0o700},
	)
	layer, err := Layer(entries)
	if err != nil {
		return nil, fmt.Errorf("launcher image: %w", err)
	}
	return Image(layer, v1.Config{
		Entrypoint: []string{LauncherBin, "run"},
		Env:        []string{"PATH=/usr/local/bin:/usr/local/sbin:/usr/bin:/usr/sbin:/bin:/sbin", "HOME=/root"},
		WorkingDir: "/",
	})
}
