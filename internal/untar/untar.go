// Package untar extracts tar streams into a directory under an explicit
// Policy: Permissive recreates a trusted archive as it is, Strict takes
// from an untrusted one (a guest's, on the host) only what cannot be used
// against the machine it lands on.
package untar

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/bangervm/banger/errdefs"
)

// Policy says how much of an archive is trusted.
type Policy int

const (
	// Permissive recreates the archive as it is, for archives from a
	// trusted source (the host's, extracted by the agent in its guest):
	// modes with setuid, setgid and sticky, FIFOs and devices; existing
	// files and symbolic links are replaced, existing directories take the
	// archive's mode. Names still cannot leave the directory nor pass
	// through a symbolic link. The first bad entry ends the extraction
	// with an error.
	Permissive Policy = iota
	// Strict extracts an untrusted archive (a guest's, on the host) like
	// "cp -r" would place the source Options.Top, and refuses, entry by
	// entry, whatever else it holds: entries outside Top, names with "..",
	// paths through or onto an existing symbolic link, a second entry of
	// the same name, hard links to anything but a regular file extracted
	// earlier by this same extraction, devices, FIFOs, sockets and sparse
	// files. Setuid, setgid and sticky bits are dropped; modes and times of
	// directories that existed before are left alone. Refused entries are
	// reported to Options.Refused and counted in a *RefusedError; the
	// others land. Limits bound what a stream can make the extractor hold.
	Strict
)

// Limits bound a Strict extraction; zero fields take the defaults.
type Limits struct {
	// Entries is the number of entries read before the extraction stops
	// (default 1,000,000).
	Entries int
	// NameLen is the longest entry or link name extracted (default 4096,
	// Linux's PATH_MAX); longer ones are refused.
	NameLen int
	// NameBytes is the total length of entry and link names read before
	// the extraction stops (default 256 MiB).
	NameBytes int64
}

// DefaultLimits are the limits of a Strict extraction.
var DefaultLimits = Limits{Entries: 1_000_000, NameLen: 4096, NameBytes: 256 << 20}

func (l Limits) orDefault() Limits {
	if l.Entries <= 0 {
		l.Entries = DefaultLimits.Entries
	}
	if l.NameLen <= 0 {
		l.NameLen = DefaultLimits.NameLen
	}
	if l.NameBytes <= 0 {
		l.NameBytes = DefaultLimits.NameBytes
	}
	return l
}

// Options tunes Extract.
type Options struct {
	Policy Policy
	// Top is the name of the archive's root entry, one path element (see
	// agentproto.TarName), "." when the archive is a whole file system.
	// Strict needs it: only Top and entries below it are extracted.
	// Permissive takes every entry when it is empty.
	Top string
	// Rename, with Top, is the name Top gets in the directory ("cp -r a
	// b"); empty keeps Top's name ("." lands entries directly in the
	// directory).
	Rename string
	// KeepOwner gives entries the archive's uid and gid (root can give
	// any; others only their own ids, else the entry is reported and keeps
	// the caller's). Otherwise entries belong to the caller. Strict drops
	// setuid and setgid either way.
	KeepOwner bool
	// Refused, under Strict, is called for each entry not extracted (or
	// not extracted whole); nil ignores them. Entry names come from the
	// archive: escape them before printing to a terminal.
	Refused func(Refusal)
	// Limits apply under Strict.
	Limits Limits
}

// Refusal names an entry a Strict extraction did not extract, and why.
type Refusal struct {
	// Name is the entry's name as in the archive (cut at Limits.NameLen).
	Name   string
	Reason string
}

func (r Refusal) String() string { return r.Name + ": " + r.Reason }

// RefusedError reports that a Strict extraction refused N entries; the
// others were extracted. It is of class errdefs.ErrInvalidArgument.
type RefusedError struct{ N int }

func (e *RefusedError) Error() string {
	if e.N == 1 {
		return "1 entry refused"
	}
	return fmt.Sprintf("%d entries refused", e.N)
}

func (e *RefusedError) Unwrap() error { return errdefs.ErrInvalidArgument }

// refusal is an entry-level failure: Strict reports it and goes on,
// Permissive stops with it.
type refusal struct{ reason string }

func (r *refusal) Error() string { return r.reason }

func refusef(format string, args ...any) error {
	return &refusal{reason: fmt.Sprintf(format, args...)}
}

