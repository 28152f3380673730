// Package paths decides where banger keeps its files: XDG config, state,
// cache and runtime directories by default, or everything under one
// directory when BANGER_HOME is set (tests and side-by-side installs rely on
// that). File names inside those directories are constants here so that no
// other package invents its own.
package paths

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/safesocket"
)

// maxSocketPath is the longest path AF_UNIX accepts on Linux (108 bytes
// including the terminating NUL).
const maxSocketPath = 107

// Layout is the set of directories one banger installation uses.
type Layout struct {
	Config  string // config.toml
	State   string // state store, images, kernels, daemon log
	Cache   string // layer-blob cache
	Runtime string // daemon socket, pidfile and lock
}

// RootRuntime is root's runtime directory when XDG_RUNTIME_DIR does not
// name one of root's own (as under sudo).
const RootRuntime = "/run/banger/daemon"

// FromEnv returns the layout for the current user and environment.
func FromEnv() Layout {
	if h := os.Getenv("BANGER_HOME"); h != "" {
		h, _ = filepath.Abs(h)
		return Under(h)
	}
	home, _ := os.UserHomeDir()
	l := Layout{
		Config: xdg("XDG_CONFIG_HOME", filepath.Join(home, ".config")),
		State:  xdg("XDG_STATE_HOME", filepath.Join(home, ".local", "state")),
		Cache:  xdg("XDG_CACHE_HOME", filepath.Join(home, ".cache")),
	}
	l.Runtime = runtimeDir(os.Geteuid(), os.Getenv("XDG_RUNTIME_DIR"), "/run/user", os.TempDir())
	return l
}

// runtimeDir picks the directory of the socket, pidfile and lock for uid:
// $XDG_RUNTIME_DIR/banger if that directory is uid's (under sudo it is
// still the invoking user's, and not for root to write into), else
// RootRuntime for root, else runUser/UID/banger if the login manager made
// that directory for uid, else tmp/banger-UID. That last one is a
// predictable name in a directory everyone may write to, so Ensure and
// Check refuse it unless it is uid's own, private directory.
func runtimeDir(uid int, xdg, runUser, tmp string) string {
	if xdg != "" && filepath.IsAbs(xdg) && ownedBy(xdg, uid) {
		return filepath.Join(xdg, "banger")
	}
	if uid == 0 {
		return RootRuntime
	}
	if d := filepath.Join(runUser, strconv.Itoa(uid)); ownedBy(d, uid) {
		return filepath.Join(d, "banger")
	}
	return filepath.Join(tmp, "banger-"+strconv.Itoa(uid))
}

func ownedBy(dir string, uid int) bool {
	fi, err := os.Stat(dir)
	if err != nil || !fi.IsDir() {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && int(st.Uid) == uid
}

// Under returns a layout with every directory inside home.
func Under(home string) Layout {
	return Layout{
		Config:  filepath.Join(home, "config"),
		State:   filepath.Join(home, "state"),
		Cache:   filepath.Join(home, "cache"),
		Runtime: filepath.Join(home, "run"),
	}
}

func xdg(env, def string) string {
	if v := os.Getenv(env); v != "" && filepath.IsAbs(v) {
		return filepath.Join(v, "banger")
	}
	return filepath.Join(def, "banger")
}

// ConfigFile is the user's config.toml.
func (l Layout) ConfigFile() string { return filepath.Join(l.Config, "config.toml") }

// Contexts lists the CLI's contexts (see package contexts).
func (l Layout) Contexts() string { return filepath.Join(l.Config, "contexts.json") }

// DB is the SQLite state store.
func (l Layout) DB() string { return filepath.Join(l.State, "banger.db") }

// DaemonLog is bangerd's log file.
func (l Layout) DaemonLog() string { return filepath.Join(l.State, "bangerd.log") }

// Images holds published root filesystems, one file per image digest.
func (l Layout) Images() string { return filepath.Join(l.State, "images") }

// Kernels holds one directory per kernel.
func (l Layout) Kernels() string { return filepath.Join(l.State, "kernels") }

// Tmp holds staging work; everything in it is removed when the daemon
// starts, so a crash mid-pull leaves nothing that outlives a restart.
func (l Layout) Tmp() string { return filepath.Join(l.State, "tmp") }

// Blobs is the layer-blob cache shared by every image.
func (l Layout) Blobs() string { return filepath.Join(l.Cache, "blobs") }

// Templates is the VM template store (see package vmtemplate).
func (l Layout) Templates() string { return filepath.Join(l.Cache, "templates") }

// Socket is the daemon's API socket.
func (l Layout) Socket() string { return filepath.Join(l.Runtime, "bangerd.sock") }

// PIDFile holds the daemon's process id.
func (l Layout) PIDFile() string { return filepath.Join(l.Runtime, "bangerd.pid") }

// LockFile is held (flock) by the running daemon so a second one refuses to start.
func (l Layout) LockFile() string { return filepath.Join(l.Runtime, "bangerd.lock") }

// Check reports layouts that cannot work, such as a socket path too long
// for AF_UNIX, or that are not safe: a runtime directory that exists and
// is not this user's private directory (another user may have made it to
// receive what the CLI sends, or to have the daemon write through a
// symlink in it). The CLI runs it before it talks to the daemon.
func (l Layout) Check() error {
	if s := l.Socket(); len(s) > maxSocketPath {
		return fmt.Errorf("socket path %s is %d bytes, over the %d that unix sockets allow: set BANGER_HOME or XDG_RUNTIME_DIR to a shorter directory", s, len(s), maxSocketPath)
	}
	if err := safesocket.CheckDir(l.Runtime, os.Geteuid()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return runtimeError(err)
	}
	return nil
}

// Ensure creates every directory, 0700, or checks the ones that exist:
// each must be this user's, a real directory, writable by nobody else,
// under parents only root or this user can change (safesocket.EnsureDir).
func (l Layout) Ensure() error {
	uid := os.Geteuid()
	for _, d := range []string{l.Config, l.State, l.Cache, l.Runtime, l.Images(), l.Kernels(), l.Tmp(), l.Blobs()} {
		if err := safesocket.EnsureDir(d, uid, 0o700); err != nil {
			if d == l.Runtime {
				return runtimeError(err)
			}
			return err
		}
	}
	return nil
}

func runtimeError(err error) error {
	return fmt.Errorf("runtime directory (to use another, set XDG_RUNTIME_DIR to a private directory of your own): %w", err)
}

// OpenFile opens a file of the layout (pidfile, lock, log) as os.OpenFile
// does, but never through a symlink (O_NOFOLLOW), and only if it is a
// regular file. New files get perm.
func OpenFile(path string, flag int, perm os.FileMode) (*os.File, error) {
	f, err := os.OpenFile(path, flag|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, perm)
	if errors.Is(err, syscall.ELOOP) {
		return nil, fmt.Errorf("open %s: it is a symlink, which banger does not follow here: remove it: %w", path, errdefs.ErrFailedPrecondition)
	}
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = fmt.Errorf("%s: not a regular file (%v): remove it: %w", path, fi.Mode().Type(), errdefs.ErrFailedPrecondition)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}
