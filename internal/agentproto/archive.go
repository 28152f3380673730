package agentproto

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bangervm/banger/errdefs"
)

// The tar helpers below are the one implementation of copying file trees,
// used by the agent (tarOut, tarIn) and by the CLI on the host (vm cp).

// TarName is the entry name WriteTar uses for the tree at p by default: its
// base name, or "." for the root directory (whose entries are then named
// "./etc" and so on, and land directly in the directory they are extracted
// to).
func TarName(p string) string {
	b := filepath.Base(filepath.Clean(p))
	if b == "/" || b == string(filepath.Separator) {
		return "."
	}
	return b
}

// WriteTar writes the file tree at root to w as a PAX tar. The entry for
// root is called name (one path element, see TarName), the others
// name/child/... A symbolic link, at root or below, is archived as a link,
// never followed. Entries keep mode bits (with setuid, setgid and sticky),
// modification time, numeric uid/gid and hard links between regular files;
// sockets are skipped. A missing root is an error of class ErrNotFound,
// returned before anything is written. Cancelling ctx stops the walk.
func WriteTar(ctx context.Context, w io.Writer, root, name string) error {
	if err := checkElem(name, true); err != nil {
		return err
	}
	if _, err := os.Lstat(root); err != nil {
		return classifyFS(err)
	}
	tw := tar.NewWriter(w)
	links := map[[2]uint64]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return classifyFS(err)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		entry := name
		if rel != "." {
			entry = path.Join(name, filepath.ToSlash(rel))
			if name == "." {
				entry = "./" + entry
			}
		}
		return writeEntry(tw, p, entry, links)
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

func writeEntry(tw *tar.Writer, p, name string, links map[[2]uint64]string) error {
	fi, err := os.Lstat(p)
	if err != nil {
		return classifyFS(err)
	}
	if fi.Mode()&fs.ModeSocket != 0 {
		return nil
	}
	var link string
	if fi.Mode()&fs.ModeSymlink != 0 {
		if link, err = os.Readlink(p); err != nil {
			return err
		}
	}
	hdr, err := tar.FileInfoHeader(fi, link)
	if err != nil {
		return fmt.Errorf("archive %s: %w", p, err)
	}
	hdr.Format = tar.FormatPAX
	hdr.Name = name
	if fi.IsDir() && !strings.HasSuffix(hdr.Name, "/") {
		hdr.Name += "/"
	}
	// Ownership travels as numbers; names would depend on either side's
	// /etc/passwd.
	hdr.Uname, hdr.Gname = "", ""
	hdr.AccessTime, hdr.ChangeTime = time.Time{}, time.Time{}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && fi.Mode().IsRegular() && st.Nlink > 1 {
		key := [2]uint64{uint64(st.Dev), uint64(st.Ino)}
		if first, ok := links[key]; ok {
			hdr.Typeflag = tar.TypeLink
			hdr.Linkname = first
			hdr.Size = 0
			return tw.WriteHeader(hdr)
		}
		links[key] = name
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("archive %s: %w", p, err)
	}
	if !fi.Mode().IsRegular() {
		return nil
	}
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return fmt.Errorf("archive %s: %w", p, classifyFS(err))
	}
	defer f.Close()
	// The size is in the header already: a file that shrank meanwhile is
	// an error, one that grew is cut at the size.
	if _, err := io.CopyN(tw, f, hdr.Size); err != nil {
		return fmt.Errorf("archive %s: %w", p, err)
	}
	return nil
}

// ExtractOptions tunes ExtractTar.
type ExtractOptions struct {
	// Rename replaces the first element of every entry name (the tree's
	// root), so the tree lands under another name ("cp a b"). Empty keeps
	// the names.
	Rename string
	// Chown gives entries the archive's uid and gid (needs root);
	// otherwise they belong to the caller.
	Chown bool
}

// ExtractTar extracts the tar stream r into the existing directory dir like
// a careful untar: entry names must be relative and free of "..", and
// nothing is written through a symbolic link (every parent directory is
// opened with O_NOFOLLOW), so no entry can land outside dir. Existing files
// and links are replaced; existing directories are merged into; a
// directory never replaces a non-directory nor the reverse. Modes
// (setuid, setgid and sticky included), modification times, symbolic links,
// hard links within the archive, FIFOs and devices are recreated; see
// ExtractOptions for ownership. A missing dir is ErrNotFound, a hostile or
// malformed entry ErrInvalidArgument. What was extracted before an error
// stays.
func ExtractTar(ctx context.Context, dir string, r io.Reader, opts ExtractOptions) error {
	if opts.Rename != "" {
		if err := checkElem(opts.Rename, false); err != nil {
			return err
		}
	}
	root, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOTDIR) {
			return fmt.Errorf("extract into %s: not a directory: %w", dir, errdefs.ErrInvalidArgument)
		}
		return fmt.Errorf("extract into %s: %w", dir, classifyFS(err))
	}
	defer unix.Close(root)
	x := &extractor{root: root, dir: dir, opts: opts}
	tr := tar.NewReader(r)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("extract into %s: read archive: %w", dir, err)
		}
		if err := x.entry(hdr, tr); err != nil {
			return fmt.Errorf("extract %q into %s: %w", hdr.Name, dir, err)
		}
	}
	// Directories get their modes and times last: entries written into
	// them would change their mtime, and a read-only mode would stop them.
	for i := len(x.dirs) - 1; i >= 0; i-- {
		d := x.dirs[i]
		if err := x.dirMeta(d.elems, d.hdr); err != nil {
			return fmt.Errorf("extract %q into %s: %w", d.hdr.Name, dir, err)
		}
	}
	return nil
}

