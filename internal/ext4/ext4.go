// Package ext4 builds an ext4 image from a host directory without mounting
// anything and without root: mke2fs copies the directory in, and debugfs
// then sets what the directory could not hold (Fixups).
package ext4

import (
	"context"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/hostcmd"
)

// Fixup is metadata for one inode that the source directory does not hold
// exactly, because an unprivileged user cannot put it on host files: other
// owners, trusted.* and security.* xattrs, or modes that would lock the
// builder out of its own tree. Nil fields leave what mke2fs copied.
type Fixup struct {
	// Path is absolute inside the image, like "/usr/bin/passwd". For a
	// hard-linked inode one path is enough.
	Path string
	UID  *uint32
	GID  *uint32
	// Mode holds the permission and special bits (07777); Build adds the
	// file type bits from the directory.
	Mode *uint32
	// Mtime is in seconds since the epoch. mke2fs copies modification
	// times from the directory except for the root directory's.
	Mtime *int64
	// Xattrs are set in addition to those copied from the directory.
	Xattrs map[string][]byte
}

// Options describes an image to build.
type Options struct {
	Dir    string // source directory
	Output string // image file to create; must not exist
	// SizeBytes is the file system size; zero means AutoSize(ContentBytes).
	// It is rounded up to 4 KiB.
	SizeBytes    int64
	ContentBytes int64 // bytes the content needs, for AutoSize
	// Inodes is the number of inodes the content needs; Build makes at
	// least that many (with some room) when mke2fs's default ratio of one
	// per 16 KiB would give fewer. Zero keeps the default.
	Inodes int64
	Label  string // volume label, at most 16 bytes
	// UUID, when set, makes the layout reproducible (file system UUID and
	// directory hash seed).
	UUID   string
	Fixups []Fixup
}

const (
	gib = 1 << 30
	mib = 1 << 20
)

// AutoSize returns the image size for content of the given size: half as
// much again for metadata, journal and headroom, at least 1 GiB, rounded
// up to 1 MiB. The file is sparse, so unused space costs nothing on the
// host.
func AutoSize(contentBytes int64) int64 {
	size := contentBytes + contentBytes/2
	if size < gib {
		return gib
	}
	return (size + mib - 1) / mib * mib
}

// Build creates o.Output as a sparse ext4 image holding o.Dir, then applies
// o.Fixups in one debugfs run. On any error, cancellation included, the
// output file is removed. A size too small for the content gives an error
// of class errdefs.ErrInvalidArgument.
func Build(ctx context.Context, o Options) (err error) {
	if o.Dir == "" || o.Output == "" {
		return fmt.Errorf("build ext4: directory and output are required: %w", errdefs.ErrInvalidArgument)
	}
	if fi, err := os.Stat(o.Dir); err != nil {
		return fmt.Errorf("build ext4 from %s: %w", o.Dir, err)
	} else if !fi.IsDir() {
		return fmt.Errorf("build ext4 from %s: not a directory: %w", o.Dir, errdefs.ErrInvalidArgument)
	}
	if o.SizeBytes < 0 || o.ContentBytes < 0 || o.Inodes < 0 {
		return fmt.Errorf("build ext4 %s: negative size or count: %w", o.Output, errdefs.ErrInvalidArgument)
	}
	// The script is written first so that a fixup debugfs cannot express
	// fails before any work is done.
	valueDir, err := os.MkdirTemp("", "banger-ext4-fixups-")
	if err != nil {
		return fmt.Errorf("build ext4 %s: %w", o.Output, err)
	}
	defer os.RemoveAll(valueDir)
	script, err := fixupScript(o.Dir, valueDir, o.Fixups)
	if err != nil {
		return fmt.Errorf("build ext4 %s: %w", o.Output, err)
	}

	size := o.SizeBytes
	if size == 0 {
		size = AutoSize(o.ContentBytes)
	}
	size = (size + 4095) / 4096 * 4096

	f, err := os.OpenFile(o.Output, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("build ext4: %w", err)
	}
	defer func() {
		if err != nil {
			os.Remove(o.Output)
		}
	}()
	// Truncating makes the file sparse; mke2fs then writes only metadata
	// and content.
	err = f.Truncate(size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("build ext4 %s: %w", o.Output, err)
	}

	cfg := hostcmd.Mke2fsConfig{
		Dir:       o.Dir,
		Output:    o.Output,
		SizeBytes: size,
		Label:     o.Label,
		Inodes:    inodeCount(size, o.Inodes),
		UUID:      o.UUID,
	}
	if err := hostcmd.Mke2fs(ctx, cfg); err != nil {
		if tooSmall(err) {
			return fmt.Errorf("build ext4 %s: image size %d bytes is too small for the content of %s: pass a larger size: %w: %w",
				o.Output, size, o.Dir, errdefs.ErrInvalidArgument, err)
		}
		return fmt.Errorf("build ext4 %s: %w", o.Output, err)
	}
	if script == "" {
		return nil
	}
	if err := hostcmd.DebugfsScript(ctx, o.Output, true, script); err != nil {
		return fmt.Errorf("build ext4 %s: apply metadata fixups: %w", o.Output, err)
	}
	return nil
}

