package roothelper

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/engine/firecracker"
	"github.com/bangervm/banger/internal/engine/proc"
)

// OpLaunchJailer builds a jail and starts Firecracker's jailer in it as
// root for the owner's daemon (see JailerPolicy); OpRemoveJail removes
// the jail after.
const (
	OpLaunchJailer = "launchJailer"
	OpRemoveJail   = "removeJail"
)

// JailerPolicy is what the helper lets the owner's daemon start under the
// jailer: only these binaries, only in jails of the owner's VMs, only as
// the owner. It comes from the helper's command line (--jailer,
// --firecracker, --vms), never from a request.
type JailerPolicy struct {
	// Jailer and Firecracker are the binaries, absolute paths.
	Jailer, Firecracker string
	// VMs is the owner's VM directories (the daemon's <state>/vms),
	// absolute and clean: a jail is built only as <VMs>/<id>/jail.
	VMs string
	// Templates is the owner's template cache (the daemon's
	// <cache>/templates), absolute and clean; "" refuses jailed
	// templates. A template VM's jail is built only as
	// <Templates>/<pending dir>/jail, and template files are placed in a
	// clone's jail only from <Templates>/<id>/, sealed (see
	// sealTemplate).
	Templates string
	// UID and GID are the owner's: firecracker runs as them.
	UID, GID int
	// StateFile records the processes launchJailer started, for
	// killJailer, across helper restarts.
	StateFile string
	// MountDir is where each jail is mounted for the jailer
	// (<MountDir>/<id>): root's, in the helper's runtime directory, so
	// that no directory on the path the jailer is given is the owner's.
	MountDir string
}

// OwnerGID returns the primary group of uid, for JailerPolicy.GID.
func OwnerGID(uid int) (int, error) {
	u, err := user.LookupId(strconv.Itoa(uid))
	if err != nil {
		return 0, fmt.Errorf("owner uid %d: %w", uid, err)
	}
	return strconv.Atoi(u.Gid)
}

