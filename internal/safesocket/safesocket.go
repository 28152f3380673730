// Package safesocket creates and checks the directories and unix sockets
// that banger's processes talk through, so that another local user can
// neither plant them in advance nor answer in place of the daemon or the
// root helper. It is the one place that listens on, dials and
// authenticates banger's sockets.
//
// Refusals carry errdefs.ErrPermissionDenied (someone else's directory,
// socket or peer) or errdefs.ErrFailedPrecondition (a symlink, a loose
// mode, a file where a socket should be), and name the path and the fix.
package safesocket

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bangervm/banger/errdefs"
)

// EnsureDir creates path with mode if it is missing, or checks it if it
// exists: a real directory (not a symlink), owned by uid, writable by
// nobody else; one that passes is given mode.
// Missing parents are created 0700; every parent must be owned by root or
// uid and writable by no one else, unless it is sticky (like /tmp), where
// nobody can replace another's entries.
func EnsureDir(path string, uid int, mode os.FileMode) error {
	path, err := absClean(path)
	if err != nil {
		return err
	}
	if err := ensureParents(filepath.Dir(path), uid); err != nil {
		return err
	}
	if err := os.Mkdir(path, mode); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("create directory %s: %w", path, err)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		return fmt.Errorf("directory %s: %w", path, err)
	}
	if err := checkOwn(path, fi, uid); err != nil {
		return err
	}
	// Mkdir's mode went through the umask; an existing one may be looser
	// in ways that do not matter for safety (0755) but do to the caller.
	if fi.Mode().Perm() != mode.Perm() {
		if err := os.Chmod(path, mode.Perm()); err != nil {
			return fmt.Errorf("chmod %s: %w", path, err)
		}
	}
	return nil
}

// CheckDir checks path and its parents as EnsureDir does, without creating
// or changing anything. A missing path is an error matching fs.ErrNotExist.
func CheckDir(path string, uid int) error {
	path, err := absClean(path)
	if err != nil {
		return err
	}
	for _, p := range parents(filepath.Dir(path)) {
		fi, err := os.Lstat(p)
		if err != nil {
			return fmt.Errorf("directory %s: %w", p, err)
		}
		if err := checkParent(p, fi, uid); err != nil {
			return err
		}
	}
	fi, err := os.Lstat(path)
	if err != nil {
		return fmt.Errorf("directory %s: %w", path, err)
	}
	return checkOwn(path, fi, uid)
}

func absClean(path string) (string, error) {
	p, err := filepath.Abs(path)
	if err != nil {
		return "", fmt.Errorf("directory %s: %w", path, err)
	}
	return p, nil
}

// parents lists dir and its ancestors, root first.
func parents(dir string) []string {
	var out []string
	for {
		out = append(out, dir)
		up := filepath.Dir(dir)
		if up == dir {
			break
		}
		dir = up
	}
	slices.Reverse(out)
	return out
}

func ensureParents(dir string, uid int) error {
	for _, p := range parents(dir) {
		fi, err := os.Lstat(p)
		if errors.Is(err, fs.ErrNotExist) {
			if err := os.Mkdir(p, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("create directory %s: %w", p, err)
			}
			fi, err = os.Lstat(p)
		}
		if err != nil {
			return fmt.Errorf("directory %s: %w", p, err)
		}
		if err := checkParent(p, fi, uid); err != nil {
			return err
		}
	}
	return nil
}

// checkParent accepts a parent directory nobody but root and uid can
// change. A symlink is followed only if root or uid made it: then its
// target is one they chose.
func checkParent(path string, fi fs.FileInfo, uid int) error {
	owner := ownerOf(fi)
	if owner != 0 && owner != uid {
		return planted(path, fmt.Sprintf("is owned by uid %d, not by you (uid %d) or root", owner, uid), errdefs.ErrPermissionDenied)
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		st, err := os.Stat(path)
		if err != nil {
			return fmt.Errorf("directory %s: %w", path, err)
		}
		if !st.IsDir() {
			return planted(path, "is a symlink to something other than a directory", errdefs.ErrFailedPrecondition)
		}
		return nil
	}
	if !fi.IsDir() {
		return planted(path, "is not a directory", errdefs.ErrFailedPrecondition)
	}
	if fi.Mode().Perm()&0o022 != 0 && fi.Mode()&fs.ModeSticky == 0 {
		return planted(path, fmt.Sprintf("is writable by others (mode %04o) and not sticky", fi.Mode().Perm()), errdefs.ErrFailedPrecondition)
	}
	return nil
}

// checkOwn accepts a directory that is uid's own and that nobody else can
// have put anything into.
func checkOwn(path string, fi fs.FileInfo, uid int) error {
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		return planted(path, "is a symlink", errdefs.ErrFailedPrecondition)
	case !fi.IsDir():
		return planted(path, "is not a directory", errdefs.ErrFailedPrecondition)
	case ownerOf(fi) != uid:
		return planted(path, fmt.Sprintf("is owned by uid %d, not by you (uid %d)", ownerOf(fi), uid), errdefs.ErrPermissionDenied)
	case fi.Mode().Perm()&0o022 != 0:
		return planted(path, fmt.Sprintf("is writable by others (mode %04o)", fi.Mode().Perm()), errdefs.ErrFailedPrecondition)
	}
	return nil
}

// planted words a refusal: what is wrong with path, why it matters and
// the fix.
func planted(path, what string, class error) error {
	return fmt.Errorf("%s %s: another user may have created it to intercept banger; check it and remove it (as root if need be), or point banger elsewhere: %w", path, what, class)
}

