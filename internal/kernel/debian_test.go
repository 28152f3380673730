package kernel

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bangervm/banger/internal/testutil"

	"github.com/bangervm/banger/internal/kernel/cpio"
)

// requireOr skips the test, or fails it under CI=true, where a missing
// prerequisite is a broken setup rather than a reason to skip.
func requireOr(t *testing.T, format string, args ...any) {
	t.Helper()
	testutil.Missing(t, format, args...)
}

// debianCloudDeb returns Debian's cloud kernel .deb, downloading it with
// apt once into the shared test cache.
func debianCloudDeb(t *testing.T) string {
	return testutil.DebianCloudDeb(t, AptDownload)
}

// bootModules are the modules Debian's cloud kernel needs for a banger
// guest: DefaultModules plus their dependencies (ext4 is built in).
var bootModules = []string{
	"button", "evdev", "failover", "net_failover", "overlay", "virtio", "virtio_blk", "virtio_console", "virtio_mmio", "virtio_net",
	"virtio_ring", "vmw_vsock_virtio_transport", "vmw_vsock_virtio_transport_common", "vsock",
}

// TestDebianCloudKernel imports Debian's real cloud kernel and checks the
// result against host tools used as oracles: dpkg-deb, lz4, depmod and, if
// QEMU is installed, an actual boot.
func TestDebianCloudKernel(t *testing.T) {
	deb := debianCloudDeb(t)
	for _, tool := range []string{"dpkg-deb", "depmod"} {
		if _, err := exec.LookPath(tool); err != nil {
			requireOr(t, "%s not installed", tool)
		}
	}
	ctx := context.Background()
	stage := filepath.Join(t.TempDir(), "deb")
	info, err := ImportDeb(ctx, stage, deb)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("imported %+v", info)

	// The oracle tree: dpkg's own extraction, with depmod run on it.
	ref := t.TempDir()
	if out, err := exec.Command("dpkg-deb", "-x", deb, ref).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb -x: %v: %s", err, out)
	}
	vers, _ := filepath.Glob(filepath.Join(ref, "lib", "modules", "*"))
	if len(vers) != 1 {
		t.Fatalf("modules in the .deb: %v", vers)
	}
	version := filepath.Base(vers[0])
	if out, err := exec.Command("depmod", "-b", ref, version).CombinedOutput(); err != nil {
		t.Fatalf("depmod: %v: %s", err, out)
	}
	vmlinuz := filepath.Join(ref, "boot", "vmlinuz-"+version)

	t.Run("deb", func(t *testing.T) {
		if info.Version != version || info.Format != FormatBzImage || !info.PVH || !info.HasInitrd || len(info.MissingModules) != 0 {
			t.Errorf("info = %+v", info)
		}
		if got := slices.Sorted(slices.Values(info.Modules)); !slices.Equal(got, bootModules) {
			t.Errorf("modules %v, want %v", got, bootModules)
		}
		f, err := elf.Open(filepath.Join(stage, VmlinuxFile))
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
		if f.Machine != elf.EM_X86_64 || f.Type != elf.ET_EXEC {
			t.Errorf("vmlinux is %s %s", f.Machine, f.Type)
		}
		bz, _ := os.ReadFile(filepath.Join(stage, BzImageFile))
		orig, _ := os.ReadFile(vmlinuz)
		if !bytes.Equal(bz, orig) {
			t.Error("staged bzImage differs from the .deb's vmlinuz")
		}
	})

	t.Run("lz4 matches the lz4 tool", func(t *testing.T) {
		testutil.RequireTool(t, "lz4", "lz4")
		bz, _ := os.ReadFile(vmlinuz)
		le := binary.LittleEndian
		start := (int(bz[bzSetupSects])+1)*512 + int(le.Uint32(bz[bzPayloadOffset:]))
		cmd := exec.Command("lz4", "-dc")
		// Without the appended size, which the lz4 tool takes for a
		// broken frame.
		cmd.Stdin = bytes.NewReader(bz[start : start+int(le.Uint32(bz[bzPayloadLength:]))-4])
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("lz4 -dc: %v", err)
		}
		sum := sha256.Sum256(out)
		if hex.EncodeToString(sum[:]) != info.VmlinuxSHA256 {
			t.Errorf("vmlinux sha256 %s, lz4 tool gives %x", info.VmlinuxSHA256, sum)
		}
	})

	names, entries := readInitrd(t, filepath.Join(stage, InitrdFile))
	md := "lib/modules/" + version + "/"

	t.Run("initramfs", func(t *testing.T) {
		var kos []string
		for _, n := range names {
			if strings.HasSuffix(n, ".ko") {
				kos = append(kos, strings.TrimSuffix(path.Base(n), ".ko"))
			}
			if n == "init" {
				t.Error("initramfs has an /init")
			}
		}
		slices.Sort(kos)
		if !slices.Equal(kos, bootModules) {
			t.Errorf("initramfs modules %v, want %v", kos, bootModules)
		}
		load := strings.Fields(string(entries[ModulesLoadPath].data))
		loadPos := map[string]int{}
		for i, p := range load {
			loadPos[strings.TrimPrefix(p, "/"+md)] = i
		}
		oracle := parseModulesDep(t, filepath.Join(ref, md, "modules.dep"))
		ours := parseModulesDepBytes(entries[md+"modules.dep"].data)
		if len(ours) != len(bootModules) {
			t.Errorf("modules.dep has %d lines, want %d", len(ours), len(bootModules))
		}
		for mod, deps := range ours {
			want, ok := oracle[mod]
			if !ok {
				t.Errorf("%s is not in depmod's modules.dep", mod)
				continue
			}
			if !slices.Equal(slices.Sorted(slices.Values(deps)), slices.Sorted(slices.Values(want))) {
				t.Errorf("%s: deps %v, depmod says %v", mod, deps, want)
			}
			// modprobe loads a line's dependencies from the last one back.
			for i, d := range deps {
				if loadPos[d] >= loadPos[mod] || (i > 0 && loadPos[deps[i-1]] < loadPos[d]) {
					t.Errorf("%s: dependency order %v disagrees with modules.load", mod, deps)
				}
			}
			// The module stored is the .deb's module without its
			// signature (Debian's config does not force them), as
			// modinfo sees it.
			orig := filepath.Join(ref, md, mod)
			stored := filepath.Join(t.TempDir(), path.Base(mod))
			os.WriteFile(stored, entries[md+mod].data, 0o644)
			origBytes, _ := os.ReadFile(orig)
			if !bytes.HasPrefix(origBytes, entries[md+mod].data) || len(origBytes) == len(entries[md+mod].data) {
				t.Errorf("%s is not the .deb's file less a trailer", mod)
			}
			if signer(t, orig) == "" || signer(t, stored) != "" {
				t.Errorf("%s: modinfo signer %q in the .deb, %q in the initramfs; want signed, then unsigned", mod, signer(t, orig), signer(t, stored))
			}
		}
	})

	t.Run("files", func(t *testing.T) {
		fromBz := t.TempDir()
		infoBz, err := ImportFiles(ctx, fromBz, vmlinuz, "", filepath.Join(ref, "lib", "modules"))
		if err != nil {
			t.Fatal(err)
		}
		a, _ := os.ReadFile(filepath.Join(stage, InitrdFile))
		b, _ := os.ReadFile(filepath.Join(fromBz, InitrdFile))
		if !bytes.Equal(a, b) {
			t.Error("initramfs from the modules directory differs from the one from the .deb")
		}
		if infoBz.VmlinuxSHA256 != info.VmlinuxSHA256 || infoBz.Version != version || !infoBz.PVH {
			t.Errorf("info = %+v", infoBz)
		}
		fromELF := t.TempDir()
		infoELF, err := ImportFiles(ctx, fromELF, filepath.Join(stage, VmlinuxFile), "", filepath.Join(ref, md))
		if err != nil {
			t.Fatal(err)
		}
		if infoELF.Format != FormatELF || infoELF.Version != version || !infoELF.PVH || infoELF.VmlinuxSHA256 != info.VmlinuxSHA256 {
			t.Errorf("info = %+v", infoELF)
		}
	})

	t.Run("boot", func(t *testing.T) {
		bootCheck(t, stage)
	})
}

