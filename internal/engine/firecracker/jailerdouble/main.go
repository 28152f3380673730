// Command jailerdouble is a test double for Firecracker's jailer, to go
// with fcdouble: it takes the jailer's command line (jailer.md), insists on
// starting as root as the jailer does, builds
// <chroot-base>/<exec name>/<id>/root, copies --exec-file into it, makes
// its dev/net/tun, gives them to --uid:--gid, drops to them and execs the
// copy as
// "<exec name> --id=<id> --start-time-us=0 --start-time-cpu-us=0 [args after --]".
//
// The jail's mount namespace, pivot_root, chroot and /dev/kvm are only
// rehearsed, in a child process (see rehearse), so that what would stop
// the real jailer stops the double; the double itself runs outside the
// jail (fcdouble runs QEMU, which needs the host's files; the jail's root
// is passed to it as FCDOUBLE_CHROOT and it resolves its paths there).
// What it does not do: cgroups (accepted and not applied), --netns,
// --daemonize and --new-pid-ns (refused). It exists for banger's tests only; the
// Makefile never builds it.
package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// validID is the jailer's rule for --id.
var validID = regexp.MustCompile(`^[a-zA-Z0-9-]{1,64}$`)

type options struct {
	id, execFile, chrootBase string
	uid, gid                 int
	extra                    []string
}

// valueFlags are the jailer's flags that take a value; the double applies
// only some of them.
var valueFlags = map[string]bool{
	"id": true, "exec-file": true, "uid": true, "gid": true, "cgroup-version": true,
	"cgroup": true, "parent-cgroup": true, "chroot-base-dir": true, "netns": true, "resource-limit": true,
}

func parseArgs(args []string) (options, error) {
	o := options{chrootBase: "/srv/jailer", uid: -1, gid: -1}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			o.extra = args[i+1:]
			break
		}
		name := strings.TrimPrefix(a, "--")
		val, hasVal := "", false
		if k, v, ok := strings.Cut(name, "="); ok {
			name, val, hasVal = k, v, true
		}
		if !valueFlags[name] {
			return o, fmt.Errorf("unsupported argument %q", a)
		}
		if !hasVal {
			if i+1 >= len(args) {
				return o, fmt.Errorf("--%s needs a value", name)
			}
			i++
			val = args[i]
		}
		var err error
		switch name {
		case "id":
			o.id = val
		case "exec-file":
			o.execFile = val
		case "uid":
			o.uid, err = strconv.Atoi(val)
		case "gid":
			o.gid, err = strconv.Atoi(val)
		case "chroot-base-dir":
			o.chrootBase = val
		case "netns":
			err = errors.New("--netns is not supported by the double")
		}
		if err != nil {
			return o, fmt.Errorf("--%s: %w", name, err)
		}
	}
	switch {
	case !validID.MatchString(o.id):
		return o, fmt.Errorf("invalid --id %q", o.id)
	case o.execFile == "" || o.uid < 0 || o.gid < 0:
		return o, errors.New("--exec-file, --uid and --gid are required")
	}
	return o, nil
}