// jailIDRE is banger's jail id (firecracker.JailID of a VM id): lower-case
// alphanumerics and hyphens, at most 64, as jailer.md allows.
var jailIDRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,63}$`)

// cgroupFiles are the cgroup files a request may set (what
// firecracker.cgroupLimits and a config's cgroups use); cgroupValueRE is
// what their values may hold: numbers, "max", CPU lists.
var (
	cgroupFiles   = []string{"cpu.max", "cpu.weight", "memory.max", "memory.high", "pids.max", "cpuset.cpus", "cpuset.mems"}
	cgroupValueRE = regexp.MustCompile(`^[0-9a-z ,-]{1,64}$`)
	apiSockRE     = regexp.MustCompile(`^/[a-zA-Z0-9][a-zA-Z0-9._-]{0,63}$`)
	// jailFileRE is a jail file's name: the kernel, the initrd, a drive
	// (firecracker's driveID: vda, vdb, ...), a template's memory and
	// state (firecracker.TemplateMemory, TemplateSnapshot), or
	// Firecracker's log and metrics pipes (firecracker.IsPipe).
	jailFileRE = regexp.MustCompile(`^(vmlinux|initrd|vd[a-p]|memory|snapshot|firecracker\.log|firecracker\.metrics)$`)
)

// maxJailFiles bounds a launchJailer request's files: kernel, initrd, 16
// drives, a template's two files and the two log pipes.
const maxJailFiles = 22

// validateJailer checks a launchJailer request against the policy before
// anything runs: banger's id format, the configured firecracker, the
// owner's uid and gid, a chroot base that is the jail of one of the
// owner's VMs, cgroup settings from the allowlist, and no other jailer or
// firecracker argument.
func validateJailer(c *firecracker.JailerConfig, p *JailerPolicy) error {
	if err := validateJailBase(c, p); err != nil {
		return err
	}
	inv := func(format string, a ...any) error {
		return fmt.Errorf(format+": %w", append(a, errdefs.ErrInvalidArgument)...)
	}
	deny := func(format string, a ...any) error {
		return fmt.Errorf(format+": %w", append(a, errdefs.ErrPermissionDenied)...)
	}
	switch {
	case c.ExecFile != p.Firecracker:
		return deny("exec file %q: this helper starts only %s", c.ExecFile, p.Firecracker)
	case c.UID != p.UID || c.GID != p.GID:
		return deny("uid:gid %d:%d: firecracker runs only as the owner, %d:%d", c.UID, c.GID, p.UID, p.GID)
	case c.CgroupVersion != 0 && c.CgroupVersion != 1 && c.CgroupVersion != 2:
		return inv("cgroup version %d", c.CgroupVersion)
	case c.ParentCgroup != "":
		return deny("parent cgroup %q: not allowed", c.ParentCgroup)
	case c.NetNS != "":
		return deny("netns %q: not allowed", c.NetNS)
	case len(c.ResourceLimits) > 0:
		return deny("resource limits %q: not allowed", c.ResourceLimits)
	case len(c.FirecrackerArgs) != 2 || c.FirecrackerArgs[0] != "--api-sock" || !apiSockRE.MatchString(c.FirecrackerArgs[1]):
		return deny("firecracker arguments %q: only --api-sock /<name> is allowed", c.FirecrackerArgs)
	}
	for _, cg := range c.Cgroups {
		k, v, ok := strings.Cut(cg, "=")
		if !ok || !slices.Contains(cgroupFiles, k) || !cgroupValueRE.MatchString(v) {
			return deny("cgroup setting %q: allowed are %s with a numeric value", cg, strings.Join(cgroupFiles, ", "))
		}
	}
	return nil
}

// validateJailBase checks the id and the chroot base of a launchJailer or
// removeJail request: the base must be <policy VMs>/<id>/jail.
func validateJailBase(c *firecracker.JailerConfig, p *JailerPolicy) error {
	if p == nil {
		return fmt.Errorf("this root helper does not start Firecracker's jailer: start it with --jailer, --firecracker and --vms <the owner's state dir>/vms, or set jailer = false in config.toml: %w", errdefs.ErrFailedPrecondition)
	}
	if c == nil {
		return fmt.Errorf("no jailer arguments: %w", errdefs.ErrInvalidArgument)
	}
	if !jailIDRE.MatchString(c.ID) {
		return fmt.Errorf("jail id %q: want banger's format (lower-case letters, digits, hyphens; at most 64): %w", c.ID, errdefs.ErrInvalidArgument)
	}
	if isTemplateJail(c, p) {
		return nil
	}
	if want := filepath.Join(p.VMs, c.ID, firecracker.JailDirName); c.ChrootBase != want {
		return fmt.Errorf("chroot base %q: this helper builds jails only as %s (or a template VM's, in %s): %w", c.ChrootBase, want, p.Templates, errdefs.ErrPermissionDenied)
	}
	return nil
}

// validateJailFiles checks the files a launchJailer request places in the
// jail: known names, each once, the kernel among them, absolute paths,
// writable only for drives, and a template's files only both together,
// from the policy's template cache.
func validateJailFiles(files []firecracker.JailFile, p *JailerPolicy) error {
	deny := func(format string, a ...any) error {
		return fmt.Errorf(format+": %w", append(a, errdefs.ErrPermissionDenied)...)
	}
	if len(files) == 0 || len(files) > maxJailFiles || files[0].Name != "vmlinux" {
		return deny("%d jail files: want the kernel (vmlinux) first, at most %d", len(files), maxJailFiles)
	}
	seen := map[string]bool{}
	for _, f := range files {
		switch {
		case !jailFileRE.MatchString(f.Name):
			return deny("jail file name %q: want vmlinux, initrd, vda..vdp, memory, snapshot, firecracker.log or firecracker.metrics", f.Name)
		case seen[f.Name]:
			return deny("jail file %q given twice", f.Name)
		case !filepath.IsAbs(f.Path) || filepath.Clean(f.Path) != f.Path:
			return deny("jail file %s: path %q is not absolute and clean", f.Name, f.Path)
		case f.Writable && !strings.HasPrefix(f.Name, "vd"):
			return deny("jail file %s: only drives may be writable", f.Name)
		}
		if isTemplateFile(f.Name) {
			if err := validateTemplateFile(f, p); err != nil {
				return err
			}
		}
		seen[f.Name] = true
	}
	if seen[firecracker.TemplateMemory] != seen[firecracker.TemplateSnapshot] {
		return deny("a template's memory and snapshot go into a jail together")
	}
	if !seen[firecracker.LogFile] || !seen[firecracker.MetricsFile] {
		return deny("a jail needs Firecracker's log and metrics pipes (%s, %s)", firecracker.LogFile, firecracker.MetricsFile)
	}
	return nil
}

// jailMu serialises building and removing jails: removal also runs when a
// launched process exits, outside the server's lock.
var jailMu sync.Mutex

// buildJail builds c's jail in the owner's VM directory, root's from the
// top, places files in it from their descriptors (fds, from the daemon)
// and mounts it at <MountDir>/<id> for the jailer. It returns that mount
// point: every directory on the path to the chroot the jailer is given is
// root's, and the VM directory's own path (the owner's to rename) is not
// on it. On error it leaves nothing.
//
// jailer.md leaves the jail's safety to the operator ("root-owned, not
// world-writable"): the jailer resolves the path by name as root, copies
// firecracker into it, makes device nodes in it and chowns them; a
// directory of the owner's on that path could be swapped for a symlink
// between any check and that use.
func buildJail(c *firecracker.JailerConfig, files []firecracker.JailFile, fds []*os.File, p *JailerPolicy) (target string, err error) {
	vm, err := openOwnerDir(filepath.Dir(c.ChrootBase), p.UID)
	if err != nil {
		return "", err
	}
	defer vm.Close()
	vmfd := int(vm.Fd())
	if err := mkdirat(vmfd, firecracker.JailDirName); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return "", fmt.Errorf("jail %s already exists: remove it (removeJail) first: %w", c.ChrootBase, errdefs.ErrAlreadyExists)
		}
		return "", fmt.Errorf("make jail %s: %w", c.ChrootBase, err)
	}
	jail, err := openat(vmfd, firecracker.JailDirName, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return "", err
	}
	defer jail.Close()
	// The owner may have swapped the directory just made for another;
	// only an empty one of root's (which they cannot fill) will do.
	if err := checkRootDir(jail, c.ChrootBase); err != nil {
		return "", err
	}
	if names, err := jail.Readdirnames(1); len(names) > 0 || err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("jail %s is not empty: %w", c.ChrootBase, errdefs.ErrPermissionDenied)
	}
	defer func() {
		if err != nil {
			if rerr := removeJailTree(c, p); rerr != nil {
				err = fmt.Errorf("%w; remove the jail: %w", err, rerr)
			}
		}
	}()
	// <base>/<exec name>/<id>/root, as the jailer makes it; root's.
	dir := jail
	for _, name := range []string{filepath.Base(p.Firecracker), c.ID, "root"} {
		if err := mkdirat(int(dir.Fd()), name); err != nil {
			return "", fmt.Errorf("make jail %s: %s: %w", c.ChrootBase, name, err)
		}
		next, err := openat(int(dir.Fd()), name, unix.O_RDONLY|unix.O_DIRECTORY)
		if dir != jail {
			dir.Close()
		}
		if err != nil {
			return "", err
		}
		dir = next
	}
	root := dir
	defer root.Close()
	for i, f := range files {
		if err := placeJailFile(root, f, fds[i], p.UID); err != nil {
			return "", fmt.Errorf("jail %s: %s (%s): %w", c.ChrootBase, f.Name, f.Path, err)
		}
	}
	return mountJail(jail, c.ID, p)
}

// openOwnerDir opens dir, refusing a symlink anywhere on its path and a
// directory that is not owner's.
func openOwnerDir(dir string, owner int) (*os.File, error) {
	fd, err := openNoSymlinks(dir, unix.O_DIRECTORY)
	if err != nil {
		if errors.Is(err, unix.ELOOP) {
			return nil, fmt.Errorf("%s: a symlink on the path: %w", dir, errdefs.ErrPermissionDenied)
		}
		return nil, errdefs.FromFS(fmt.Errorf("open %s: %w", dir, err))
	}
	f := os.NewFile(uintptr(fd), dir)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		f.Close()
		return nil, err
	}
	if int(st.Uid) != owner {
		f.Close()
		return nil, fmt.Errorf("%s is owned by uid %d, not the owner (%d): %w", dir, st.Uid, owner, errdefs.ErrPermissionDenied)
	}
	return f, nil
}

// openNoSymlinks opens the absolute, clean path with O_PATH (flags may
// add O_DIRECTORY),
// one component at a time from /, refusing a symlink anywhere on it
// (ELOOP), as openat2's RESOLVE_NO_SYMLINKS does where that is allowed
// (systemd-nspawn's seccomp filter refuses openat2 with ENOSYS).
func openNoSymlinks(path string, flags int) (int, error) {
	if !filepath.IsAbs(path) || filepath.Clean(path) != path {
		return -1, fmt.Errorf("%q: not an absolute, clean path: %w", path, unix.EINVAL)
	}
	fd, err := unix.Open("/", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	parts := strings.Split(strings.TrimPrefix(path, "/"), "/")
	for i, part := range parts {
		if part == "" {
			continue
		}
		// O_PATH|O_NOFOLLOW opens a symlink itself, so that it is told
		// from a file that is not a directory.
		next, err := unix.Openat(fd, part, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		unix.Close(fd)
		if err != nil {
			return -1, err
		}
		var st unix.Stat_t
		if err := unix.Fstat(next, &st); err != nil {
			unix.Close(next)
			return -1, err
		}
		wantDir := i < len(parts)-1 || flags&unix.O_DIRECTORY != 0
		switch {
		case st.Mode&unix.S_IFMT == unix.S_IFLNK:
			err = unix.ELOOP
		case wantDir && st.Mode&unix.S_IFMT != unix.S_IFDIR:
			err = unix.ENOTDIR
		}
		if err != nil {
			unix.Close(next)
			return -1, err
		}
		fd = next
	}
	return fd, nil
}

// mkdirat makes directory name in dirfd (a directory of root's that only
// root can write) with mode 0755 whatever the umask (the helper's unit
// sets 0077): the owner's Firecracker and daemon reach its sockets
// through it.
func mkdirat(dirfd int, name string) error {
	if err := unix.Mkdirat(dirfd, name, 0o755); err != nil {
		return err
	}
	return unix.Fchmodat(dirfd, name, 0o755, 0)
}

// openat opens name in dirfd, not following a symlink.
func openat(dirfd int, name string, flags int) (*os.File, error) {
	fd, err := unix.Openat(dirfd, name, flags|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", name, err)
	}
	return os.NewFile(uintptr(fd), name), nil
}

// checkRootDir refuses d unless it is a directory of root's that only
// root can write.
func checkRootDir(d *os.File, name string) error {
	var st unix.Stat_t
	if err := unix.Fstat(int(d.Fd()), &st); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR || st.Uid != 0 || st.Mode&0o022 != 0 {
		return fmt.Errorf("%s is not a directory only root can write: %w", name, errdefs.ErrPermissionDenied)
	}
	return nil
}

// maxJailCopy bounds a read-only file the helper copies into a jail when
// it cannot hard-link it (a kernel, an initrd; not an image).
const maxJailCopy = 512 << 20

// placeJailFile puts f into the jail's root directory from fd, the
// daemon's descriptor (which proves the owner could open it, read-write
// for a writable drive): a hard link of that very file; where the
// daemon's mount is not the helper's (systemd gives each unit its own
// mount namespace), a link of the same file (device and inode) opened
// here with no symlink on its path; and for a small read-only file on
// another filesystem, a copy.
func placeJailFile(root *os.File, f firecracker.JailFile, fd *os.File, owner int) error {
	var st unix.Stat_t
	if err := unix.Fstat(int(fd.Fd()), &st); err != nil {
		return err
	}
	if firecracker.IsPipe(f.Name) {
		// The copier reading it is the owner's, and so is Firecracker.
		if st.Mode&unix.S_IFMT != unix.S_IFIFO || int(st.Uid) != owner {
			return fmt.Errorf("not a named pipe of the owner's (uid %d): %w", owner, errdefs.ErrPermissionDenied)
		}
		err := unix.Linkat(int(fd.Fd()), "", int(root.Fd()), f.Name, unix.AT_EMPTY_PATH)
		if errors.Is(err, unix.EXDEV) { // sent from another mount of it
			same, serr := openSame(f.Path, &st)
			if serr != nil {
				return serr
			}
			err = unix.Linkat(int(same.Fd()), "", int(root.Fd()), f.Name, unix.AT_EMPTY_PATH)
			same.Close()
		}
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return fmt.Errorf("not a regular file: %w", errdefs.ErrPermissionDenied)
	}
	if isTemplateFile(f.Name) {
		return placeTemplateFile(root, f, &st)
	}
	if f.Writable {
		fl, err := unix.FcntlInt(fd.Fd(), unix.F_GETFL, 0)
		if err != nil {
			return err
		}
		if fl&unix.O_ACCMODE != unix.O_RDWR {
			return fmt.Errorf("a writable drive must come open for reading and writing: %w", errdefs.ErrPermissionDenied)
		}
	}
	rootfd := int(root.Fd())
	err := unix.Linkat(int(fd.Fd()), "", rootfd, f.Name, unix.AT_EMPTY_PATH)
	if !errors.Is(err, unix.EXDEV) {
		return err
	}
	if same, serr := openSame(f.Path, &st); serr == nil {
		err = unix.Linkat(int(same.Fd()), "", rootfd, f.Name, unix.AT_EMPTY_PATH)
		same.Close()
		if !errors.Is(err, unix.EXDEV) {
			return err
		}
	}
	if f.Writable {
		return fmt.Errorf("cannot hard-link a writable drive into the jail (a different filesystem from the VM's directory): keep the VM's disk in its directory: %w", errdefs.ErrFailedPrecondition)
	}
	if st.Size > maxJailCopy {
		return fmt.Errorf("%d bytes on a different filesystem from the VM's directory, too big to copy into the jail (at most %d): keep banger's state on one filesystem: %w", st.Size, maxJailCopy, errdefs.ErrFailedPrecondition)
	}
	out, err := openatCreate(rootfd, f.Name)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, io.NewSectionReader(fd, 0, st.Size))
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return err
}

// openSame opens path with no symlink on the way and returns it only if
// it is the file st describes.
func openSame(path string, st *unix.Stat_t) (*os.File, error) {
	fd, err := openNoSymlinks(path, 0)
	if err != nil {
		return nil, err
	}
	var got unix.Stat_t
	if err := unix.Fstat(fd, &got); err != nil || got.Dev != st.Dev || got.Ino != st.Ino {
		unix.Close(fd)
		return nil, fmt.Errorf("%s is not the file the daemon sent", path)
	}
	return os.NewFile(uintptr(fd), path), nil
}

func openatCreate(dirfd int, name string) (*os.File, error) {
	fd, err := unix.Openat(dirfd, name, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o444)
	if err != nil {
		return nil, err
	}
	// Readable by the owner's Firecracker whatever the umask.
	if err := unix.Fchmod(fd, 0o444); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), name), nil
}

// mountJail bind-mounts jail at <MountDir>/<id>, private, and returns that
// path. The mount holds the directory itself, whatever the owner renames
// around it afterwards.
func mountJail(jail *os.File, id string, p *JailerPolicy) (string, error) {
	if err := os.MkdirAll(p.MountDir, 0o711); err != nil {
		return "", err
	}
	// The jailer's firecracker (as the owner) resolves paths through it
	// (the test double does; the real one is chrooted by then).
	if err := os.Chmod(p.MountDir, 0o711); err != nil {
		return "", err
	}
	target := filepath.Join(p.MountDir, id)
	unmountJail(target)
	if err := os.Mkdir(target, 0o700); err != nil {
		return "", err
	}
	if err := unix.Mount(fmt.Sprintf("/proc/self/fd/%d", jail.Fd()), target, "", unix.MS_BIND, ""); err != nil {
		os.Remove(target)
		return "", fmt.Errorf("mount jail at %s: %w", target, err)
	}
	if err := unix.Mount("", target, "", unix.MS_PRIVATE, ""); err != nil {
		unmountJail(target)
		return "", fmt.Errorf("mount jail at %s private: %w", target, err)
	}
	return target, nil
}

// unmountJail undoes mountJail, if it happened.
func unmountJail(target string) {
	unix.Unmount(target, unix.MNT_DETACH)
	os.Remove(target)
}

// removeJail removes c's jail: its mount and the tree in the VM
// directory, which only root can (the jailer's copy of firecracker and its
// device nodes are root's). It refuses while a process launchJailer
// started for that jail still runs.
func removeJail(c *firecracker.JailerConfig, p *JailerPolicy) error {
	for _, l := range readLaunched(p) {
		if l.ID == c.ID {
			return fmt.Errorf("jail %s: its firecracker (pid %d) still runs: stop the VM first: %w", c.ChrootBase, l.PID, errdefs.ErrFailedPrecondition)
		}
	}
	jailMu.Lock()
	defer jailMu.Unlock()
	return removeJailTree(c, p)
}

// removeJailTree is removeJail without the running check, for the caller
// holding jailMu or building the jail.
func removeJailTree(c *firecracker.JailerConfig, p *JailerPolicy) error {
	unmountJail(filepath.Join(p.MountDir, c.ID))
	vm, err := openOwnerDir(filepath.Dir(c.ChrootBase), p.UID)
	if errdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	defer vm.Close()
	var st unix.Stat_t
	if err := unix.Fstatat(int(vm.Fd()), firecracker.JailDirName, &st, unix.AT_SYMLINK_NOFOLLOW); errors.Is(err, unix.ENOENT) {
		return nil
	} else if err != nil {
		return err
	}
	if st.Uid != 0 {
		return fmt.Errorf("%s is not root's: it is not a jail this helper built; remove it as its owner: %w", c.ChrootBase, errdefs.ErrPermissionDenied)
	}
	// Within the VM directory, never following a symlink: the jail's
	// root is the owner's once the jailer ran.
	r, err := os.OpenRoot(fmt.Sprintf("/proc/self/fd/%d", vm.Fd()))
	if err != nil {
		return err
	}
	defer r.Close()
	if err := r.RemoveAll(firecracker.JailDirName); err != nil {
		return fmt.Errorf("remove jail %s: %w", c.ChrootBase, err)
	}
	return nil
}

// launchJailer builds c's jail with files (their descriptors after the
// console's in in) and starts the policy's jailer in it, with c's other
// arguments, its stdout and stderr on the console (a file or the pipe of
// a log copier, from the daemon), stdin on /dev/null, in a new session
// and with an empty environment but PATH. It is the helper's child only
// until the helper exits: nothing ties it to the helper (systemd's
// KillMode=process leaves it running when the helper's unit restarts).
// When it exits while this helper runs, its jail is removed. It returns
// the pid and a pidfd for it.
func launchJailer(c *firecracker.JailerConfig, files []firecracker.JailFile, p *JailerPolicy, in []*os.File, log *slog.Logger) (int, *os.File, error) {
	if len(in) != 1+len(files) {
		return 0, nil, fmt.Errorf("want the console log and %d jail file descriptors with the request, got %d: %w", len(files), len(in), errdefs.ErrInvalidArgument)
	}
	console := in[0]
	fi, err := console.Stat()
	if err != nil || !fi.Mode().IsRegular() && fi.Mode().Type() != fs.ModeNamedPipe {
		return 0, nil, fmt.Errorf("console log descriptor is neither a regular file nor a pipe: %w", errdefs.ErrInvalidArgument)
	}
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return 0, nil, err
	}
	defer devnull.Close()
	jailMu.Lock()
	defer jailMu.Unlock()
	target, err := buildJail(c, files, in[1:], p)
	if err != nil {
		return 0, nil, err
	}
	jc := *c
	jc.ChrootBase = target
	cmd := exec.Command(p.Jailer, firecracker.JailerArgs(jc)...)
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devnull, console, console
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		removeJailTree(c, p)
		return 0, nil, fmt.Errorf("start jailer %s: %w", p.Jailer, err)
	}
	pid := cmd.Process.Pid
	// Not reaped yet (only the goroutine below reaps), so the pid is the
	// jailer's.
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		removeJailTree(c, p)
		return 0, nil, fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	go func() {
		cmd.Wait()
		if err := removeJail(c, p); err != nil {
			log.Warn("remove the jail of an exited firecracker", "jail", c.ID, "pid", pid, "err", err)
		}
	}()
	pidfd := os.NewFile(uintptr(fd), "pidfd")
	st, err := startTime(pid)
	if err == nil {
		err = recordLaunched(p, launched{PID: pid, Start: st, ID: c.ID})
	}
	if err != nil {
		unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
		pidfd.Close()
		return 0, nil, fmt.Errorf("record jailer %d: %w", pid, err)
	}
	return pid, pidfd, nil
}

// LaunchJailer implements firecracker.Launcher: the helper validates c
// and files against its JailerPolicy, builds the jail and starts the
// jailer. The files go as descriptors, opened here (read-write for a
// writable drive), after the console's.
func (c *Client) LaunchJailer(ctx context.Context, jc firecracker.JailerConfig, files []firecracker.JailFile, console *os.File) (*proc.Process, error) {
	fds := []*os.File{console}
	defer func() {
		for _, f := range fds[1:] {
			f.Close()
		}
	}()
	for _, f := range files {
		flag := os.O_RDONLY
		if f.Writable {
			flag = os.O_RDWR
		}
		if firecracker.IsPipe(f.Name) {
			// Opening a named pipe read-only would wait for a writer.
			flag = os.O_RDWR | syscall.O_NONBLOCK | syscall.O_NOFOLLOW
		}
		fd, err := os.OpenFile(f.Path, flag, 0)
		if err != nil {
			return nil, fmt.Errorf("jail file %s: %w", f.Name, err)
		}
		fds = append(fds, fd)
	}
	resp, f, err := c.callWith(ctx, &request{Op: OpLaunchJailer, Jailer: &jc, JailFiles: files}, fds...)
	if err != nil {
		return nil, err
	}
	if f == nil {
		return nil, fmt.Errorf("root helper %s: no pidfd in reply: %w", OpLaunchJailer, errProtocol)
	}
	return proc.FromPidfd(resp.PID, f)
}

// RemoveJail implements firecracker.Launcher.
func (c *Client) RemoveJail(ctx context.Context, jc firecracker.JailerConfig) error {
	return c.do(ctx, &request{Op: OpRemoveJail, Jailer: &jc})
}

var _ firecracker.Launcher = (*Client)(nil)

// OpKillJailer sends SIGKILL to a process launchJailer started.
const OpKillJailer = "killJailer"

// launched is one process launchJailer started: its pid and start time
// (field 22 of /proc/<pid>/stat), which together name it even after the
// pid is reused.
type launched struct {
	PID   int    `json:"pid"`
	Start uint64 `json:"start"`
	ID    string `json:"id"`
}

// startTime reads process pid's start time, in clock ticks since boot
// (field 22 of /proc/<pid>/stat). A zombie, which nothing reaped yet
// (its parent, the helper, is gone), has none: it is dead.
func startTime(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 22-2 {
		return 0, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	if f[0] == "Z" || f[0] == "X" {
		return 0, fmt.Errorf("process %d has exited", pid)
	}
	return strconv.ParseUint(f[22-3], 10, 64)
}

// readLaunched returns the records in the policy's state file that still
// name a live process.
func readLaunched(p *JailerPolicy) []launched {
	var all, live []launched
	if b, err := os.ReadFile(p.StateFile); err == nil {
		json.Unmarshal(b, &all)
	}
	for _, l := range all {
		if st, err := startTime(l.PID); err == nil && st == l.Start {
			live = append(live, l)
		}
	}
	return live
}

// recordLaunched adds l to the state file, which survives helper restarts
// (it is in the helper's runtime directory), dropping dead records.
func recordLaunched(p *JailerPolicy, l launched) error {
	b, err := json.Marshal(append(readLaunched(p), l))
	if err != nil {
		return err
	}
	return proc.WriteFileAtomic(p.StateFile, b)
}

// killJailer sends SIGKILL to pid if launchJailer started it (its record
// in the state file matches the process's start time); anything else is
// refused. The daemon needs it only while the jailer still runs as root:
// once it has exec'd firecracker as the owner, the owner can signal it.
func killJailer(p *JailerPolicy, pid int) error {
	for _, l := range readLaunched(p) {
		if l.PID == pid {
			if err := unix.Kill(pid, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
				return fmt.Errorf("kill jailer %d: %w", pid, err)
			}
			return nil
		}
	}
	return fmt.Errorf("process %d was not started by this helper's launchJailer: %w", pid, errdefs.ErrPermissionDenied)
}

// KillJailer implements firecracker.Launcher.
func (c *Client) KillJailer(ctx context.Context, pid int) error {
	return c.do(ctx, &request{Op: OpKillJailer, PID: pid})
}
