// Package install is banger's system install as data: where `banger
// system install` puts the binaries, the install record and the two
// systemd units; the record itself (/etc/banger/install.toml); and the
// units rendered for an owner; and Install and Uninstall, which put them in
// place (rolling back on failure) and drive systemd through a small
// interface that hostcmd.Systemctl implements.
package install

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"

	"github.com/pelletier/go-toml/v2"

	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/paths"
)

// Schema is the version of install.toml's layout this binary writes.
const Schema = 1

// Unit names.
const (
	DaemonUnitName = "bangerd.service"
	HelperUnitName = "bangerd-root.service"
)

// RecordPath is where the install record lives. The CLI reads it to find
// the installed daemon.
const RecordPath = "/etc/banger/install.toml"

// Paths are the files and directories an install owns.
type Paths struct {
	CLI          string `toml:"cli" json:"cli"`                    // banger
	Daemon       string `toml:"daemon" json:"daemon"`              // bangerd, also the root helper
	Agent        string `toml:"agent" json:"agent"`                // banger-agent, put into every guest's boot
	ConfigDir    string `toml:"config_dir" json:"configDir"`       // /etc/banger
	Record       string `toml:"record" json:"record"`              // install.toml
	UnitDir      string `toml:"unit_dir" json:"unitDir"`           // where the two units go
	HelperSocket string `toml:"helper_socket" json:"helperSocket"` // the root helper's socket
	// DaemonRuntime is the XDG_RUNTIME_DIR the daemon's unit gives it:
	// a directory systemd creates for the owner (0700) and keeps across
	// restarts. The daemon's socket is in its banger/ subdirectory, as
	// in a login session.
	DaemonRuntime string `toml:"daemon_runtime" json:"daemonRuntime"`
}

// DefaultPaths are the paths of a system install.
func DefaultPaths() Paths {
	return Paths{
		CLI:           "/usr/local/bin/banger",
		Daemon:        "/usr/local/bin/bangerd",
		Agent:         "/usr/local/lib/banger/banger-agent",
		ConfigDir:     "/etc/banger",
		Record:        RecordPath,
		UnitDir:       "/etc/systemd/system",
		HelperSocket:  "/run/banger/root.sock",
		DaemonRuntime: "/run/bangerd",
	}
}

// DaemonUnit is the daemon's unit file.
func (p Paths) DaemonUnit() string { return filepath.Join(p.UnitDir, DaemonUnitName) }

// HelperUnit is the root helper's unit file.
func (p Paths) HelperUnit() string { return filepath.Join(p.UnitDir, HelperUnitName) }

// Runtime is the installed daemon's runtime directory (socket, pidfile,
// lock), as paths.FromEnv computes it under the unit's XDG_RUNTIME_DIR.
func (p Paths) Runtime() string { return filepath.Join(p.DaemonRuntime, "banger") }

// DaemonSocket is the installed daemon's API socket.
func (p Paths) DaemonSocket() string { return paths.Layout{Runtime: p.Runtime()}.Socket() }

// Owner is the user the daemon runs as and the only one, besides root,
// that the daemon and the helper serve.
type Owner struct {
	UID  int    `toml:"uid" json:"uid"`
	GID  int    `toml:"gid" json:"gid"`
	Name string `toml:"name" json:"name"`
	Home string `toml:"home" json:"home"`
}

// Layout is where the owner's data lives when the installed daemon runs:
// the XDG defaults under the owner's home (a system unit gets HOME but
// none of the user's XDG variables) and the unit's runtime directory.
func (o Owner) Layout(p Paths) paths.Layout {
	return paths.Layout{
		Config:  filepath.Join(o.Home, ".config", "banger"),
		State:   filepath.Join(o.Home, ".local", "state", "banger"),
		Cache:   filepath.Join(o.Home, ".cache", "banger"),
		Runtime: p.Runtime(),
	}
}

