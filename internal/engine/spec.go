package engine

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/bangervm/banger/errdefs"
)

// Validate checks what every engine needs of a spec before anything is
// written or started: an id, an existing directory (made absolute), a size
// the host can hold, and kernel, initrd and disk files that exist. Engines
// add their own limits after it.
func (s *Spec) Validate() error {
	inv := func(format string, a ...any) error {
		return fmt.Errorf(format+": %w", append(a, errdefs.ErrInvalidArgument)...)
	}
	if s.ID == "" {
		return inv("empty VM id")
	}
	abs, err := filepath.Abs(s.Dir)
	if err != nil {
		return err
	}
	s.Dir = abs
	if fi, err := os.Stat(s.Dir); err != nil || !fi.IsDir() {
		return inv("VM directory %q is not a directory", s.Dir)
	}
	if s.VCPU < 1 {
		return inv("vcpu %d: need at least 1", s.VCPU)
	}
	if s.MemoryMiB < 32 {
		return inv("memory %d MiB: need at least 32", s.MemoryMiB)
	}
	if total, err := HostMemMiB(); err == nil && int64(s.MemoryMiB) > total {
		return inv("memory %d MiB is more than the host's %d MiB", s.MemoryMiB, total)
	}
	if s.Kernel == "" {
		return inv("no kernel")
	}
	files := []string{s.Kernel}
	if s.Initrd != "" {
		files = append(files, s.Initrd)
	}
	for _, d := range s.Disks {
		files = append(files, d.Path)
	}
	for _, f := range files {
		fi, err := os.Stat(f)
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%s: %w", f, errdefs.ErrNotFound)
		}
		if err != nil {
			return err
		}
		if !fi.Mode().IsRegular() && fi.Mode()&os.ModeDevice == 0 {
			return inv("%s is not a file", f)
		}
	}
	return nil
}

// HostMemMiB returns the host's RAM (MemTotal) in MiB.
func HostMemMiB() (int64, error) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			if f := strings.Fields(rest); len(f) > 0 {
				if kb, err := strconv.ParseInt(f[0], 10, 64); err == nil {
					return kb / 1024, nil
				}
			}
		}
	}
	return 0, errors.New("no MemTotal in /proc/meminfo")
}