// reason is the text of an entry's failure for its Refusal.
func reason(err error) string {
	var rf *refusal
	if errors.As(err, &rf) {
		return rf.reason
	}
	return err.Error()
}

// Extract extracts the tar stream r into the existing directory dir. No
// entry lands outside dir or is written through a symbolic link: every
// parent directory is opened with O_NOFOLLOW from dir down. A directory
// never replaces a non-directory nor the reverse. Modification times,
// symbolic links (as links, any target) and hard links within the archive
// are recreated; see Policy for the rest. A missing dir is ErrNotFound, a
// malformed archive or (Permissive) a hostile entry ErrInvalidArgument,
// refused entries (Strict) a *RefusedError. What was extracted before an
// error stays, but a regular file cut short is removed.
func Extract(ctx context.Context, dir string, r io.Reader, o Options) error {
	if err := o.check(); err != nil {
		return err
	}
	root, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOTDIR) {
			return fmt.Errorf("extract into %s: not a directory: %w", dir, errdefs.ErrInvalidArgument)
		}
		return fmt.Errorf("extract into %s: %w", dir, errdefs.FromFS(err))
	}
	defer unix.Close(root)
	x := &extractor{root: root, dir: dir, o: o, strict: o.Policy == Strict, lim: o.Limits.orDefault(), seen: map[string]bool{}}
	if err := x.run(ctx, r); err != nil {
		return fmt.Errorf("extract into %s: %w", dir, err)
	}
	if x.refused > 0 {
		return &RefusedError{N: x.refused}
	}
	return nil
}

func (o Options) check() error {
	if o.Policy != Permissive && o.Policy != Strict {
		return fmt.Errorf("untar: unknown policy %d: %w", o.Policy, errdefs.ErrInvalidArgument)
	}
	if o.Top == "" && (o.Policy == Strict || o.Rename != "") {
		return fmt.Errorf("untar: no Top given: %w", errdefs.ErrInvalidArgument)
	}
	if o.Top != "" {
		if err := checkElem(o.Top, true); err != nil {
			return err
		}
	}
	if o.Rename != "" {
		return checkElem(o.Rename, false)
	}
	return nil
}

// checkElem accepts a single path element; dot allows ".".
func checkElem(e string, dot bool) error {
	if e == "" || e == ".." || strings.ContainsAny(e, "/\x00") || (e == "." && !dot) {
		return fmt.Errorf("untar: bad name %q: %w", e, errdefs.ErrInvalidArgument)
	}
	return nil
}

type extractor struct {
	root   int
	dir    string
	o      Options
	strict bool
	lim    Limits

	entries   int
	nameBytes int64
	refused   int
	// seen holds the targets (dir-relative paths) of every entry
	// extracted, true for regular files: what hard links may point at.
	seen map[string]bool
	dirs []pendingDir
}

// pendingDir is a directory whose mode, owner and times are set once
// everything below it is written. It holds only what that needs: a
// header's other fields (PAX records) could be large.
type pendingDir struct {
	hdr *tar.Header
}

func newPendingDir(hdr *tar.Header) pendingDir {
	return pendingDir{hdr: &tar.Header{Name: hdr.Name, Mode: hdr.Mode, Uid: hdr.Uid, Gid: hdr.Gid, ModTime: hdr.ModTime}}
}

// streamReader remembers a failure of the archive stream, which ends an
// extraction, as against a failure to write, which is one entry's.
type streamReader struct {
	r   io.Reader
	err error
}

func (s *streamReader) Read(b []byte) (int, error) {
	n, err := s.r.Read(b)
	if err != nil && err != io.EOF {
		s.err = err
	}
	return n, err
}

