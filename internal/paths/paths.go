// Package paths decides where banger keeps its files: XDG config, state,
// cache and runtime directories by default, or everything under one
// directory when BANGER_HOME is set (tests and side-by-side installs rely on
// that). File names inside those directories are constants here so that no
// other package invents its own.
package paths

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
)

// maxSocketPath is the longest path AF_UNIX accepts on Linux (108 bytes
// including the terminating NUL).
const maxSocketPath = 107

// Layout is the set of directories one banger installation uses.
type Layout struct {
	Config  string // config.toml
	State   string // state store, images, kernels, daemon log
	Cache   string // layer-blob cache
	Runtime string // daemon socket and pidfile
}

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
	if rt := os.Getenv("XDG_RUNTIME_DIR"); rt != "" {
		l.Runtime = filepath.Join(rt, "banger")
	} else {
		l.Runtime = filepath.Join(os.TempDir(), "banger-"+strconv.Itoa(os.Getuid()))
	}
	return l
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

// Socket is the daemon's API socket.
func (l Layout) Socket() string { return filepath.Join(l.Runtime, "bangerd.sock") }

// PIDFile holds the daemon's process id.
func (l Layout) PIDFile() string { return filepath.Join(l.Runtime, "bangerd.pid") }

// LockFile is held (flock) by the running daemon so a second one refuses to start.
func (l Layout) LockFile() string { return filepath.Join(l.Runtime, "bangerd.lock") }

// Check reports layouts that cannot work, such as a socket path too long
// for AF_UNIX.
func (l Layout) Check() error {
	if s := l.Socket(); len(s) > maxSocketPath {
		return fmt.Errorf("socket path %s is %d bytes, over the %d that unix sockets allow: set BANGER_HOME or XDG_RUNTIME_DIR to a shorter directory", s, len(s), maxSocketPath)
	}
	return nil
}

// Ensure creates every directory with owner-only permissions.
func (l Layout) Ensure() error {
	for _, d := range []string{l.Config, l.State, l.Cache, l.Runtime, l.Images(), l.Kernels(), l.Tmp(), l.Blobs()} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("create %s: %w", d, err)
		}
	}
	// MkdirAll leaves an existing runtime dir as it was; the socket's
	// safety depends on this one being private.
	if err := os.Chmod(l.Runtime, 0o700); err != nil {
		return fmt.Errorf("chmod %s: %w", l.Runtime, err)
	}
	return nil
}
