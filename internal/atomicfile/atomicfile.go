// Package atomicfile replaces a file in one step: the new content goes to
// a new temporary file in the target's directory, is synced, and is
// renamed over the target, so readers see the old file or the whole new
// one, never a part, and a failure leaves the old file as it was.
//
// Nothing is written through a symbolic link: the temporary file is
// created with O_EXCL|O_NOFOLLOW under a fresh random name, and a symlink
// planted at the target is itself replaced by the rename, not followed.
package atomicfile

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// File is a replacement for a target file, being written. Write to it,
// then Commit; Close without Commit removes it and leaves the target
// alone. Close after Commit does nothing, so `defer f.Close()` is always
// right.
type File struct {
	*os.File
	target string
	done   bool
}

// Create starts a replacement for target with permission bits perm (less
// the umask). The file is open for reading too, so a caller can check
// what it wrote before committing.
func Create(target string, perm fs.FileMode) (*File, error) {
	dir, base := filepath.Split(target)
	if base == "" {
		return nil, fmt.Errorf("write %s: not a file name", target)
	}
	if dir == "" {
		dir = "."
	}
	for range 100 {
		var r [8]byte
		if _, err := rand.Read(r[:]); err != nil {
			return nil, fmt.Errorf("write %s: %w", target, err)
		}
		tmp := filepath.Join(dir, "."+base+".tmp-"+hex.EncodeToString(r[:]))
		f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, perm)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("write %s: %w", target, err)
		}
		return &File{File: f, target: target}, nil
	}
	return nil, fmt.Errorf("write %s: no free temporary name in %s", target, dir)
}

// Commit syncs the file and renames it over the target, then syncs the
// directory so the rename survives a crash. On error the target is as it
// was and the temporary file is gone.
func (f *File) Commit() error {
	if f.done {
		return fmt.Errorf("write %s: already committed or closed", f.target)
	}
	f.done = true
	tmp := f.Name()
	err := f.File.Sync()
	if cerr := f.File.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, f.target)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", f.target, err)
	}
	if d, err := os.Open(filepath.Dir(f.target)); err == nil {
		d.Sync() // best effort: the data is in place either way
		d.Close()
	}
	return nil
}

// Close abandons the file unless it was committed: it is closed and
// removed, and the target is left alone.
func (f *File) Close() error {
	if f.done {
		return nil
	}
	f.done = true
	err := f.File.Close()
	if rerr := os.Remove(f.Name()); err == nil {
		err = rerr
	}
	return err
}