func ownerOf(fi fs.FileInfo) int {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int(st.Uid)
	}
	return -1
}

// Listen listens on the unix socket path, which must be in a directory
// that CheckDir accepts for this process's user, and sets its mode. A
// socket left there by a process that died is removed; one somebody
// answers on is errdefs.ErrAlreadyExists, and anything other than a
// socket (a symlink, a file) is errdefs.ErrFailedPrecondition. The socket
// is created under a umask that keeps it private until the chmod, and is
// removed when the listener closes.
func Listen(path string, mode os.FileMode) (*net.UnixListener, error) {
	uid := os.Geteuid()
	if err := CheckDir(filepath.Dir(path), uid); err != nil {
		return nil, fmt.Errorf("socket %s: %w", path, err)
	}
	if err := removeStale(path, uid); err != nil {
		return nil, err
	}
	old := unix.Umask(0o077)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	unix.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, mode); err != nil {
		ln.Close()
		return nil, fmt.Errorf("chmod %s: %w", path, err)
	}
	return ln, nil
}

func removeStale(path string, uid int) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("socket %s: %w", path, err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("socket %s: exists and is not a socket: remove it: %w", path, errdefs.ErrFailedPrecondition)
	}
	// Root may own sockets it handed to another user (the root helper's).
	if owner := ownerOf(fi); uid != 0 && owner != uid {
		return planted(path, fmt.Sprintf("is a socket owned by uid %d, not by you (uid %d)", owner, uid), errdefs.ErrPermissionDenied)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("socket %s: another process is serving on it: %w", path, errdefs.ErrAlreadyExists)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove stale socket %s: %w", path, err)
	}
	return nil
}

// PeerCred returns the credentials of the process at the other end of a
// unix connection (SO_PEERCRED): for an accepted connection the process
// that connected, for a dialled one the process that listened.
func PeerCred(c net.Conn) (unix.Ucred, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return unix.Ucred{}, fmt.Errorf("peer credentials of a %T: not a unix connection", c)
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return unix.Ucred{}, fmt.Errorf("SO_PEERCRED: %w", err)
	}
	var cred *unix.Ucred
	var gerr error
	if err := raw.Control(func(fd uintptr) {
		cred, gerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return unix.Ucred{}, fmt.Errorf("SO_PEERCRED: %w", err)
	}
	if gerr != nil {
		return unix.Ucred{}, fmt.Errorf("SO_PEERCRED: %w", gerr)
	}
	return *cred, nil
}

// Allowed reports whether uid is root or one of uids.
func Allowed(uid uint32, uids ...int) bool {
	return uid == 0 || slices.Contains(uids, int(uid))
}

// Dial connects to the unix socket path and, before anything is sent,
// checks that the socket file is a socket (not a symlink) owned by one of
// uids or root, and that the process answering runs as one of uids or
// root. With no uids, this process's effective uid is expected. When
// nothing listens, the error is the dialer's *net.OpError, as from
// net.Dial.
func Dial(ctx context.Context, path string, uids ...int) (*net.UnixConn, error) {
	if len(uids) == 0 {
		uids = []int{os.Geteuid()}
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, err
	}
	uc := c.(*net.UnixConn)
	if err := checkServer(uc, path, uids); err != nil {
		uc.Close()
		return nil, err
	}
	return uc, nil
}

// DialRoot connects to a socket that root serves, such as the root
// helper's, whose socket file root hands to another user. Instead of the
// file's owner, the directory is checked (CheckDir): root's (or this
// user's) and writable by nobody else, so that nobody else can have put
// the socket there. The process answering must run as root (or as this
// user: a helper a test started).
func DialRoot(ctx context.Context, path string) (*net.UnixConn, error) {
	self := os.Geteuid()
	dir := filepath.Dir(path)
	if err := CheckDir(dir, 0); err != nil && (self == 0 || CheckDir(dir, self) != nil) {
		return nil, fmt.Errorf("socket %s: %w", path, err)
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, err
	}
	uc := c.(*net.UnixConn)
	if err := checkPeer(uc, path, []int{self}); err != nil {
		uc.Close()
		return nil, err
	}
	return uc, nil
}

func checkServer(c *net.UnixConn, path string, uids []int) error {
	fi, err := os.Lstat(path)
	if err != nil {
		return fmt.Errorf("socket %s: %w", path, err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return planted(path, "is not a socket (a symlink?)", errdefs.ErrFailedPrecondition)
	}
	if owner := ownerOf(fi); owner < 0 || !Allowed(uint32(owner), uids...) {
		return planted(path, fmt.Sprintf("is a socket owned by uid %d, not by %s", owner, whoName(uids)), errdefs.ErrPermissionDenied)
	}
	return checkPeer(c, path, uids)
}

func checkPeer(c *net.UnixConn, path string, uids []int) error {
	cred, err := PeerCred(c)
	if err != nil {
		return fmt.Errorf("socket %s: %w", path, err)
	}
	if !Allowed(cred.Uid, uids...) {
		return planted(path, fmt.Sprintf("is answered by pid %d running as uid %d, not by %s", cred.Pid, cred.Uid, whoName(uids)), errdefs.ErrPermissionDenied)
	}
	return nil
}

func whoName(uids []int) string {
	var s []string
	for _, u := range uids {
		if u != 0 {
			s = append(s, fmt.Sprintf("uid %d", u))
		}
	}
	return strings.Join(append(s, "root"), " or ")
}
