package proc

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/bangervm/banger/internal/termtext"
)

// WriteFileAtomic writes via a temporary file, fsync and rename, so readers
// (a daemon re-attaching after a crash) see the old file or the whole new
// one, never half of it.
func WriteFileAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// WriteJSON writes v as indented JSON to path, atomically.
func WriteJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return WriteFileAtomic(path, append(b, '\n'))
}

// FileSize is the size of p, or 0 when it cannot be read.
func FileSize(p string) int64 {
	fi, err := os.Stat(p)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// FileExists reports whether p exists.
func FileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// QuoteTail returns "; <what>: <last lines of path after off>" or "", the
// lines escaped for the terminal: the file can hold what a guest printed.
func QuoteTail(what, path string, off int64) string {
	const max = 2000
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	size := FileSize(path)
	if off > size { // rotated since (package consolelog)
		off = 0
	}
	if size-off > max {
		off = size - max
	}
	b := make([]byte, size-off)
	n, _ := f.ReadAt(b, off)
	s := strings.TrimSpace(string(b[:n]))
	if s == "" {
		return ""
	}
	return "; " + what + ":\n" + termtext.Escape(s)
}