type extractor struct {
	root int
	dir  string
	opts ExtractOptions
	dirs []pendingDir
}

type pendingDir struct {
	elems []string
	hdr   *tar.Header
}

var errHostile = errdefs.ErrInvalidArgument

// checkElem accepts a single path element; dot allows ".".
func checkElem(e string, dot bool) error {
	if e == "" || e == ".." || strings.ContainsAny(e, "/\x00") || (e == "." && !dot) {
		return fmt.Errorf("bad entry name %q: %w", e, errHostile)
	}
	return nil
}

// entryElems turns an entry name into path elements below the root,
// applying the rename. An empty result is the root itself.
func (x *extractor) entryElems(name string) ([]string, error) {
	if strings.HasPrefix(name, "/") {
		return nil, fmt.Errorf("absolute name: %w", errHostile)
	}
	if strings.ContainsRune(name, 0) {
		return nil, fmt.Errorf("name contains NUL: %w", errHostile)
	}
	var raw []string
	for _, e := range strings.Split(name, "/") {
		if e != "" {
			raw = append(raw, e)
		}
	}
	if len(raw) == 0 {
		return nil, fmt.Errorf("empty name: %w", errHostile)
	}
	if x.opts.Rename != "" {
		raw[0] = x.opts.Rename
	}
	elems := raw[:0]
	for _, e := range raw {
		switch e {
		case ".":
			continue
		case "..":
			return nil, fmt.Errorf("name contains \"..\": %w", errHostile)
		}
		elems = append(elems, e)
	}
	return elems, nil
}