func (x *extractor) run(ctx context.Context, r io.Reader) error {
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
			return fmt.Errorf("read archive: %w: %w", err, errdefs.ErrInvalidArgument)
		}
		if err := x.count(hdr); err != nil {
			return err
		}
		src := &streamReader{r: tr}
		err = x.entry(hdr, src)
		if src.err != nil {
			return fmt.Errorf("read %q: %w: %w", x.shortName(hdr.Name), src.err, errdefs.ErrInvalidArgument)
		}
		var rf *refusal
		switch {
		case err == nil:
		case x.strict:
			// Like cp, go on with the next entry; only a broken stream or
			// a limit ends a Strict extraction.
			x.refuse(hdr.Name, reason(err))
		case errors.As(err, &rf):
			return fmt.Errorf("extract %q: %s: %w", hdr.Name, rf.reason, errdefs.ErrInvalidArgument)
		default:
			return fmt.Errorf("extract %q: %w", x.shortName(hdr.Name), err)
		}
	}
	// Directories get their modes and times last: entries written into
	// them would change their mtime, and a read-only mode would stop them.
	for i := len(x.dirs) - 1; i >= 0; i-- {
		d := x.dirs[i]
		elems, err := x.target(d.hdr.Name)
		if err == nil {
			err = x.dirMeta(elems, d.hdr)
		}
		switch {
		case err == nil:
		case x.strict:
			x.refuse(d.hdr.Name, reason(err))
		default:
			return fmt.Errorf("extract %q: %w", x.shortName(d.hdr.Name), err)
		}
	}
	return nil
}

// count applies the limits that end a Strict extraction.
func (x *extractor) count(hdr *tar.Header) error {
	if !x.strict {
		return nil
	}
	x.entries++
	x.nameBytes += int64(len(hdr.Name) + len(hdr.Linkname))
	if x.entries > x.lim.Entries {
		return fmt.Errorf("more than %d entries: %w", x.lim.Entries, errdefs.ErrInvalidArgument)
	}
	if x.nameBytes > x.lim.NameBytes {
		return fmt.Errorf("more than %d bytes of names: %w", x.lim.NameBytes, errdefs.ErrInvalidArgument)
	}
	return nil
}

func (x *extractor) refuse(name, reason string) {
	x.refused++
	if x.o.Refused != nil {
		x.o.Refused(Refusal{Name: x.shortName(name), Reason: reason})
	}
}

func (x *extractor) shortName(name string) string {
	if n := x.lim.NameLen; x.strict && len(name) > n {
		return name[:n] + "..."
	}
	return name
}

// target maps an entry name to path elements below the directory, applying
// Top and Rename. An empty result is the directory itself.
func (x *extractor) target(name string) ([]string, error) {
	if x.strict && len(name) > x.lim.NameLen {
		return nil, refusef("name longer than %d bytes", x.lim.NameLen)
	}
	if strings.HasPrefix(name, "/") {
		return nil, refusef("absolute name")
	}
	if strings.ContainsRune(name, 0) {
		return nil, refusef("name contains NUL")
	}
	var elems []string
	for _, e := range strings.Split(name, "/") {
		switch e {
		case "", ".":
		case "..":
			return nil, refusef("name contains \"..\"")
		default:
			elems = append(elems, e)
		}
	}
	top := x.o.Top
	if top == "" {
		if len(elems) == 0 {
			return nil, refusef("empty name")
		}
		return elems, nil
	}
	if top != "." {
		if len(elems) == 0 || elems[0] != top {
			return nil, refusef("not inside %q, the source copied", top)
		}
		elems = elems[1:]
	}
	base := x.o.Rename
	if base == "" && top != "." {
		base = top
	}
	if base == "" {
		return elems, nil
	}
	return append([]string{base}, elems...), nil
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
				return -1, refusef("%q is a symbolic link or not a directory", p)
			}
			return -1, fmt.Errorf("open %q: %w", p, errdefs.FromFS(err))
		}
		fd = nfd
	}
	return fd, nil
}

// Sparse reports whether hdr describes a sparse file (old GNU or PAX
// format), whose size is the one after expansion, unbounded by the
// stream's.
func Sparse(hdr *tar.Header) bool {
	if hdr.Typeflag == tar.TypeGNUSparse {
		return true
	}
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return true
		}
	}
	return false
}

// typeOK says whether the policy extracts entries of hdr's type.
func (x *extractor) typeOK(hdr *tar.Header) error {
	switch hdr.Typeflag {
	case tar.TypeDir, tar.TypeReg, tar.TypeSymlink, tar.TypeLink:
		if x.strict && Sparse(hdr) {
			return refusef("sparse file not extracted")
		}
		return nil
	case tar.TypeFifo, tar.TypeChar, tar.TypeBlock:
		if !x.strict {
			return nil
		}
		return refusef("%s not extracted", map[byte]string{tar.TypeFifo: "FIFO", tar.TypeChar: "character device", tar.TypeBlock: "block device"}[hdr.Typeflag])
	}
	return refusef("entry type %q not extracted", hdr.Typeflag)
}

