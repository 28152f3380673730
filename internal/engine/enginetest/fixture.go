package enginetest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bangervm/banger/internal/engine"
	"github.com/bangervm/banger/internal/kernel"
	"github.com/bangervm/banger/internal/kernel/cpio"
	"github.com/bangervm/banger/internal/testutil"
)

// Require skips the test with the message, or fails it when CI=true, where
// a missing prerequisite means a broken CI setup rather than a reason to
// skip.
func Require(t testing.TB, format string, args ...any) {
	t.Helper()
	testutil.Missing(t, format, args...)
}

// DebianCloudDeb returns Debian's cloud kernel .deb from the test cache,
// downloading it with apt-get once.
func DebianCloudDeb(t testing.TB) string {
	t.Helper()
	return testutil.DebianCloudDeb(t, kernel.AptDownload)
}

// fixtureModules are loaded by the fixture init after the kernel
// initramfs's own: the ACPI power button driver and evdev, so that the
// guest sees the button press of a graceful shutdown. Neither has
// dependencies.
var fixtureModules = []string{"kernel/drivers/acpi/button.ko", "kernel/drivers/input/evdev.ko"}

// fixtureInit is the fixture guest's /init (busybox sh): load modules,
// power off on any input event (the ACPI power button) unless the kernel
// command line has fixture.nobutton, then serve the
// agent port: "PING x" -> "PONG x", "QUIT" -> "BYE" and power off.
const fixtureInit = `#!/bin/busybox sh
B=/bin/busybox
$B mount -t proc proc /proc
$B mount -t sysfs sysfs /sys
$B mount -t devtmpfs devtmpfs /dev 2>/dev/null
for m in $($B cat /etc/banger/modules.load) /lib/fixture/*.ko; do
	[ -e "$m" ] && $B insmod "$m"
done
stop() { $B sync; echo FIXTURE-POWEROFF; $B poweroff -f; }
case " $($B cat /proc/cmdline) " in
*" fixture.nobutton "*) ;;
*)
	for ev in /dev/input/event*; do
		[ -e "$ev" ] && ( $B dd if="$ev" bs=24 count=1 >/dev/null 2>&1; echo FIXTURE-BUTTON; stop ) &
	done;;
esac
port=; i=0
while [ -z "$port" ] && [ $i -lt 500 ]; do
	for p in /sys/class/virtio-ports/*; do
		[ "$($B cat $p/name 2>/dev/null)" = ` + engine.AgentPortName + ` ] && port=/dev/${p##*/}
	done
	[ -z "$port" ] && $B usleep 10000
	i=$((i+1))
done
[ -n "$port" ] || { echo FIXTURE-ERR no agent port; stop; }
exec 3<>"$port"
echo ` + ReadyMarker + `
while :; do
	if read -r line <&3; then
		case "$line" in
		PING*) echo "PONG${line#PING}" >&3;;
		QUIT) echo BYE >&3; stop;;
		esac
	else
		$B usleep 20000
	fi
done
`

// ReadyMarker is what the fixture guest prints on its console once its
// userspace serves the agent port.
const ReadyMarker = "FIXTURE-READY"

// DebianFixtures builds (once, cached next to the .deb) a guest from
// Debian's cloud kernel: kernel.ImportDeb's vmlinux and initramfs, followed
// by a second archive holding busybox as /init running fixtureInit. It
// skips (fails under CI=true) when the kernel or busybox-static cannot be
// had.
func DebianFixtures(t testing.TB) Fixtures {
	t.Helper()
	busybox := "/bin/busybox"
	if b, err := os.ReadFile(busybox); err != nil || !bytes.HasPrefix(b, []byte("\x7fELF")) {
		Require(t, "busybox-static not installed at %s", busybox)
	}
	deb := DebianCloudDeb(t)
	dir := filepath.Join(testutil.CacheDir(t), "enginetest", strings.TrimSuffix(filepath.Base(deb), ".deb"))
	if _, err := os.Stat(filepath.Join(dir, kernel.VmlinuxFile)); err != nil {
		if _, err := exec.LookPath("dpkg-deb"); err != nil {
			Require(t, "dpkg-deb not installed")
		}
		if err := stageKernel(dir, deb); err != nil {
			Require(t, "stage the fixture kernel: %v", err)
		}
	}
	initrd := filepath.Join(t.TempDir(), "initrd.img")
	if err := buildInitrd(initrd, dir, busybox); err != nil {
		t.Fatalf("build fixture initrd: %v", err)
	}
	return Fixtures{
		Kernel:              filepath.Join(dir, kernel.VmlinuxFile),
		Initrd:              initrd,
		MemoryMiB:           256,
		PowerButton:         true,
		IgnoreButtonCmdline: "fixture.nobutton",
	}
}

