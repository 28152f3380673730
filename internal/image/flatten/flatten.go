// Package flatten applies OCI image layers, oldest first, onto a host
// directory as an unprivileged user, recording as ext4 fixups the metadata
// that the directory cannot hold.
//
// Layers follow the OCI image spec's change sets: whiteouts (.wh.NAME)
// delete lower-layer paths, an opaque marker (.wh..wh..opq) hides every
// lower-layer child of its directory, and a later entry replaces an
// earlier one of any type. Entries are never written outside the root or
// through a symbolic link: every parent component is opened with
// O_NOFOLLOW relative to its parent's descriptor.
package flatten

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/ext4"
	"github.com/bangervm/banger/internal/untar"
)

const (
	whiteoutPrefix = ".wh."
	// whiteoutMeta prefixes AUFS bookkeeping files, which carry no content.
	whiteoutMeta = ".wh..wh."
	opaqueMarker = ".wh..wh..opq"
	xattrPrefix  = "SCHILY.xattr."
)

// EntryError names a hostile or invalid tar entry. It wraps
// errdefs.ErrInvalidArgument.
type EntryError struct {
	Layer  int    // index of the layer, 0 for the oldest
	Entry  string // entry name as it appears in the tar
	Reason string
}

func (e *EntryError) Error() string {
	return fmt.Sprintf("layer %d: entry %q: %s", e.Layer, e.Entry, e.Reason)
}

// Unwrap returns errdefs.ErrInvalidArgument.
func (e *EntryError) Unwrap() error { return errdefs.ErrInvalidArgument }

// Tree is a root filesystem being assembled in a host directory. Call
// Apply once per layer, oldest first, then read ContentSize, Inodes and
// Fixups to build the image. After Apply fails the directory is in an
// unspecified state and should be discarded with the Tree. A Tree is not
// safe for concurrent use.
type Tree struct {
	root   string
	rootFD int
	top    *node
	layer  int // index of the layer being applied
	euid   int
	egid   int
	// chown is false to behave as an unprivileged user even when running
	// as root, so tests can exercise the fixup path.
	chown   bool
	skipped int
	dirty   map[*node]struct{} // directories whose mtime must be restored

	// The last parent directory an entry was written in, kept open:
	// entries of a layer come grouped by directory. It is used only while
	// its node is still attached, that is, never after the directory was
	// removed from the tree. The descriptor is closed only when another
	// replaces it at the start of an entry, or when the layer ends.
	dirFD   int
	dirRel  string
	dirNode *node
	// inherit is set when a new file may get xattrs it was not given (a
	// default ACL, or a root directory that already carries xattrs): new
	// files then have their xattrs listed and pruned like existing ones.
	inherit bool
	buf     []byte // copy buffer for file content

	// trashFD, when not -1, is a directory outside the root on the same
	// file system: what a layer removes is renamed into it rather than
	// deleted (see Discard).
	trashFD int
	trashN  int
}

const copyBuffer = 1 << 20

// node is one path in the tree.
type node struct {
	name     string
	parent   *node            // nil for the root and for removed nodes
	children map[string]*node // non-nil for directories
	layer    int              // layer that last declared this path
	touched  int              // last layer that declared this path or a descendant
	ino      *inode
}

type kind uint8

const (
	kindFile kind = iota
	kindDir
	kindSymlink
)

// inode is what hard links share: the wanted metadata and what of it the
// host file does not hold.
type inode struct {
	kind   kind
	size   int64 // file content or symlink target length
	uid    int
	gid    int
	mode   uint32 // permission and special bits
	mtime  time.Time
	xattrs int64 // bytes of xattr names and values, for sizing
	// links counts the paths recorded for the inode. It may count too
	// many (paths below a removed directory are not counted down), never
	// too few: a file with one link can be rewritten in place.
	links int

	ownerFix bool
	modeFix  bool
	xattrFix map[string][]byte
}

// New returns a Tree that assembles a filesystem in root, which must be an
// existing empty directory.
func New(root string) (*Tree, error) {
	fd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open root %s: %w", root, err)
	}
	names, err := readDirNames(fd)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("read root %s: %w", root, err)
	}
	if len(names) > 0 {
		unix.Close(fd)
		return nil, fmt.Errorf("root %s is not empty: %w", root, errdefs.ErrInvalidArgument)
	}
	t := &Tree{
		root:   root,
		rootFD: fd,
		layer:  -1,
		euid:   os.Geteuid(),
		egid:   os.Getegid(),
		chown:  true,
		dirty:  map[*node]struct{}{},
		dirFD:  -1,

		trashFD: -1,
	}
	if sz, err := unix.Flistxattr(fd, nil); err != nil || sz > 0 {
		t.inherit = true
	}
	// An image without a "./" entry still has a root owned by root.
	t.top = &node{
		children: map[string]*node{},
		layer:    -1,
		touched:  -1,
		ino:      &inode{kind: kindDir, mode: 0o755, mtime: time.Unix(0, 0)},
	}
	return t, nil
}