func (x *extractor) mode(hdr *tar.Header) uint32 {
	if x.strict {
		return uint32(hdr.Mode) & 0o777
	}
	return uint32(hdr.Mode) & 0o7777
}

func (x *extractor) entry(hdr *tar.Header, r io.Reader) error {
	if hdr.Typeflag == tar.TypeXGlobalHeader {
		return nil
	}
	elems, err := x.target(hdr.Name)
	if err != nil {
		return err
	}
	if err := x.typeOK(hdr); err != nil {
		return err
	}
	if len(elems) == 0 {
		// The directory itself ("./"): it exists; leave its metadata alone.
		if hdr.Typeflag != tar.TypeDir {
			return refusef("non-directory entry for the target directory")
		}
		return nil
	}
	rel := path.Join(elems...)
	if _, dup := x.seen[rel]; dup && x.strict {
		return refusef("a second entry of this name")
	}
	parent, err := x.openDir(elems[:len(elems)-1], true)
	if err != nil {
		return err
	}
	defer unix.Close(parent)
	name := elems[len(elems)-1]
	isDir := hdr.Typeflag == tar.TypeDir

	existingDir := false
	var st unix.Stat_t
	switch err := unix.Fstatat(parent, name, &st, unix.AT_SYMLINK_NOFOLLOW); {
	case errors.Is(err, unix.ENOENT):
	case err != nil:
		return errdefs.FromFS(err)
	case st.Mode&unix.S_IFMT == unix.S_IFDIR:
		if !isDir {
			return refusef("cannot overwrite directory %q with a non-directory", rel)
		}
		existingDir = true
	case isDir:
		return refusef("cannot overwrite non-directory %q with a directory", rel)
	case x.strict && st.Mode&unix.S_IFMT == unix.S_IFLNK:
		return refusef("%q is an existing symbolic link, not replaced", rel)
	default:
		if err := unix.Unlinkat(parent, name, 0); err != nil {
			return fmt.Errorf("replace %q: %w", rel, errdefs.FromFS(err))
		}
	}

	mode := x.mode(hdr)
	switch hdr.Typeflag {
	case tar.TypeDir:
		x.seen[rel] = false
		if existingDir {
			if !x.strict {
				x.dirs = append(x.dirs, newPendingDir(hdr))
			}
			return nil
		}
		if err := unix.Mkdirat(parent, name, 0o700); err != nil {
			return errdefs.FromFS(err)
		}
		x.dirs = append(x.dirs, newPendingDir(hdr))
		return nil
	case tar.TypeReg:
		err := x.writeFile(parent, name, rel, hdr, r, mode)
		if err == nil {
			x.seen[rel] = true
		}
		return err
	case tar.TypeSymlink:
		if hdr.Linkname == "" {
			return refusef("symbolic link without a target")
		}
		if x.strict && len(hdr.Linkname) > x.lim.NameLen {
			return refusef("link target longer than %d bytes", x.lim.NameLen)
		}
		if err := unix.Symlinkat(hdr.Linkname, parent, name); err != nil {
			return errdefs.FromFS(err)
		}
		x.seen[rel] = false
		if x.o.KeepOwner {
			if err := x.owner(hdr, func(uid, gid int) error { return unix.Fchownat(parent, name, uid, gid, unix.AT_SYMLINK_NOFOLLOW) }); err != nil {
				return err
			}
		}
	case tar.TypeLink:
		return x.hardLink(parent, name, rel, hdr)
	default: // FIFO and devices, Permissive only
		kind := map[byte]uint32{tar.TypeFifo: unix.S_IFIFO, tar.TypeChar: unix.S_IFCHR, tar.TypeBlock: unix.S_IFBLK}[hdr.Typeflag]
		dev := unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor))
		if err := unix.Mknodat(parent, name, kind|0o600, int(dev)); err != nil {
			return fmt.Errorf("mknod: %w", errdefs.FromFS(err))
		}
		x.seen[rel] = false
		if x.o.KeepOwner {
			if err := x.owner(hdr, func(uid, gid int) error { return unix.Fchownat(parent, name, uid, gid, unix.AT_SYMLINK_NOFOLLOW) }); err != nil {
				return err
			}
		}
		if err := unix.Fchmodat(parent, name, mode, 0); err != nil {
			return fmt.Errorf("chmod: %w", err)
		}
	}
	return setTimes(parent, name, hdr)
}

