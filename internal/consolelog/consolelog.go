// Package consolelog keeps a guest's console log bounded: a Writer that
// caps the file and rotates it (one old file kept, path + ".1"), a copier
// process that feeds engine output through it, and a Reader that follows
// the log across rotations.
//
// A guest prints what it likes on its console, as fast as it likes, so the
// file cannot be one the engine appends to directly. The copier is a
// separate process rather than a goroutine of the daemon because engine
// processes outlive the daemon (a restart or upgrade must not stop VMs):
// the engine writes into a pipe held by the copier, which outlives the
// daemon with it and ends when the engine closes its end. Nothing needs
// re-attaching after a restart, and a dead daemon never blocks a guest.
package consolelog

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
)

// DefaultMax is the size at which a console log is rotated: what a
// developer scrolls back through, and 16 MiB of disk per VM at most.
const DefaultMax = 8 << 20

// Writer appends to a log file of at most max bytes; a write that would
// go past max first renames the file to path + ".1" (replacing the older
// one) and starts a new one. It is not safe for concurrent use.
type Writer struct {
	path string
	max  int64
	f    *os.File
	size int64
}

// Open opens path for appending, creating it (mode 0600) if needed.
func Open(path string, max int64) (*Writer, error) {
	if max <= 0 {
		max = DefaultMax
	}
	w := &Writer{path: path, max: max}
	if err := w.open(); err != nil {
		return nil, err
	}
	return w, nil
}

func (w *Writer) open() error {
	f, err := os.OpenFile(w.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return fmt.Errorf("console log: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("console log: %w", err)
	}
	w.f, w.size = f, fi.Size()
	return nil
}

// Write appends p, rotating first if p does not fit. Of a p larger than
// max only its last max bytes are kept (the write still reports len(p)).
func (w *Writer) Write(p []byte) (int, error) {
	n := len(p)
	if int64(len(p)) > w.max {
		p = p[int64(len(p))-w.max:]
	}
	if w.size > 0 && w.size+int64(len(p)) > w.max {
		if err := w.rotate(); err != nil {
			return 0, err
		}
	}
	m, err := w.f.Write(p)
	w.size += int64(m)
	if err != nil {
		return 0, fmt.Errorf("console log: %w", err)
	}
	return n, nil
}

func (w *Writer) rotate() error {
	w.f.Close()
	if err := os.Rename(w.path, OldPath(w.path)); err != nil && !os.IsNotExist(err) {
		// Keep the cap even if the rename fails: start the file again.
		if err := os.Truncate(w.path, 0); err != nil {
			return fmt.Errorf("console log: rotate: %w", err)
		}
	}
	return w.open()
}

// Close closes the file.
func (w *Writer) Close() error { return w.f.Close() }

// OldPath is where the log at path is rotated to.
func OldPath(path string) string { return path + ".1" }

// Tail returns up to the last n bytes of the log at path (the rotated
// file is not read).
func Tail(path string, n int64) ([]byte, error) {
	f, err := os.Open(filepath.Clean(path))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	off := max(fi.Size()-n, 0)
	b := make([]byte, fi.Size()-off)
	k, err := f.ReadAt(b, off)
	if err == io.EOF { // truncated meanwhile
		err = nil
	}
	return b[:k], err
}