// stageKernel imports the .deb into dir and adds the fixture modules, in a
// temporary directory renamed into place, so a concurrent or interrupted run
// never sees half a kernel.
func stageKernel(dir, deb string) error {
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), ".stage-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := kernel.ImportDeb(ctx, tmp, deb); err != nil {
		return err
	}
	if err := extractModules(ctx, deb, filepath.Join(tmp, "fixture")); err != nil {
		return err
	}
	if err := os.Rename(tmp, dir); err != nil && !errors.Is(err, os.ErrExist) {
		if _, serr := os.Stat(filepath.Join(dir, kernel.VmlinuxFile)); serr == nil {
			return nil // another run won the race
		}
		return err
	}
	return nil
}

// extractModules copies fixtureModules out of the .deb's data tar.
func extractModules(ctx context.Context, deb, dst string) error {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "dpkg-deb", "--fsys-tarfile", deb)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	found := 0
	tr := tar.NewReader(out)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			cmd.Process.Kill()
			cmd.Wait()
			return err
		}
		for _, m := range fixtureModules {
			if strings.HasSuffix(h.Name, "/"+m) {
				b, err := io.ReadAll(tr)
				if err != nil {
					return err
				}
				if err := os.WriteFile(filepath.Join(dst, path.Base(m)), b, 0o644); err != nil {
					return err
				}
				found++
			}
		}
	}
	io.Copy(io.Discard, out)
	if err := cmd.Wait(); err != nil {
		return err
	}
	if found != len(fixtureModules) {
		return errors.New("power button modules not found in the .deb")
	}
	return nil
}

// buildInitrd writes the kernel's initramfs followed by the fixture archive.
func buildInitrd(dst, kdir, busybox string) error {
	base, err := os.ReadFile(filepath.Join(kdir, kernel.InitrdFile))
	if err != nil {
		return err
	}
	bb, err := os.ReadFile(busybox)
	if err != nil {
		return err
	}
	type entry struct {
		name string
		mode uint32
		data []byte
	}
	ents := []entry{
		{"bin", cpio.TypeDir | 0o755, nil},
		{"bin/busybox", cpio.TypeReg | 0o755, bb},
		{"dev", cpio.TypeDir | 0o755, nil},
		{"init", cpio.TypeReg | 0o755, []byte(fixtureInit)},
		{"lib", cpio.TypeDir | 0o755, nil},
		{"lib/fixture", cpio.TypeDir | 0o755, nil},
		{"proc", cpio.TypeDir | 0o755, nil},
		{"sys", cpio.TypeDir | 0o755, nil},
	}
	for _, m := range fixtureModules {
		b, err := os.ReadFile(filepath.Join(kdir, "fixture", path.Base(m)))
		if err != nil {
			return err
		}
		ents = append(ents, entry{"lib/fixture/" + path.Base(m), cpio.TypeReg | 0o644, b})
	}
	var buf bytes.Buffer
	buf.Write(base)
	zw := gzip.NewWriter(&buf)
	cw := cpio.NewWriter(zw)
	for _, e := range ents {
		if err := cw.WriteHeader(&cpio.Header{Name: e.name, Mode: e.mode, Size: int64(len(e.data))}); err != nil {
			return err
		}
		if _, err := cw.Write(e.data); err != nil {
			return err
		}
	}
	if err := cw.Close(); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	return os.WriteFile(dst, buf.Bytes(), 0o644)
}