// inodeCount returns the -N value for mke2fs: zero (mke2fs's default) when
// the default ratio already gives enough inodes for need plus an eighth.
func inodeCount(size, need int64) int64 {
	if need <= 0 {
		return 0
	}
	want := need + need/8 + 64
	if want <= size/16384 {
		return 0
	}
	return want
}

// tooSmall reports whether mke2fs failed because the content did not fit.
func tooSmall(err error) bool {
	msg := err.Error()
	for _, s := range []string{"Could not allocate block", "Could not allocate inode", "No space left", "No free space", "too small"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// fixupScript turns fixups into a debugfs script. Xattr values may be
// binary, so each is written to a file in valueDir and set with ea_set -f.
func fixupScript(dir, valueDir string, fixups []Fixup) (string, error) {
	var b strings.Builder
	nvalues := 0
	for _, f := range fixups {
		p := path.Clean(f.Path)
		if !path.IsAbs(f.Path) || p != f.Path {
			return "", fmt.Errorf("fixup path %q is not absolute and clean: %w", f.Path, errdefs.ErrInvalidArgument)
		}
		q, err := hostcmd.DebugfsQuote(p)
		if err != nil {
			return "", fmt.Errorf("fixup %s: %w: %w", p, err, errdefs.ErrInvalidArgument)
		}
		if f.UID != nil {
			fmt.Fprintf(&b, "set_inode_field %s uid %d\n", q, *f.UID)
		}
		if f.GID != nil {
			fmt.Fprintf(&b, "set_inode_field %s gid %d\n", q, *f.GID)
		}
		if f.Mode != nil {
			// debugfs sets the whole i_mode field, so the type bits must
			// come along; the directory has the same types as the image.
			fi, err := os.Lstat(filepath.Join(dir, filepath.FromSlash(p)))
			if err != nil {
				return "", fmt.Errorf("fixup %s: %w", p, err)
			}
			typ := fileType(fi.Mode())
			if typ == 0 {
				return "", fmt.Errorf("fixup %s: unsupported file type %v", p, fi.Mode().Type())
			}
			fmt.Fprintf(&b, "set_inode_field %s mode 0%o\n", q, typ|(*f.Mode&0o7777))
		}
		if f.Mtime != nil {
			// debugfs writes the classic 32-bit field and no epoch bits.
			t := max(0, min(*f.Mtime, 1<<31-1))
			fmt.Fprintf(&b, "set_inode_field %s mtime @%d\n", q, t)
		}
		names := make([]string, 0, len(f.Xattrs))
		for k := range f.Xattrs {
			names = append(names, k)
		}
		sort.Strings(names)
		for _, k := range names {
			qk, err := hostcmd.DebugfsQuote(k)
			if err != nil || k == "" {
				return "", fmt.Errorf("fixup %s: xattr name %q cannot be expressed: %w", p, k, errdefs.ErrInvalidArgument)
			}
			vp := filepath.Join(valueDir, strconv.Itoa(nvalues))
			nvalues++
			if err := os.WriteFile(vp, f.Xattrs[k], 0o600); err != nil {
				return "", err
			}
			qv, err := hostcmd.DebugfsQuote(vp)
			if err != nil {
				return "", err
			}
			fmt.Fprintf(&b, "ea_set -f %s %s %s\n", qv, q, qk)
		}
	}
	script := b.String()
	for line := range strings.Lines(script) {
		// debugfs reads a script with a BUFSIZ (8 KiB) line buffer and
		// would split a longer line into two broken commands.
		if len(line) > maxScriptLine {
			return "", fmt.Errorf("fixup command %.80q…: longer than debugfs's %d-byte line limit: %w",
				line, maxScriptLine, errdefs.ErrInvalidArgument)
		}
	}
	return script, nil
}

// maxScriptLine is the longest debugfs script line, newline included,
// that debugfs reads whole.
const maxScriptLine = 8000

// fileType returns the S_IFMT bits for m, or 0 for a type ext4 images
// built here do not hold.
func fileType(m os.FileMode) uint32 {
	switch m.Type() {
	case 0:
		return 0o100000
	case os.ModeDir:
		return 0o040000
	case os.ModeSymlink:
		return 0o120000
	case os.ModeNamedPipe:
		return 0o010000
	case os.ModeSocket:
		return 0o140000
	case os.ModeDevice | os.ModeCharDevice:
		return 0o020000
	case os.ModeDevice:
		return 0o060000
	}
	return 0
}