// Close releases the root directory descriptor. The directory itself is
// left for the caller.
func (t *Tree) Close() error {
	if t.rootFD < 0 {
		return nil
	}
	t.dropDirCache()
	if t.trashFD >= 0 {
		unix.Close(t.trashFD)
		t.trashFD = -1
	}
	err := unix.Close(t.rootFD)
	t.rootFD = -1
	return err
}

// Discard makes the Tree move what later layers replace or delete into
// dir, an existing directory outside the root on the same file system,
// instead of deleting it; the caller removes dir once the image is built.
// Deleting while the tree is being filled is what costs: on ext4 without
// a journal every inode created after an unlink scans past the inodes
// freed in the last seconds, and a whited-out directory is one rename
// rather than a walk that unlinks each file below it.
func (t *Tree) Discard(dir string) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open discard directory %s: %w", dir, err)
	}
	if t.trashFD >= 0 {
		unix.Close(t.trashFD)
	}
	t.trashFD = fd
	return nil
}

// Skipped returns how many device nodes and fifos were left out.
func (t *Tree) Skipped() int { return t.skipped }

// Apply applies one uncompressed layer tar. Layers must be applied oldest
// first. Cancelling ctx stops Apply between entries.
func (t *Tree) Apply(ctx context.Context, layer io.Reader) error {
	if t.rootFD < 0 {
		return errors.New("apply layer: tree is closed")
	}
	t.layer++
	defer t.dropDirCache()
	tr := tar.NewReader(layer)
	for {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("apply layer %d: %w", t.layer, err)
		}
		hdr, err := tr.Next()
		if errors.Is(err, tar.ErrInsecurePath) && hdr != nil {
			// Our own checks below are stricter and name the entry.
			err = nil
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			if errors.Is(err, tar.ErrHeader) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, tar.ErrFieldTooLong) {
				return fmt.Errorf("apply layer %d: read tar: %w: %w", t.layer, err, errdefs.ErrInvalidArgument)
			}
			return fmt.Errorf("apply layer %d: read tar: %w", t.layer, err)
		}
		if err := t.entry(hdr, tr); err != nil {
			return err
		}
	}
	return t.restoreDirTimes()
}

// entryErr returns an EntryError for hdr in the current layer.
func (t *Tree) entryErr(hdr *tar.Header, format string, args ...any) error {
	return &EntryError{Layer: t.layer, Entry: hdr.Name, Reason: fmt.Sprintf(format, args...)}
}

// cleanName turns a tar name into a clean relative path, "." for the root,
// refusing absolute names and names that climb out with "..".
func cleanName(name string) (string, error) {
	if name == "" {
		return "", errors.New("empty name")
	}
	if strings.IndexByte(name, 0) >= 0 {
		return "", errors.New("name contains NUL")
	}
	if strings.HasPrefix(name, "/") {
		return "", errors.New("absolute name")
	}
	p := path.Clean(name)
	if p == ".." || strings.HasPrefix(p, "../") {
		return "", errors.New("name escapes the root")
	}
	return p, nil
}

func (t *Tree) entry(hdr *tar.Header, r io.Reader) error {
	name, err := cleanName(hdr.Name)
	if err != nil {
		return t.entryErr(hdr, "%v", err)
	}
	dir, base := path.Split(name)
	dir = strings.TrimSuffix(dir, "/")
	if dir == "" {
		dir = "."
	}

	switch hdr.Typeflag {
	case tar.TypeXGlobalHeader:
		return nil
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		// The daemon cannot create device nodes; the guest's devtmpfs
		// provides them. What the layer replaced is still gone.
		t.skipped++
		if name == "." {
			return t.entryErr(hdr, "root is not a directory")
		}
		return t.removeEntry(hdr, dir, base)
	}

	if strings.HasPrefix(name, whiteoutMeta) && name != opaqueMarker {
		// AUFS keeps its bookkeeping (.wh..wh.plnk and the like) at the
		// top level; none of it belongs in the image.
		return nil
	}
	if strings.HasPrefix(base, whiteoutPrefix) {
		return t.whiteout(hdr, dir, base)
	}

	if name == "." {
		if hdr.Typeflag != tar.TypeDir {
			return t.entryErr(hdr, "root is not a directory")
		}
		t.top.layer, t.top.touched = t.layer, t.layer
		if err := t.setMeta(hdr, t.rootFD, ".", t.top, -1, false, nil); err != nil {
			return err
		}
		t.dirty[t.top] = struct{}{}
		return nil
	}

	pfd, parent, err := t.walkCached(hdr, dir, true)
	if err != nil {
		return err
	}
	t.dirty[parent] = struct{}{}

	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeRegA, tar.TypeGNUSparse, tar.TypeCont:
		return t.file(hdr, r, pfd, parent, base)
	case tar.TypeDir:
		return t.dir(hdr, pfd, parent, base)
	case tar.TypeSymlink:
		return t.symlink(hdr, pfd, parent, base)
	case tar.TypeLink:
		return t.hardlink(hdr, pfd, parent, base)
	default:
		return t.entryErr(hdr, "unsupported entry type %q", hdr.Typeflag)
	}
}