func parseModulesDep(t *testing.T, p string) map[string][]string {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return parseModulesDepBytes(b)
}

func parseModulesDepBytes(b []byte) map[string][]string {
	m := map[string][]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		mod, deps, ok := strings.Cut(sc.Text(), ":")
		if ok {
			m[mod] = strings.Fields(deps)
		}
	}
	return m
}

// bootCheck boots the staged ELF vmlinux under QEMU's microvm with the
// generated initramfs followed by a second archive holding a busybox /init,
// the way the agent will be appended. The init loads virtio_net with
// busybox modprobe (exercising modules.dep), the rest with insmod in
// modules.load order, and prints the loaded modules.
func bootCheck(t *testing.T, stage string) {
	for _, tool := range []string{"qemu-system-x86_64", "/bin/busybox"} {
		if _, err := exec.LookPath(tool); err != nil {
			requireOr(t, "%s not installed", tool)
		}
	}
	khz := tscKHz()
	if khz == "" {
		requireOr(t, "cannot read the host TSC frequency from /proc/cpuinfo")
	}
	busybox, err := os.ReadFile("/bin/busybox")
	if err != nil {
		requireOr(t, "read busybox: %v", err)
	}
	const initScript = `#!/bin/busybox sh
B=/bin/busybox
$B mount -t proc proc /proc
$B mount -t sysfs sysfs /sys
$B modprobe virtio_net || echo BANGER-TEST-FAIL modprobe virtio_net
for m in $($B cat /etc/banger/modules.load); do
	n=${m##*/}; n=${n%.ko}
	[ -e /sys/module/$n ] || $B insmod $m || echo BANGER-TEST-FAIL insmod $m
done
echo BANGER-TEST-MODULES $($B cut -d' ' -f1 /proc/modules | $B sort | $B tr '\n' ' ')
echo BANGER-TEST-OK
$B poweroff -f
`
	var arch bytes.Buffer
	zw := gzip.NewWriter(&arch)
	cw := cpio.NewWriter(zw)
	for _, e := range []struct {
		name string
		mode uint32
		data []byte
	}{
		{"bin", cpio.TypeDir | 0o755, nil},
		{"bin/busybox", cpio.TypeReg | 0o755, busybox},
		{"init", cpio.TypeReg | 0o755, []byte(initScript)},
		{"proc", cpio.TypeDir | 0o755, nil},
		{"sys", cpio.TypeDir | 0o755, nil},
	} {
		if err := cw.WriteHeader(&cpio.Header{Name: e.name, Mode: e.mode, Size: int64(len(e.data))}); err != nil {
			t.Fatal(err)
		}
		cw.Write(e.data)
	}
	if err := cw.Close(); err != nil {
		t.Fatal(err)
	}
	zw.Close()
	initrd, err := os.ReadFile(filepath.Join(stage, InitrdFile))
	if err != nil {
		t.Fatal(err)
	}
	combined := filepath.Join(t.TempDir(), "initrd-with-init")
	writeFile(t, combined, append(initrd, arch.Bytes()...))

	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	start := time.Now()
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64",
		"-accel", "tcg", "-M", "microvm,x-option-roms=off", "-nodefaults", "-no-user-config", "-nographic",
		"-serial", "stdio", "-no-reboot", "-m", "256M",
		"-kernel", filepath.Join(stage, VmlinuxFile), "-initrd", combined,
		"-append", "console=ttyS0 quiet panic=-1 tsc_early_khz="+khz)
	out, err := cmd.CombinedOutput()
	console := string(out)
	t.Logf("boot took %v", time.Since(start).Round(10*time.Millisecond))
	// QEMU exits 0 on poweroff and on panic alike: judge by the markers.
	if !strings.Contains(console, "BANGER-TEST-OK") || strings.Contains(console, "BANGER-TEST-FAIL") {
		t.Fatalf("guest did not load its modules (qemu: %v); console:\n%s", err, console)
	}
	var loaded []string
	for _, line := range strings.Split(console, "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "BANGER-TEST-MODULES"); ok {
			loaded = strings.Fields(rest)
		}
	}
	if !slices.Equal(loaded, bootModules) {
		t.Errorf("guest loaded %v, want %v", loaded, bootModules)
	}
}

// tscKHz reads the host TSC rate from /proc/cpuinfo. On a VM host with
// tsc_known_freq, "cpu MHz" is the TSC rate; see the boot notes.
func tscKHz() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "cpu MHz" {
			var mhz float64
			if _, err := fmt.Sscanf(strings.TrimSpace(v), "%g", &mhz); err == nil && mhz > 0 {
				return fmt.Sprint(int64(mhz * 1000))
			}
		}
	}
	return ""
}

// signer is modinfo's signer field of the module file p ("" if unsigned).
func signer(t *testing.T, p string) string {
	t.Helper()
	out, err := exec.Command("modinfo", "-F", "signer", p).Output()
	if err != nil {
		t.Fatalf("modinfo %s: %v", p, err)
	}
	return strings.TrimSpace(string(out))
}