// openDir opens the directory at elems below the root without following
// symbolic links. With create, missing directories are made (mode 0755,
// adjusted later if the archive has entries for them).
func (x *extractor) openDir(elems []string, create bool) (int, error) {
	fd, err := unix.Dup(x.root)
	if err != nil {
		return -1, err
	}
	for i, e := range elems {
		nfd, err := unix.Openat(fd, e, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if errors.Is(err, unix.ENOENT) && create {
			if err = unix.Mkdirat(fd, e, 0o755); err == nil || errors.Is(err, unix.EEXIST) {
				nfd, err = unix.Openat(fd, e, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			}
		}
		unix.Close(fd)
		if err != nil {
			p := path.Join(elems[:i+1]...)
			if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
				return -1, fmt.Errorf("%s is a symbolic link or not a directory: %w", p, errHostile)
			}
			return -1, fmt.Errorf("open %s: %w", p, classifyFS(err))
		}
		fd = nfd
	}
	return fd, nil
}

func (x *extractor) entry(hdr *tar.Header, r io.Reader) error {
	switch hdr.Typeflag {
	case tar.TypeXGlobalHeader:
		return nil
	case tar.TypeDir, tar.TypeReg, tar.TypeSymlink, tar.TypeLink, tar.TypeFifo, tar.TypeChar, tar.TypeBlock:
	default:
		return fmt.Errorf("unsupported entry type %q: %w", hdr.Typeflag, errdefs.ErrInvalidArgument)
	}
	elems, err := x.entryElems(hdr.Name)
	if err != nil {
		return err
	}
	if len(elems) == 0 {
		// The root itself ("./"): it exists; leave its metadata alone.
		if hdr.Typeflag != tar.TypeDir {
			return fmt.Errorf("non-directory entry for the target directory: %w", errHostile)
		}
		return nil
	}
	parent, err := x.openDir(elems[:len(elems)-1], true)
	if err != nil {
		return err
	}
	defer unix.Close(parent)
	name := elems[len(elems)-1]
	isDir := hdr.Typeflag == tar.TypeDir

	var st unix.Stat_t
	switch err := unix.Fstatat(parent, name, &st, unix.AT_SYMLINK_NOFOLLOW); {
	case errors.Is(err, unix.ENOENT):
	case err != nil:
		return classifyFS(err)
	case st.Mode&unix.S_IFMT == unix.S_IFDIR:
		if !isDir {
			return fmt.Errorf("cannot overwrite directory %s with a non-directory: %w", path.Join(elems...), errdefs.ErrInvalidArgument)
		}
	case isDir:
		return fmt.Errorf("cannot overwrite non-directory %s with a directory: %w", path.Join(elems...), errdefs.ErrInvalidArgument)
	default:
		if err := unix.Unlinkat(parent, name, 0); err != nil {
			return fmt.Errorf("replace %s: %w", path.Join(elems...), classifyFS(err))
		}
	}

	mode := uint32(hdr.Mode) & 0o7777
	switch hdr.Typeflag {
	case tar.TypeDir:
		if err := unix.Mkdirat(parent, name, 0o700); err != nil && !errors.Is(err, unix.EEXIST) {
			return classifyFS(err)
		}
		x.dirs = append(x.dirs, pendingDir{elems: elems, hdr: hdr})
		return nil
	case tar.TypeReg:
		fd, err := unix.Openat(parent, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return classifyFS(err)
		}
		f := os.NewFile(uintptr(fd), path.Join(x.dir, path.Join(elems...)))
		_, err = io.Copy(f, r)
		if err == nil {
			err = x.fileMeta(fd, hdr, mode)
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	case tar.TypeSymlink:
		if hdr.Linkname == "" {
			return fmt.Errorf("symbolic link without a target: %w", errHostile)
		}
		if err := unix.Symlinkat(hdr.Linkname, parent, name); err != nil {
			return classifyFS(err)
		}
		if x.opts.Chown {
			if err := unix.Fchownat(parent, name, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				return fmt.Errorf("chown: %w", err)
			}
		}
	case tar.TypeLink:
		telems, err := x.entryElems(hdr.Linkname)
		if err != nil {
			return fmt.Errorf("hard link target: %w", err)
		}
		if len(telems) == 0 {
			return fmt.Errorf("hard link to the target directory: %w", errHostile)
		}
		tparent, err := x.openDir(telems[:len(telems)-1], false)
		if err != nil {
			return fmt.Errorf("hard link target: %w", err)
		}
		// Flags 0: a symbolic link as target is linked, not followed.
		err = unix.Linkat(tparent, telems[len(telems)-1], parent, name, 0)
		unix.Close(tparent)
		if err != nil {
			return fmt.Errorf("hard link to %s: %w", hdr.Linkname, classifyFS(err))
		}
		return nil // the target carries the metadata
	default: // FIFO and devices
		kind := map[byte]uint32{tar.TypeFifo: unix.S_IFIFO, tar.TypeChar: unix.S_IFCHR, tar.TypeBlock: unix.S_IFBLK}[hdr.Typeflag]
		dev := unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor))
		if err := unix.Mknodat(parent, name, kind|0o600, int(dev)); err != nil {
			return fmt.Errorf("mknod: %w", classifyFS(err))
		}
		if x.opts.Chown {
			if err := unix.Fchownat(parent, name, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				return fmt.Errorf("chown: %w", err)
			}
		}
		if err := unix.Fchmodat(parent, name, mode, 0); err != nil {
			return fmt.Errorf("chmod: %w", err)
		}
	}
	return setTimes(parent, name, hdr)
}

// fileMeta sets ownership, then mode (chown clears setuid and setgid).
func (x *extractor) fileMeta(fd int, hdr *tar.Header, mode uint32) error {
	if x.opts.Chown {
		if err := unix.Fchown(fd, hdr.Uid, hdr.Gid); err != nil {
			return fmt.Errorf("chown: %w", err)
		}
	}
	if err := unix.Fchmod(fd, mode); err != nil {
		return fmt.Errorf("chmod: %w", err)
	}
	return nil
}

func (x *extractor) dirMeta(elems []string, hdr *tar.Header) error {
	fd, err := x.openDir(elems, false)
	if err != nil {
		return err
	}
	err = x.fileMeta(fd, hdr, uint32(hdr.Mode)&0o7777)
	unix.Close(fd)
	if err != nil {
		return err
	}
	parent, err := x.openDir(elems[:len(elems)-1], false)
	if err != nil {
		return err
	}
	defer unix.Close(parent)
	return setTimes(parent, elems[len(elems)-1], hdr)
}

func setTimes(parent int, name string, hdr *tar.Header) error {
	if hdr.ModTime.IsZero() {
		return nil
	}
	mt := unix.Timespec{Sec: hdr.ModTime.Unix(), Nsec: int64(hdr.ModTime.Nanosecond())}
	ts := []unix.Timespec{mt, mt}
	if err := unix.UtimesNanoAt(parent, name, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("set times: %w", err)
	}
	return nil
}

// classifyFS marks file-system errors with their errdefs class.
func classifyFS(err error) error {
	switch {
	case errdefs.Class(err) != nil:
		return err
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%w: %w", err, errdefs.ErrNotFound)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("%w: %w", err, errdefs.ErrPermissionDenied)
	}
	return err
}