// userName is what systemd accepts in User= without quoting, and what
// useradd creates by default.
var userName = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}$`)

// safePath is a path that needs no quoting in a unit file.
var safePath = regexp.MustCompile(`^/[A-Za-z0-9._/@+-]*$`)

// Check reports an owner the units cannot name safely.
func (o Owner) Check() error {
	if !userName.MatchString(o.Name) {
		return fmt.Errorf("owner name %q: not a plain user name (lowercase letters, digits, _ and -): %w", o.Name, errdefs.ErrInvalidArgument)
	}
	if o.UID < 0 || o.GID < 0 {
		return fmt.Errorf("owner %s: uid %d gid %d: %w", o.Name, o.UID, o.GID, errdefs.ErrInvalidArgument)
	}
	if !safePath.MatchString(o.Home) || filepath.Clean(o.Home) != o.Home || o.Home == "/" {
		return fmt.Errorf("owner %s: home directory %q must be an absolute, clean path of plain characters, not /: %w", o.Name, o.Home, errdefs.ErrInvalidArgument)
	}
	return nil
}

// LookupOwner finds a user by name or numeric uid.
func LookupOwner(nameOrUID string) (Owner, error) {
	u, err := user.Lookup(nameOrUID)
	if err != nil {
		if _, nerr := strconv.Atoi(nameOrUID); nerr == nil {
			u, err = user.LookupId(nameOrUID)
		}
	}
	if err != nil {
		return Owner{}, fmt.Errorf("owner %q: no such user: %w", nameOrUID, errdefs.ErrNotFound)
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return Owner{}, fmt.Errorf("owner %s: uid %q: %w", u.Username, u.Uid, errdefs.ErrInvalidArgument)
	}
	gid, err := strconv.Atoi(u.Gid)
	if err != nil {
		return Owner{}, fmt.Errorf("owner %s: gid %q: %w", u.Username, u.Gid, errdefs.ErrInvalidArgument)
	}
	o := Owner{UID: uid, GID: gid, Name: u.Username, Home: u.HomeDir}
	return o, o.Check()
}

// Record is install.toml: who the install is for, what was installed and
// where.
type Record struct {
	Schema    int    `toml:"schema" json:"schema"`
	Version   string `toml:"version" json:"version"`
	Commit    string `toml:"commit" json:"commit"`
	BuildTime string `toml:"build_time" json:"buildTime"`
	Owner     Owner  `toml:"owner" json:"owner"`
	// KVMGroup is the group that may open /dev/kvm (udev's "kvm"), given
	// to the daemon as a supplementary group; empty where there is none.
	KVMGroup string `toml:"kvm_group" json:"kvmGroup,omitempty"`
	// Jailer and Firecracker, when set, are the binaries the root helper
	// may start for the owner (Firecracker under its jailer, which must
	// start as root); both root's all the way up (CheckRootBinary).
	Jailer      string `toml:"jailer,omitempty" json:"jailer,omitempty"`
	Firecracker string `toml:"firecracker,omitempty" json:"firecracker,omitempty"`
	Paths       Paths  `toml:"paths" json:"paths"`
}

// JailerEnabled reports whether the helper starts Firecracker's jailer.
func (r Record) JailerEnabled() bool { return r.Jailer != "" && r.Firecracker != "" }

// CheckRootBinary refuses a binary the root helper would run as root if
// anyone but root could change it: it must be an absolute, clean path of
// plain characters to a regular, executable file that root owns and only
// root can write, in directories that root owns and only root can write
// (or sticky, as /tmp, where no one else can replace root's entries).
func CheckRootBinary(path string) error {
	if !safePath.MatchString(path) || filepath.Clean(path) != path {
		return fmt.Errorf("%q: want an absolute, clean path of plain characters: %w", path, errdefs.ErrInvalidArgument)
	}
	resolved, err := filepath.EvalSymlinks(path)
	if err != nil {
		return errdefs.FromFS(fmt.Errorf("%s: %w", path, err))
	}
	if resolved != path {
		return fmt.Errorf("%s is a symlink to %s: give the real path: %w", path, resolved, errdefs.ErrInvalidArgument)
	}
	for cur := path; ; cur = filepath.Dir(cur) {
		fi, err := os.Lstat(cur)
		if err != nil {
			return errdefs.FromFS(fmt.Errorf("%s: %w", cur, err))
		}
		st, _ := fi.Sys().(*syscall.Stat_t)
		isFile := cur == path
		switch {
		case isFile && (!fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0):
			return fmt.Errorf("%s is not an executable file: %w", path, errdefs.ErrInvalidArgument)
		case st == nil || st.Uid != 0:
			return fmt.Errorf("%s is not root's, and the root helper would run %s as root: chown root it (or install it under /usr/local): %w", cur, path, errdefs.ErrPermissionDenied)
		case fi.Mode().Perm()&0o022 != 0 && (isFile || fi.Mode()&os.ModeSticky == 0):
			return fmt.Errorf("%s is writable by others than root, and the root helper would run %s as root: chmod go-w it: %w", cur, path, errdefs.ErrPermissionDenied)
		}
		if cur == "/" {
			return nil
		}
	}
}

// Read reads the record at path; errdefs.ErrNotFound when banger is not
// installed.
func Read(path string) (Record, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return Record{}, fmt.Errorf("%s: banger is not installed (sudo banger system install): %w", path, errdefs.ErrNotFound)
	}
	if err != nil {
		return Record{}, err
	}
	var r Record
	dec := toml.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return Record{}, fmt.Errorf("%s: %w", path, err)
	}
	if r.Schema != Schema {
		return Record{}, fmt.Errorf("%s: schema %d, this banger reads %d: reinstall with this banger (sudo banger system install): %w", path, r.Schema, Schema, errdefs.ErrFailedPrecondition)
	}
	if err := r.Owner.Check(); err != nil {
		return Record{}, fmt.Errorf("%s: %w", path, err)
	}
	return r, nil
}

// Write writes r to path (mode 0644: the CLI of every user reads it to
// find the daemon) through a temporary file and a rename, so a reader
// never sees half a record.
func Write(path string, r Record) error {
	var u undo
	if err := u.replace(path, 0o644, func(w io.Writer) error { return encodeRecord(w, r) }); err != nil {
		return err
	}
	return u.commit()
}

func encodeRecord(w io.Writer, r Record) error {
	r.Schema = Schema
	b, err := toml.Marshal(r)
	if err != nil {
		return err
	}
	if _, err := io.WriteString(w, "# Written by `banger system install`; read by banger to find the installed daemon.\n"); err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// KVMGroup returns the name of the group that may open /dev/kvm ("kvm",
// as udev sets it up) if it exists here, else "".
func KVMGroup() string {
	if g, err := user.LookupGroup("kvm"); err == nil && userName.MatchString(g.Name) {
		return g.Name
	}
	return ""
}