// closeDir closes a descriptor from walk, which may be the root's or the
// cached one.
func (t *Tree) closeDir(fd int) {
	if fd != t.rootFD && fd != t.dirFD {
		unix.Close(fd)
	}
}

// walkCached is walk for the start of an entry, when no other directory
// descriptor is in use: the directory it returns becomes the cached one,
// and must not be closed by the caller.
func (t *Tree) walkCached(hdr *tar.Header, rel string, create bool) (int, *node, error) {
	fd, n, err := t.walk(hdr, rel, create)
	if err != nil || fd == t.rootFD || fd == t.dirFD {
		return fd, n, err
	}
	t.dropDirCache()
	t.dirFD, t.dirRel, t.dirNode = fd, rel, n
	return fd, n, nil
}

func (t *Tree) dropDirCache() {
	if t.dirFD >= 0 {
		unix.Close(t.dirFD)
	}
	t.dirFD, t.dirRel, t.dirNode = -1, "", nil
}

// walk opens the directory rel (a clean relative path, "." for the root)
// one component at a time, each relative to its parent with O_NOFOLLOW, so
// that no symbolic link is ever followed. With create, missing components
// are made as directories owned by root with mode 0755, as a layer without
// its parent directory entries implies. It returns the directory's
// descriptor (close with closeDir) and node.
func (t *Tree) walk(hdr *tar.Header, rel string, create bool) (int, *node, error) {
	fd, n := t.rootFD, t.top
	if rel == "." {
		return fd, n, nil
	}
	if t.dirFD >= 0 && rel == t.dirRel && t.dirNode.attached(t.top) {
		if create {
			for m := t.dirNode; m != t.top; m = m.parent {
				m.touched = t.layer
			}
		}
		return t.dirFD, t.dirNode, nil
	}
	for _, c := range strings.Split(rel, "/") {
		child, err := unix.Openat(fd, c, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if errors.Is(err, unix.ENOENT) && create {
			if err = unix.Mkdirat(fd, c, 0o700); err == nil {
				cn := &node{name: c, parent: n, children: map[string]*node{}, layer: t.layer,
					ino: &inode{kind: kindDir, mode: 0o755, mtime: hdr.ModTime}}
				n.children[c] = cn
				t.dirty[n] = struct{}{}
				t.dirty[cn] = struct{}{}
				implicit := &tar.Header{Name: c, Typeflag: tar.TypeDir, Mode: 0o755, ModTime: hdr.ModTime}
				child, err = unix.Openat(fd, c, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
				if err == nil {
					if err := t.setMeta(implicit, fd, c, cn, child, true, nil); err != nil {
						unix.Close(child)
						t.closeDir(fd)
						return -1, nil, err
					}
				}
			}
		}
		if err != nil {
			t.closeDir(fd)
			switch {
			case errors.Is(err, unix.ELOOP):
				return -1, nil, t.entryErr(hdr, "parent %q is a symbolic link", c)
			case errors.Is(err, unix.ENOTDIR):
				return -1, nil, t.entryErr(hdr, "parent %q is not a directory", c)
			case errors.Is(err, unix.ENOENT):
				return -1, nil, errNotExist
			case errors.Is(err, unix.ENAMETOOLONG):
				return -1, nil, t.entryErr(hdr, "name component too long")
			}
			return -1, nil, fmt.Errorf("layer %d: entry %q: open %s: %w", t.layer, hdr.Name, c, err)
		}
		t.closeDir(fd)
		fd = child
		cn := n.children[c]
		if cn == nil || cn.children == nil {
			// The disk and the record disagree: only possible if someone
			// else writes in the tree.
			unix.Close(fd)
			return -1, nil, fmt.Errorf("layer %d: entry %q: %s changed outside the tree", t.layer, hdr.Name, c)
		}
		n = cn
		if create {
			n.touched = t.layer
		}
	}
	return fd, n, nil
}

var errNotExist = errors.New("does not exist")

// whiteout handles .wh.NAME and the opaque marker.
func (t *Tree) whiteout(hdr *tar.Header, dir, base string) error {
	if base == opaqueMarker {
		fd, d, err := t.walkCached(hdr, dir, true)
		if err != nil {
			return err
		}
		t.dirty[d] = struct{}{}
		return t.opaque(hdr, fd, d)
	}
	if strings.HasPrefix(base, whiteoutMeta) {
		return nil
	}
	target := strings.TrimPrefix(base, whiteoutPrefix)
	if target == "" || target == "." || target == ".." {
		return t.entryErr(hdr, "whiteout names nothing")
	}
	fd, d, err := t.walkCached(hdr, dir, false)
	if errors.Is(err, errNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	c := d.children[target]
	// A whiteout hides lower layers only, never entries of its own layer.
	if c == nil || c.layer >= t.layer {
		return nil
	}
	t.dirty[d] = struct{}{}
	return t.remove(hdr, fd, c)
}

// opaque removes every child of d that no entry of this layer declared,
// keeping directories that hold something this layer declared.
func (t *Tree) opaque(hdr *tar.Header, fd int, d *node) error {
	for _, name := range sortedNames(d) {
		c := d.children[name]
		if c.touched < t.layer {
			if err := t.remove(hdr, fd, c); err != nil {
				return err
			}
			t.dirty[d] = struct{}{}
			continue
		}
		if c.children == nil {
			continue
		}
		cfd, err := unix.Openat(fd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("layer %d: entry %q: open %s: %w", t.layer, hdr.Name, name, err)
		}
		err = t.opaque(hdr, cfd, c)
		unix.Close(cfd)
		if err != nil {
			return err
		}
	}
	return nil
}

// removeEntry removes whatever is at dir/base, for an entry that replaces
// it with something the tree cannot hold.
func (t *Tree) removeEntry(hdr *tar.Header, dir, base string) error {
	fd, d, err := t.walkCached(hdr, dir, true)
	if err != nil {
		return err
	}
	if c := d.children[base]; c != nil {
		t.dirty[d] = struct{}{}
		return t.remove(hdr, fd, c)
	}
	return nil
}

// remove deletes n, a child of the directory open as fd, from disk and
// from the record.
func (t *Tree) remove(hdr *tar.Header, fd int, n *node) error {
	if err := t.discardAt(fd, n.name); err != nil {
		return fmt.Errorf("layer %d: entry %q: remove %s: %w", t.layer, hdr.Name, n.name, err)
	}
	delete(n.parent.children, n.name)
	n.parent = nil
	n.ino.links--
	return nil
}

// discardAt moves name in the directory fd into the discard directory,
// or removes it when there is none or the rename is refused.
func (t *Tree) discardAt(fd int, name string) error {
	if t.trashFD >= 0 {
		err := unix.Renameat2(fd, name, t.trashFD, strconv.Itoa(t.trashN), unix.RENAME_NOREPLACE)
		t.trashN++
		if err == nil || errors.Is(err, unix.ENOENT) {
			return nil
		}
	}
	return removeAt(fd, name)
}

// removeAt removes name in the directory fd and, for a directory,
// everything below it, without following symbolic links.
func removeAt(fd int, name string) error {
	err := unix.Unlinkat(fd, name, 0)
	if err == nil || errors.Is(err, unix.ENOENT) {
		return nil
	}
	if !errors.Is(err, unix.EISDIR) && !errors.Is(err, unix.EPERM) {
		return err
	}
	dfd, err := unix.Openat(fd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	names, err := readDirNames(dfd)
	if err == nil {
		for _, c := range names {
			if err = removeAt(dfd, c); err != nil {
				break
			}
		}
	}
	unix.Close(dfd)
	if err != nil {
		return err
	}
	return unix.Unlinkat(fd, name, unix.AT_REMOVEDIR)
}

// readDirNames lists the directory open as fd, leaving fd open.
func readDirNames(fd int) ([]string, error) {
	dup, err := unix.Openat(fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(dup), "dir")
	defer f.Close()
	return f.Readdirnames(-1)
}

// replace makes room for a new entry base in parent: it removes what is
// there unless keepDir is set and it is a directory, which is then
// returned to be updated in place.
func (t *Tree) replace(hdr *tar.Header, pfd int, parent *node, base string, keepDir bool) (*node, error) {
	c := parent.children[base]
	if c == nil {
		return nil, nil
	}
	if keepDir && c.children != nil {
		return c, nil
	}
	return nil, t.remove(hdr, pfd, c)
}

// add records a new child of parent.
func (t *Tree) add(parent *node, base string, ino *inode, dir bool) *node {
	n := &node{name: base, parent: parent, layer: t.layer, touched: t.layer, ino: ino}
	if dir {
		n.children = map[string]*node{}
	}
	parent.children[base] = n
	ino.links++
	return n
}

func (t *Tree) file(hdr *tar.Header, r io.Reader, pfd int, parent *node, base string) error {
	fd, created, err := t.openFile(hdr, pfd, parent, base)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := t.copyContent(hdr, fd, r); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("layer %d: entry %q: truncated content: %w: %w", t.layer, hdr.Name, err, errdefs.ErrInvalidArgument)
		}
		return fmt.Errorf("layer %d: entry %q: write: %w", t.layer, hdr.Name, err)
	}
	n := t.add(parent, base, &inode{kind: kindFile}, false)
	var st unix.Stat_t
	if err := t.setMeta(hdr, pfd, base, n, fd, created, &st); err != nil {
		return err
	}
	// Size by the blocks the host allocated, which leaves out holes, as
	// mke2fs does when it copies the file.
	n.ino.size = st.Blocks * 512
	return nil
}

// openFile opens base in parent for a file entry's content. A regular
// file that no other path links to is truncated and written again in
// place: a layer overwriting a lower layer's file then costs no new inode
// and no unlink. Anything else is replaced by a new file. created says
// which it was.
func (t *Tree) openFile(hdr *tar.Header, pfd int, parent *node, base string) (fd int, created bool, err error) {
	if c := parent.children[base]; c != nil && c.ino.kind == kindFile && c.ino.links == 1 {
		// Opening for writing may be refused (an unprivileged builder
		// and a read-only mode); the file is then replaced.
		fd, err := unix.Openat(pfd, base, unix.O_WRONLY|unix.O_TRUNC|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err == nil {
			delete(parent.children, base)
			c.parent = nil
			return fd, false, nil
		}
	}
	if _, err := t.replace(hdr, pfd, parent, base, false); err != nil {
		return -1, false, err
	}
	fd, err = unix.Openat(pfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return -1, false, t.createErr(hdr, err)
	}
	return fd, true, nil
}

// fdWriter writes to and seeks a file descriptor it does not own.
type fdWriter int

func (w fdWriter) Write(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		m, err := unix.Write(int(w), p[n:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return n, err
		}
		if m == 0 {
			return n, io.ErrShortWrite
		}
		n += m
	}
	return n, nil
}

func (w fdWriter) Seek(off int64, whence int) (int64, error) {
	return unix.Seek(int(w), off, whence)
}

// copyContent writes the entry's content r to the new file fd.
func (t *Tree) copyContent(hdr *tar.Header, fd int, r io.Reader) error {
	if untar.Sparse(hdr) {
		// io.Copy hands f to the tar reader's WriteTo, which seeks over
		// the holes of sparse entries instead of writing zeros.
		_, err := io.Copy(fdWriter(fd), r)
		return err
	}
	if t.buf == nil {
		t.buf = make([]byte, copyBuffer)
	}
	w := fdWriter(fd)
	for {
		// Fill the buffer first: fewer, larger writes.
		n := 0
		var err error
		for n < len(t.buf) && err == nil {
			var m int
			m, err = r.Read(t.buf[n:])
			n += m
		}
		if _, werr := w.Write(t.buf[:n]); werr != nil {
			return werr
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func (t *Tree) dir(hdr *tar.Header, pfd int, parent *node, base string) error {
	n, err := t.replace(hdr, pfd, parent, base, true)
	if err != nil {
		return err
	}
	created := n == nil
	if created {
		if err := unix.Mkdirat(pfd, base, 0o700); err != nil {
			return t.createErr(hdr, err)
		}
		n = t.add(parent, base, &inode{kind: kindDir}, true)
	}
	n.layer, n.touched = t.layer, t.layer
	t.dirty[n] = struct{}{}
	fd, err := unix.Openat(pfd, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("layer %d: entry %q: open: %w", t.layer, hdr.Name, err)
	}
	defer unix.Close(fd)
	return t.setMeta(hdr, pfd, base, n, fd, created, nil)
}

func (t *Tree) symlink(hdr *tar.Header, pfd int, parent *node, base string) error {
	if _, err := t.replace(hdr, pfd, parent, base, false); err != nil {
		return err
	}
	if hdr.Linkname == "" || strings.IndexByte(hdr.Linkname, 0) >= 0 {
		return t.entryErr(hdr, "invalid symbolic link target %q", hdr.Linkname)
	}
	if err := unix.Symlinkat(hdr.Linkname, pfd, base); err != nil {
		return t.createErr(hdr, err)
	}
	n := t.add(parent, base, &inode{kind: kindSymlink, size: int64(len(hdr.Linkname))}, false)
	return t.setMeta(hdr, pfd, base, n, -1, true, nil)
}

func (t *Tree) hardlink(hdr *tar.Header, pfd int, parent *node, base string) error {
	target, err := cleanName(hdr.Linkname)
	if err != nil {
		return t.entryErr(hdr, "hard link target %q: %v", hdr.Linkname, err)
	}
	if target == "." {
		return t.entryErr(hdr, "hard link to the root")
	}
	tdir, tbase := path.Split(target)
	tdir = strings.TrimSuffix(tdir, "/")
	if tdir == "" {
		tdir = "."
	}
	tfd, tparent, err := t.walk(hdr, tdir, false)
	if errors.Is(err, errNotExist) {
		return t.entryErr(hdr, "hard link target %q does not exist", hdr.Linkname)
	}
	if err != nil {
		return err
	}
	defer t.closeDir(tfd)
	tn := tparent.children[tbase]
	if tn == nil {
		return t.entryErr(hdr, "hard link target %q does not exist", hdr.Linkname)
	}
	if tn.children != nil {
		return t.entryErr(hdr, "hard link target %q is a directory", hdr.Linkname)
	}
	if tn == parent.children[base] {
		// A link to itself: nothing to create.
		return t.setMeta(hdr, pfd, base, tn, -1, false, nil)
	}
	if _, err := t.replace(hdr, pfd, parent, base, false); err != nil {
		return err
	}
	if !tn.attached(t.top) {
		return t.entryErr(hdr, "hard link target %q was removed by the entry it replaces", hdr.Linkname)
	}
	// Without AT_SYMLINK_FOLLOW a link to a symbolic link links the
	// symbolic link itself.
	if err := unix.Linkat(tfd, tbase, pfd, base, 0); err != nil {
		return t.createErr(hdr, err)
	}
	n := t.add(parent, base, tn.ino, false)
	// Like containerd and Docker, the link entry's metadata applies to
	// the shared inode.
	return t.setMeta(hdr, pfd, base, n, -1, false, nil)
}

// createErr wraps an error creating an entry; names the host refuses are
// the entry's fault.
func (t *Tree) createErr(hdr *tar.Header, err error) error {
	if errors.Is(err, unix.ENAMETOOLONG) || errors.Is(err, unix.EINVAL) {
		return t.entryErr(hdr, "%v", err)
	}
	return fmt.Errorf("layer %d: entry %q: create: %w", t.layer, hdr.Name, err)
}

// diskMode is the mode kept on the host while building: the builder must
// be able to read every file (mke2fs copies it) and to enter and change
// every directory. The real mode becomes a fixup when it differs.
func diskMode(k kind, mode uint32) uint32 {
	switch k {
	case kindDir:
		return mode | 0o700
	case kindFile:
		return mode | 0o400
	}
	return mode
}

// setMeta records the wanted metadata of hdr on n's inode and puts on the
// host file (base in the directory pfd) as much of it as the host accepts.
// What the host ends up not holding exactly is marked for a fixup, judged
// by reading the file back rather than by guessing from our privileges.
//
// fd, when not -1, is the file or directory already open; created says
// that this entry just made it, so it has no xattrs of its own. When st is
// not nil it receives the file's final status.
func (t *Tree) setMeta(hdr *tar.Header, pfd int, base string, n *node, fd int, created bool, st *unix.Stat_t) error {
	if hdr.Uid < 0 || hdr.Gid < 0 || hdr.Uid > 1<<32-2 || hdr.Gid > 1<<32-2 {
		return t.entryErr(hdr, "invalid owner %d:%d", hdr.Uid, hdr.Gid)
	}
	ino := n.ino
	ino.uid, ino.gid = hdr.Uid, hdr.Gid
	ino.mode = uint32(hdr.Mode) & 0o7777
	if ino.kind == kindSymlink {
		ino.mode = 0o777
	}
	ino.mtime = hdr.ModTime
	var wanted map[string][]byte
	for k, v := range hdr.PAXRecords {
		if name, ok := strings.CutPrefix(k, xattrPrefix); ok && name != "" {
			if wanted == nil {
				wanted = map[string][]byte{}
			}
			wanted[name] = []byte(v)
			if name == "system.posix_acl_default" {
				// Files made below this directory inherit ACLs.
				t.inherit = true
			}
		}
	}

	// A hard link entry adds xattrs to the inode it shares: tar writers
	// do not always repeat them, and dropping a binary's
	// security.capability for that would be wrong.
	link := hdr.Typeflag == tar.TypeLink
	if !link {
		ino.xattrFix = nil
		ino.xattrs = 0
	}
	if ino.kind == kindSymlink || n == t.top {
		// Linux refuses user.* xattrs on symbolic links, and mke2fs does
		// not copy the root directory's: debugfs sets them all.
		for k, v := range wanted {
			ino.addXattrFix(k, v)
		}
	}
	if fd < 0 && ino.kind != kindSymlink {
		var err error
		fd, err = unix.Openat(pfd, base, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
		if err != nil {
			return fmt.Errorf("layer %d: entry %q: open: %w", t.layer, hdr.Name, err)
		}
		defer unix.Close(fd)
	}
	var stat unix.Stat_t
	if st == nil {
		st = &stat
	}
	// Ownership is set only when the file may not already have it; the
	// status read back says whether it has, and if the guess was wrong
	// (a set-group-ID parent, an existing file) it is set after all.
	chown := t.chown && (hdr.Uid != t.euid || hdr.Gid != t.egid)
	for {
		if err := t.putMeta(hdr, pfd, base, n, fd, created, link, wanted, chown, st); err != nil {
			return err
		}
		ino.ownerFix = int(st.Uid) != hdr.Uid || int(st.Gid) != hdr.Gid
		if !ino.ownerFix || chown || !t.chown {
			break
		}
		chown = true
	}
	ino.modeFix = ino.kind != kindSymlink && st.Mode&0o7777 != ino.mode
	for k, v := range wanted {
		ino.xattrs += int64(len(k) + len(v))
	}
	return nil
}

// putMeta sets owner (with chown), xattrs, mode and times on the host
// file, then reads its status into st.
func (t *Tree) putMeta(hdr *tar.Header, pfd int, base string, n *node, fd int, created, link bool, wanted map[string][]byte, chown bool, st *unix.Stat_t) error {
	ino := n.ino
	if ino.kind == kindSymlink {
		if chown {
			_ = unix.Fchownat(pfd, base, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW)
		}
		if err := unix.UtimesNanoAt(pfd, base, times(hdr), unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("layer %d: entry %q: set times: %w", t.layer, hdr.Name, err)
		}
		if err := unix.Fstatat(pfd, base, st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("layer %d: entry %q: stat: %w", t.layer, hdr.Name, err)
		}
		return nil
	}
	if chown {
		// Ownership first: chown clears setuid and setgid bits.
		_ = unix.Fchown(fd, hdr.Uid, hdr.Gid)
	}
	var err error
	if n == t.top {
		err = unix.Fchmod(fd, diskMode(ino.kind, ino.mode))
	} else {
		// A new file has no xattrs to drop unless it inherited some.
		err = t.setFileMeta(fd, ino, wanted, !link && (!created || t.inherit))
	}
	if err != nil {
		return fmt.Errorf("layer %d: entry %q: %w", t.layer, hdr.Name, err)
	}
	// Directory times are set again when the layer is done, since
	// adding children changes them.
	if err := futimens(fd, times(hdr)); err != nil {
		return fmt.Errorf("layer %d: entry %q: set times: %w", t.layer, hdr.Name, err)
	}
	if err := unix.Fstat(fd, st); err != nil {
		return fmt.Errorf("layer %d: entry %q: stat: %w", t.layer, hdr.Name, err)
	}
	return nil
}

// futimens sets the times of the open file fd.
func futimens(fd int, ts []unix.Timespec) error {
	for {
		_, _, e := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(&ts[0])), 0, 0, 0)
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return e
		}
		return nil
	}
}

// setFileMeta sets xattrs and mode on the open file or directory fd. With
// prune, xattrs the file has but wanted lacks are removed.
func (t *Tree) setFileMeta(fd int, ino *inode, wanted map[string][]byte, prune bool) error {
	// A directory declared again replaces its xattrs; drop the old ones.
	if prune {
		if old, err := listXattrs(fd); err == nil {
			for _, k := range old {
				if _, keep := wanted[k]; !keep {
					_ = unix.Fremovexattr(fd, k)
				}
			}
		}
	}
	for k, v := range wanted {
		if err := unix.Fsetxattr(fd, k, v, 0); err != nil {
			ino.addXattrFix(k, v)
		} else {
			delete(ino.xattrFix, k)
		}
	}
	// Mode last: setting a POSIX ACL xattr rewrites the group bits.
	if err := unix.Fchmod(fd, diskMode(ino.kind, ino.mode)); err != nil {
		return fmt.Errorf("chmod: %w", err)
	}
	return nil
}

func (ino *inode) addXattrFix(k string, v []byte) {
	if ino.xattrFix == nil {
		ino.xattrFix = map[string][]byte{}
	}
	ino.xattrFix[k] = v
}

// listXattrs returns the xattr names of fd.
func listXattrs(fd int) ([]string, error) {
	sz, err := unix.Flistxattr(fd, nil)
	if err != nil || sz == 0 {
		return nil, err
	}
	buf := make([]byte, sz)
	sz, err = unix.Flistxattr(fd, buf)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, s := range strings.Split(string(buf[:sz]), "\x00") {
		if s != "" {
			names = append(names, s)
		}
	}
	return names, nil
}

// times returns hdr's modification time for utimensat, as both access
// and modification time so that the image does not depend on when it was
// built.
func times(hdr *tar.Header) []unix.Timespec {
	var m unix.Timespec
	if !hdr.ModTime.IsZero() {
		m = unix.Timespec{Sec: hdr.ModTime.Unix(), Nsec: int64(hdr.ModTime.Nanosecond())}
	}
	return []unix.Timespec{m, m}
}

// restoreDirTimes sets the modification time of every directory the layer
// changed back to the one its entry asked for.
func (t *Tree) restoreDirTimes() error {
	for n := range t.dirty {
		delete(t.dirty, n)
		if !n.attached(t.top) {
			continue // removed
		}
		p := n.relPath()
		dir, base := path.Split(p)
		dir = strings.TrimSuffix(dir, "/")
		if dir == "" {
			dir = "."
		}
		hdr := &tar.Header{Name: p, ModTime: n.ino.mtime}
		fd, _, err := t.walk(hdr, dir, false)
		if err != nil {
			return fmt.Errorf("layer %d: restore time of %s: %w", t.layer, p, err)
		}
		if n == t.top {
			base = "."
		}
		err = unix.UtimesNanoAt(fd, base, times(hdr), unix.AT_SYMLINK_NOFOLLOW)
		t.closeDir(fd)
		if err != nil {
			return fmt.Errorf("layer %d: restore time of %s: %w", t.layer, p, err)
		}
	}
	return nil
}

// attached reports whether n is still in the tree under top: removing a
// directory detaches only the directory itself, not its descendants.
func (n *node) attached(top *node) bool {
	for ; n != nil; n = n.parent {
		if n == top {
			return true
		}
	}
	return false
}

// relPath returns n's path relative to the root, "." for the root.
func (n *node) relPath() string {
	var parts []string
	for ; n != nil && n.parent != nil; n = n.parent {
		parts = append(parts, n.name)
	}
	if len(parts) == 0 {
		return "."
	}
	for i, j := 0, len(parts)-1; i < j; i, j = i+1, j-1 {
		parts[i], parts[j] = parts[j], parts[i]
	}
	return strings.Join(parts, "/")
}

func sortedNames(n *node) []string {
	names := make([]string, 0, len(n.children))
	for k := range n.children {
		names = append(names, k)
	}
	sort.Strings(names)
	return names
}

// walkNodes calls fn for every node below and including n, parents before
// children, children in name order, with each node's image path.
func walkNodes(n *node, p string, fn func(n *node, p string)) {
	fn(n, p)
	for _, name := range sortedNames(n) {
		walkNodes(n.children[name], path.Join(p, name), fn)
	}
}

// Per-inode overhead for ContentSize: the inode itself, its directory
// entry and some slack for extent blocks.
const inodeOverhead = 512

// ContentSize returns the bytes the tree needs in an ext4 image: file
// content in 4 KiB blocks, a block per directory and long symbolic link,
// and a rough per-inode overhead.
func (t *Tree) ContentSize() int64 {
	var total int64
	seen := map[*inode]bool{}
	walkNodes(t.top, "/", func(n *node, _ string) {
		if seen[n.ino] {
			total += 64 // another directory entry
			return
		}
		seen[n.ino] = true
		total += inodeOverhead + n.ino.xattrs
		switch n.ino.kind {
		case kindFile:
			total += (n.ino.size + 4095) / 4096 * 4096
		case kindDir:
			total += 4096
		case kindSymlink:
			if n.ino.size >= 60 {
				total += 4096
			}
		}
	})
	return total
}

// Inodes returns how many inodes the tree uses.
func (t *Tree) Inodes() int64 {
	seen := map[*inode]bool{}
	walkNodes(t.top, "/", func(n *node, _ string) { seen[n.ino] = true })
	return int64(len(seen))
}

// Fixups returns the metadata the host directory does not hold exactly,
// keyed by final path, sorted by path. A hard-linked inode appears once,
// under one of its paths. The root always has one: mke2fs does not copy
// the root directory's own metadata.
func (t *Tree) Fixups() []ext4.Fixup {
	var out []ext4.Fixup
	seen := map[*inode]bool{}
	walkNodes(t.top, "/", func(n *node, p string) {
		ino := n.ino
		if seen[ino] {
			return
		}
		seen[ino] = true
		f := ext4.Fixup{Path: p}
		if n == t.top || ino.ownerFix {
			uid, gid := uint32(ino.uid), uint32(ino.gid)
			f.UID, f.GID = &uid, &gid
		}
		if n == t.top || ino.modeFix {
			mode := ino.mode
			f.Mode = &mode
		}
		if n == t.top {
			mtime := ino.mtime.Unix()
			f.Mtime = &mtime
		}
		if len(ino.xattrFix) > 0 {
			f.Xattrs = make(map[string][]byte, len(ino.xattrFix))
			for k, v := range ino.xattrFix {
				f.Xattrs[k] = v
			}
		}
		if f.UID != nil || f.Mode != nil || f.Mtime != nil || f.Xattrs != nil {
			out = append(out, f)
		}
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}
