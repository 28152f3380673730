package agent

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bangervm/banger/internal/agentproto"
)

// Paths of the boot. The lower and rw mounts end up under the new root so
// that shutdown can still reach them.
const (
	modulesLoadPath = "/etc/banger/modules.load"
	stageDir        = "/run/banger"
	lowerMount      = "/run/banger/lower"
	rwMount         = "/run/banger/rw"
	newRoot         = "/run/banger/root"
	// LowerDir and DiskDir are where the image and the VM's disk are
	// mounted in the guest's root.
	LowerDir = "/.banger/lower"
	DiskDir  = "/.banger/rw"
	// LogFile is the agent's log in the guest.
	LogFile = "/run/banger/agent.log"
	// deviceWait bounds the wait for the root disks to appear.
	deviceWait = 5 * time.Second
)

type mountSpec struct {
	source, target, fstype string
	flags                  uintptr
	data                   string
}

// earlyMounts are what the initramfs needs to load modules and find disks.
var earlyMounts = []mountSpec{
	{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755"},
	{"proc", "/proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
	{"sysfs", "/sys", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
}

// rootMounts are the API file systems of the final root. An image's own
// init accepts them already mounted.
var rootMounts = []mountSpec{
	{"proc", "/proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
	{"sysfs", "/sys", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
	{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755"},
	{"devpts", "/dev/pts", "devpts", unix.MS_NOSUID | unix.MS_NOEXEC, "ptmxmode=0666,mode=0620"},
	{"tmpfs", "/dev/shm", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
	{"tmpfs", "/tmp", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
	{"tmpfs", "/run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755"},
}

// mountAll mounts each spec that is not mounted yet, creating its target,
// and logs (not fails) on errors: a guest missing /dev/shm still works.
func mountAll(log *slog.Logger, specs []mountSpec) {
	for _, m := range specs {
		if isMountpoint(m.target) {
			continue
		}
		if err := os.MkdirAll(m.target, 0o755); err != nil {
			log.Warn("mount", "target", m.target, "err", err)
			continue
		}
		if err := unix.Mount(m.source, m.target, m.fstype, m.flags, m.data); err != nil {
			log.Warn("mount", "target", m.target, "fstype", m.fstype, "err", err)
		}
	}
}

// isMountpoint reports whether dir is on another device than its parent.
func isMountpoint(dir string) bool {
	var a, b unix.Stat_t
	if unix.Lstat(dir, &a) != nil || unix.Lstat(filepath.Join(dir, ".."), &b) != nil {
		return false
	}
	return a.Dev != b.Dev
}

func readBootConfig(path string) (agentproto.BootConfig, error) {
	var cfg agentproto.BootConfig
	b, err := os.ReadFile(path)
	if err != nil {
		return cfg, fmt.Errorf("read boot config: %w", err)
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		return cfg, fmt.Errorf("parse boot config %s: %w", path, err)
	}
	return cfg, nil
}

// loadModules loads the modules listed in path, in order. A module that is
// already loaded or built in (EEXIST) is fine; other failures are logged and
// skipped, since a later device wait reports what is really missing.
func loadModules(log *slog.Logger, path string) {
	b, err := os.ReadFile(path)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			log.Warn("read module list", "err", err)
		}
		return
	}
	var paths []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if p := strings.TrimSpace(sc.Text()); p != "" && !strings.HasPrefix(p, "#") {
			paths = append(paths, p)
		}
	}
	n, skipped := 0, 0
	var present map[string]bool // virtio device types, known once virtio_mmio is in
	for _, p := range paths {
		name := moduleName(p)
		if present != nil {
			if dev, ok := deviceModules[name]; ok && !present[dev] {
				skipped++
				continue
			}
		}
		if err := loadModule(p); err != nil {
			log.Warn("load module", "path", p, "err", err)
			continue
		}
		n++
		if name == "virtio_mmio" {
			present = virtioDevices()
		}
	}
	log.Info("modules loaded", "count", n, "skipped", skipped)
}

// deviceModules maps the modules that serve only one kind of virtio
// device to that device's type (virtio spec §5: 1 net, 19 vsock). Each
// module load costs a signature check, slow under software emulation, so
// modules for devices the VM does not have are not loaded.
var deviceModules = map[string]string{
	"virtio_net": "1", "net_failover": "1", "failover": "1",
	"vsock": "19", "vmw_vsock_virtio_transport_common": "19", "vmw_vsock_virtio_transport": "19",
}

// virtioDevices returns the virtio device types on the bus. virtio_mmio
// registers the devices it finds (through ACPI) while it loads.
func virtioDevices() map[string]bool {
	out := map[string]bool{}
	ids, _ := filepath.Glob("/sys/bus/virtio/devices/*/device")
	for _, f := range ids {
		if b, err := os.ReadFile(f); err == nil {
			// The file holds the id as hex, e.g. 0x0001.
			v, err := strconv.ParseUint(strings.TrimPrefix(strings.TrimSpace(string(b)), "0x"), 16, 32)
			if err == nil {
				out[strconv.FormatUint(v, 10)] = true
			}
		}
	}
	return out
}

// moduleName turns lib/modules/V/kernel/x/virtio_net.ko into virtio_net.
func moduleName(path string) string {
	base := filepath.Base(path)
	if i := strings.Index(base, ".ko"); i >= 0 {
		base = base[:i]
	}
	return strings.ReplaceAll(base, "-", "_")
}

func loadModule(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	err = unix.FinitModule(int(f.Fd()), "", 0)
	if errors.Is(err, unix.ENOSYS) {
		data, rerr := os.ReadFile(path)
		if rerr != nil {
			return rerr
		}
		err = unix.InitModule(data, "")
	}
	if errors.Is(err, unix.EEXIST) {
		return nil
	}
	return err
}

func waitForDevice(path string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("device %s did not appear within %s", path, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// setupRoot mounts the image read-only and the VM's disk read-write, joins
// them with overlayfs and switches root to it.
func setupRoot(log *slog.Logger, rc agentproto.RootConfig) error {
	fstype := rc.FSType
	if fstype == "" {
		fstype = "ext4"
	}
	for _, dev := range []string{rc.Image, rc.Disk} {
		if err := waitForDevice(dev, deviceWait); err != nil {
			return err
		}
	}
	for _, d := range []string{lowerMount, rwMount, newRoot} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	if err := unix.Mount(rc.Image, lowerMount, fstype, unix.MS_RDONLY, ""); err != nil {
		return fmt.Errorf("mount image %s: %w", rc.Image, err)
	}
	if err := unix.Mount(rc.Disk, rwMount, fstype, 0, ""); err != nil {
		return fmt.Errorf("mount disk %s: %w", rc.Disk, err)
	}
	upper, work := filepath.Join(rwMount, "upper"), filepath.Join(rwMount, "work")
	for _, d := range []string{upper, work} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("prepare disk: %w", err)
		}
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", lowerMount, upper, work)
	if err := unix.Mount("overlay", newRoot, "overlay", 0, opts); err != nil {
		return fmt.Errorf("mount overlay: %w", err)
	}
	moves := [][2]string{{lowerMount, LowerDir}, {rwMount, DiskDir}, {"/dev", "/dev"}}
	for _, m := range moves {
		dst := newRoot + m[1]
		if err := os.MkdirAll(dst, 0o755); err != nil {
			return fmt.Errorf("prepare root: %w", err)
		}
		if err := unix.Mount(m[0], dst, "", unix.MS_MOVE, ""); err != nil {
			return fmt.Errorf("move %s into the root: %w", m[0], err)
		}
	}
	_ = unix.Unmount("/proc", unix.MNT_DETACH)
	_ = unix.Unmount("/sys", unix.MNT_DETACH)
	if err := switchRoot(newRoot); err != nil {
		return err
	}
	log.Info("root switched", "image", rc.Image, "disk", rc.Disk)
	return nil
}

// switchRoot makes dir the root, as busybox switch_root does. The
// initramfs's files stay in memory (a few MB), which is cheaper than
// deleting them file by file.
func switchRoot(dir string) error {
	if err := unix.Chdir(dir); err != nil {
		return fmt.Errorf("switch root: %w", err)
	}
	if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("switch root: move to /: %w", err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("switch root: chroot: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return fmt.Errorf("switch root: %w", err)
	}
	return nil
}