func main() {
	if chroot := os.Getenv(rehearseEnv); chroot != "" {
		if err := rehearsal(chroot, os.Getenv("JAILERDOUBLE_OWNER")); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "jailer: %v\n", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	o, err := parseArgs(args)
	if err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return errors.New("must start as root (it chroots, makes device nodes and drops to --uid/--gid)")
	}
	name := filepath.Base(o.execFile)
	chroot := filepath.Join(o.chrootBase, name, o.id, "root")
	if err := os.MkdirAll(chroot, 0o755); err != nil {
		return err
	}
	exe := filepath.Join(chroot, name)
	if err := rehearse(chroot, o.uid, o.gid); err != nil {
		return fmt.Errorf("build the jail as the jailer does: %w", err)
	}
	if err := copyExec(o.execFile, exe); err != nil {
		return fmt.Errorf("copy %s into the jail: %w", o.execFile, err)
	}
	if err := makeTun(chroot, o.uid, o.gid); err != nil {
		return fmt.Errorf("make the jail's /dev/net/tun: %w", err)
	}
	if err := os.Chown(chroot, o.uid, o.gid); err != nil {
		return err
	}
	if err := os.Chdir(chroot); err != nil {
		return err
	}
	if err := syscall.Setgroups(nil); err != nil {
		return err
	}
	if err := syscall.Setresgid(o.gid, o.gid, o.gid); err != nil {
		return err
	}
	if err := syscall.Setresuid(o.uid, o.uid, o.uid); err != nil {
		return err
	}
	argv := append([]string{"/" + name, "--id=" + o.id, "--start-time-us=0", "--start-time-cpu-us=0"}, o.extra...)
	// The jailer clears the environment; the double keeps what fcdouble
	// needs to find QEMU.
	env := []string{"FCDOUBLE_CHROOT=" + chroot}
	for _, k := range []string{"PATH", "FCDOUBLE_QEMU"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return syscall.Exec(exe, argv, env)
}

// rehearseEnv marks the double's own child that rehearses the jail.
const rehearseEnv = "JAILERDOUBLE_REHEARSE"

// rehearse does, in a child process, what the real jailer does to build
// its jail, so that a sandbox that would stop the jailer (a systemd unit's
// capabilities, system call filter, namespace and device policies) stops
// the double too: a new mount namespace with private propagation, the
// chroot bind-mounted on itself, pivot_root into it, the old root
// detached, chroot, and /dev/kvm made in the jail and given to uid:gid.
// The double itself then carries on outside the jail: fcdouble's QEMU
// needs the host's files.
func rehearse(chroot string, uid, gid int) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(self)
	cmd.Env = []string{rehearseEnv + "=" + chroot, fmt.Sprintf("JAILERDOUBLE_OWNER=%d:%d", uid, gid)}
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// rehearsal is the child's side of rehearse, in its new mount namespace.
func rehearsal(chroot, owner string) error {
	var uid, gid int
	if _, err := fmt.Sscanf(owner, "%d:%d", &uid, &gid); err != nil {
		return err
	}
	step := func(what string, err error) error {
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		return nil
	}
	if err := step("make / private", unix.Mount("", "/", "", unix.MS_PRIVATE|unix.MS_REC, "")); err != nil {
		return err
	}
	if err := step("bind the jail on itself", unix.Mount(chroot, chroot, "", unix.MS_BIND, "")); err != nil {
		return err
	}
	if err := os.Chdir(chroot); err != nil {
		return err
	}
	if err := os.Mkdir("old_root", 0o700); err != nil {
		return err
	}
	if err := step("pivot_root", unix.PivotRoot(".", "old_root")); err != nil {
		return err
	}
	if err := step("detach the old root", unix.Unmount("old_root", unix.MNT_DETACH)); err != nil {
		return err
	}
	if err := os.Remove("old_root"); err != nil {
		return err
	}
	if err := step("chroot", unix.Chroot(".")); err != nil {
		return err
	}
	if err := os.MkdirAll("/dev", 0o755); err != nil {
		return err
	}
	if err := step("mknod /dev/kvm", unix.Mknod("/dev/kvm", unix.S_IFCHR|0o600, int(unix.Mkdev(10, 232)))); err != nil {
		return err
	}
	return step("chown /dev/kvm", os.Lchown("/dev/kvm", uid, gid))
}

// makeTun makes the jail's /dev/net/tun for uid:gid, as the jailer does,
// so that Firecracker can open its taps after dropping privileges.
func makeTun(chroot string, uid, gid int) error {
	dir := filepath.Join(chroot, "dev", "net")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	tun := filepath.Join(dir, "tun")
	if err := syscall.Mknod(tun, syscall.S_IFCHR|0o600, int(unix.Mkdev(10, 200))); err != nil {
		return err
	}
	// The directories too, so that the owner can remove the jail.
	for _, p := range []string{filepath.Dir(dir), dir, tun} {
		if err := os.Lchown(p, uid, gid); err != nil {
			return err
		}
	}
	return nil
}

// copyExec copies src to a new file dst (never through a symlink), as the
// jailer copies the exec file so that no two VMs share its pages.
func copyExec(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	fi, err := os.Stat(src)
	if err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o700)
	if err != nil {
		return err
	}
	_, err = out.Write(b)
	// The source's mode whatever the umask, as the jailer's copy (Rust's
	// fs::copy) has: firecracker runs it after dropping to --uid.
	return errors.Join(err, out.Chmod(fi.Mode().Perm()), out.Close())
}
