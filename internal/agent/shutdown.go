package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// Grace periods of a guest shutdown.
const (
	termGrace = 3 * time.Second
	killGrace = time.Second
)

// guestShutdown stops every other process, then makes the file systems
// consistent on disk: remount the overlay and the VM's disk read-only (ext4
// checkpoints its journal on that), or freeze the disk if it is still busy.
// Only then may the host be told the data is safe.
func guestShutdown(ctx context.Context, log *slog.Logger) error {
	self := os.Getpid()
	// kill(-1) skips PID 1 and the caller.
	_ = unix.Kill(-1, unix.SIGTERM)
	if !waitNoProcesses(self, termGrace) {
		log.Info("processes left after SIGTERM; sending SIGKILL")
		_ = unix.Kill(-1, unix.SIGKILL)
		waitNoProcesses(self, killGrace)
	}
	unix.Sync()
	var errs []error
	if err := unix.Mount("", "/", "", unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
		log.Warn("remount / read-only", "err", err)
	}
	if isMountpoint(DiskDir) {
		if err := unix.Mount("", DiskDir, "", unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
			log.Warn("remount disk read-only; freezing it instead", "err", err)
			if ferr := freeze(DiskDir); ferr != nil {
				errs = append(errs, fmt.Errorf("make %s safe: remount read-only: %w; freeze: %w", DiskDir, err, ferr))
			}
		}
	}
	unix.Sync()
	if len(errs) == 0 {
		log.Info("file systems are safe on disk")
	}
	return errors.Join(errs...)
}

// fiFreeze is FIFREEZE, _IOWR('X', 119, int); x/sys/unix lacks it.
const fiFreeze = 0xC0045877

// freeze flushes dir's file system, journal included, and blocks writes.
func freeze(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return control(f, func(fd int) error { return unix.IoctlSetInt(fd, fiFreeze, 0) })
}

// waitNoProcesses waits until no user process other than PID 1 and self is
// left, or timeout; kernel threads and zombies have an empty cmdline.
func waitNoProcesses(self int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		if !otherProcesses(self) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func otherProcesses(self int) bool {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return false
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == 1 || pid == self {
			continue
		}
		if b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline"); err == nil && len(b) > 0 {
			return true
		}
	}
	return false
}

// powerOff ends the guest. With panic=-1 and QEMU's -no-reboot even a
// failure here ends the VM, since PID 1 exiting panics the kernel.
func powerOff(log *slog.Logger) {
	log.Info("powering off")
	unix.Sync()
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
		log.Error("power off", "err", err)
	}
}
