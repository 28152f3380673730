package firecracker

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/engine/proc"
)

func readState(dir string) (state, error) {
	b, err := os.ReadFile(filepath.Join(dir, StateFile))
	if errors.Is(err, os.ErrNotExist) {
		return state{}, fmt.Errorf("no %s in %s: %w", StateFile, dir, errdefs.ErrNotFound)
	}
	if err != nil {
		return state{}, err
	}
	var st state
	if err := json.Unmarshal(b, &st); err != nil {
		return state{}, fmt.Errorf("%s: %w", filepath.Join(dir, StateFile), err)
	}
	if st.Engine != Name || st.APISocket == "" || st.APISockArg == "" || st.PIDFile == "" {
		return state{}, fmt.Errorf("%s was not written by the firecracker engine: %w", filepath.Join(dir, StateFile), errdefs.ErrNotFound)
	}
	return st, nil
}

func writeState(dir string, st state) error {
	return proc.WriteJSON(filepath.Join(dir, StateFile), st)
}

// touch creates path (0600) if missing, owned by uid:gid unless they are
// negative. Firecracker's logger opens log_path without creating it.
func touch(path string, uid, gid int) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	f.Close()
	if uid >= 0 {
		return os.Chown(path, uid, gid)
	}
	return nil
}

func fileSize(p string) int64 {
	fi, err := os.Stat(p)
	if err != nil {
		return 0
	}
	return fi.Size()
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// quoteTail returns "; <what>: <last lines of path after off>" or "".
func quoteTail(what, path string, off int64) string {
	const max = 2000
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	size := fileSize(path)
	if size-off > max {
		off = size - max
	}
	if size <= off {
		return ""
	}
	b := make([]byte, size-off)
	n, _ := f.ReadAt(b, off)
	s := strings.TrimSpace(string(b[:n]))
	if s == "" {
		return ""
	}
	return "; " + what + ":\n" + s
}

// hostMemMiB is the host's MemTotal.
func hostMemMiB() (int64, error) {
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
