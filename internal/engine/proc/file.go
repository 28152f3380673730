package proc

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/bangervm/banger/internal/engine"
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

// SyncFile flushes path to disk (EINVAL, a file system without fsync, is
// not an error).
func SyncFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) {
		return fmt.Errorf("sync %s: %w", path, err)
	}
	return nil
}

// CheckTemplate refuses a template (see engine.Templater) whose device
// state file is missing or empty, or whose memory file is missing or not
// memoryMiB in size (a template of another shape would otherwise fail deep
// inside the engine, or worse, load). Its errors match
// engine.ErrBadTemplate.
func CheckTemplate(mem, state string, memoryMiB int) error {
	if st, err := os.Stat(state); err != nil || !st.Mode().IsRegular() || st.Size() == 0 {
		return fmt.Errorf("no device state %s: %w", state, engine.ErrBadTemplate)
	}
	mt, err := os.Stat(mem)
	if err != nil || !mt.Mode().IsRegular() {
		return fmt.Errorf("no memory file %s: %w", mem, engine.ErrBadTemplate)
	}
	if want := int64(memoryMiB) << 20; mt.Size() != want {
		return fmt.Errorf("memory file %s is %d bytes, the VM has %d: %w", mem, mt.Size(), want, engine.ErrBadTemplate)
	}
	return nil
}

// CopySparse copies all of in to out (empty, open for writing), leaving
// holes where in has zero blocks: a guest's memory is mostly untouched.
func CopySparse(out *os.File, in io.ReaderAt) error {
	r := io.NewSectionReader(in, 0, 1<<62)
	buf := make([]byte, 1<<20)
	var off int64
	for {
		n, rerr := io.ReadFull(r, buf)
		if n > 0 && !allZero(buf[:n]) {
			if _, err := out.WriteAt(buf[:n], off); err != nil {
				return err
			}
		}
		off += int64(n)
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			return rerr
		}
	}
	return out.Truncate(off)
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