// writeFile creates the regular file name in parent with exactly the
// header's size from r, and its metadata; a file cut short is removed.
func (x *extractor) writeFile(parent int, name, rel string, hdr *tar.Header, r io.Reader, mode uint32) error {
	fd, err := unix.Openat(parent, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return errdefs.FromFS(err)
	}
	f := os.NewFile(uintptr(fd), path.Join(x.dir, rel))
	n, err := io.Copy(f, r)
	if err == nil && n != hdr.Size {
		err = fmt.Errorf("%d bytes in the archive, %d in its header: %w", n, hdr.Size, errdefs.ErrInvalidArgument)
	}
	if err == nil {
		err = x.fileMeta(fd, hdr, mode)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	var rf *refusal
	if err != nil && !errors.As(err, &rf) {
		_ = unix.Unlinkat(parent, name, 0)
		return err
	}
	if serr := setTimes(parent, name, hdr); err == nil {
		err = serr
	}
	return err
}

func (x *extractor) hardLink(parent int, name, rel string, hdr *tar.Header) error {
	telems, err := x.target(hdr.Linkname)
	if err != nil {
		var rf *refusal
		if errors.As(err, &rf) {
			return refusef("hard link target: %s", rf.reason)
		}
		return err
	}
	if len(telems) == 0 {
		return refusef("hard link to the target directory")
	}
	if x.strict && !x.seen[path.Join(telems...)] {
		return refusef("hard link to a file not extracted before by this copy")
	}
	tparent, err := x.openDir(telems[:len(telems)-1], false)
	if err != nil {
		return err
	}
	// Flags 0: a symbolic link as target is linked, not followed.
	err = unix.Linkat(tparent, telems[len(telems)-1], parent, name, 0)
	unix.Close(tparent)
	if err != nil {
		return fmt.Errorf("hard link to %q: %w", path.Join(telems...), errdefs.FromFS(err))
	}
	x.seen[rel] = true
	return nil // the target carries the metadata
}

// maxID is the largest uid or gid: -1 (all ones) means "unchanged" to
// chown.
const maxID = 1<<32 - 2

// owner gives an entry the header's uid and gid through chown. A failure,
// or under Strict an id out of range, is reported by ownerErr.
func (x *extractor) owner(hdr *tar.Header, chown func(uid, gid int) error) error {
	if x.strict && (hdr.Uid < 0 || hdr.Uid > maxID || hdr.Gid < 0 || hdr.Gid > maxID) {
		return x.ownerErr(hdr, errors.New("id out of range"))
	}
	if err := chown(hdr.Uid, hdr.Gid); err != nil {
		return x.ownerErr(hdr, err)
	}
	return nil
}

// ownerErr is a failed chown: Strict reports the entry (which stays, owned
// by the caller), Permissive fails.
func (x *extractor) ownerErr(hdr *tar.Header, err error) error {
	if x.strict {
		return refusef("owner %d:%d not kept: %v", hdr.Uid, hdr.Gid, err)
	}
	return fmt.Errorf("chown: %w", err)
}

// fileMeta sets ownership, then mode (chown clears setuid and setgid). A
// failed chown under Strict still sets the mode before reporting.
func (x *extractor) fileMeta(fd int, hdr *tar.Header, mode uint32) error {
	var owner error
	if x.o.KeepOwner {
		if err := x.owner(hdr, func(uid, gid int) error { return unix.Fchown(fd, uid, gid) }); err != nil {
			if owner = err; !x.strict {
				return owner
			}
		}
	}
	if err := unix.Fchmod(fd, mode); err != nil {
		return fmt.Errorf("chmod: %w", err)
	}
	return owner
}

func (x *extractor) dirMeta(elems []string, hdr *tar.Header) error {
	fd, err := x.openDir(elems, false)
	if err != nil {
		return err
	}
	merr := x.fileMeta(fd, hdr, x.mode(hdr))
	unix.Close(fd)
	var rf *refusal
	if merr != nil && !errors.As(merr, &rf) {
		return merr
	}
	parent, err := x.openDir(elems[:len(elems)-1], false)
	if err != nil {
		return err
	}
	defer unix.Close(parent)
	if err := setTimes(parent, elems[len(elems)-1], hdr); err != nil {
		return err
	}
	return merr
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
