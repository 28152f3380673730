package roothelper

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/consolelog"
	"github.com/bangervm/banger/internal/engine/firecracker"
	"github.com/bangervm/banger/internal/engine/proc"
	"github.com/bangervm/banger/internal/testutil"
)

const (
	jailOwner = 65534
	jailID    = "abc123def45"
)

// jailFixture is a helper policy over a temporary state directory with
// one VM (jailID): its directory and disk, an image and a kernel, all the
// owner's. The jailer is a script that records its arguments in ran and
// then sleeps as "firecracker" would run.
type jailFixture struct {
	policy JailerPolicy
	ran    string
	log    *os.File // the console log
	vmDir  string
	files  []firecracker.JailFile
}

func newJailFixture(t *testing.T) *jailFixture {
	t.Helper()
	dir := t.TempDir()
	// The owner reaches the VM directory, as in their home.
	os.Chmod(dir, 0o755)
	os.Chmod(filepath.Dir(dir), 0o755)
	f := &jailFixture{ran: filepath.Join(dir, "ran")}
	jailer := filepath.Join(dir, "jailer")
	script := fmt.Sprintf("#!/bin/sh\necho \"$@\" > %s\necho jailer started\nexec sleep 600\n", f.ran)
	if err := os.WriteFile(jailer, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	fc := filepath.Join(dir, "firecracker")
	os.WriteFile(fc, []byte("#!/bin/sh\n"), 0o755)
	state := filepath.Join(dir, "state")
	f.policy = JailerPolicy{Jailer: jailer, Firecracker: fc, VMs: filepath.Join(state, "vms"), UID: jailOwner, GID: jailOwner,
		StateFile: filepath.Join(dir, "run", "jailed.json"), MountDir: filepath.Join(dir, "run", "jails")}
	os.MkdirAll(filepath.Join(dir, "run"), 0o755)
	f.vmDir = filepath.Join(f.policy.VMs, jailID)
	kernel, image, disk := filepath.Join(state, "kernels", "vmlinux"), filepath.Join(state, "images", "rootfs.ext4"), filepath.Join(f.vmDir, "disk.ext4")
	for _, p := range []string{kernel, image, disk} {
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("contents of "+filepath.Base(p)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	filepath.Walk(state, func(p string, _ os.FileInfo, _ error) error { return os.Lchown(p, jailOwner, jailOwner) })
	f.files = []firecracker.JailFile{{Name: "vmlinux", Path: kernel}, {Name: "vda", Path: image}, {Name: "vdb", Path: disk, Writable: true}}
	for _, name := range []string{firecracker.LogFile, firecracker.MetricsFile} {
		pipe := filepath.Join(f.vmDir, name+".pipe")
		fd, err := consolelog.MakeFIFO(pipe, jailOwner, jailOwner)
		if err != nil {
			t.Fatal(err)
		}
		fd.Close()
		f.files = append(f.files, firecracker.JailFile{Name: name, Path: pipe})
	}
	log, err := os.OpenFile(filepath.Join(dir, "console.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { log.Close() })
	f.log = log
	t.Cleanup(func() { removeJailTree(f.ptr(), &f.policy) })
	return f
}

// good is a request the policy allows.
func (f *jailFixture) good() firecracker.JailerConfig {
	return firecracker.JailerConfig{
		ID: jailID, ExecFile: f.policy.Firecracker, UID: jailOwner, GID: jailOwner,
		ChrootBase: filepath.Join(f.vmDir, firecracker.JailDirName), CgroupVersion: 2,
		Cgroups:         []string{"cpu.max=100000 100000", "memory.max=402653184"},
		FirecrackerArgs: []string{"--api-sock", "/fc.sock"},
	}
}

// descriptors opens files as the client does and returns them after the
// console's.
func (f *jailFixture) descriptors(t *testing.T, files []firecracker.JailFile) []*os.File {
	fds := []*os.File{f.log}
	for _, jf := range files {
		flag := os.O_RDONLY
		if jf.Writable {
			flag = os.O_RDWR
		}
		if firecracker.IsPipe(jf.Name) {
			flag = os.O_RDWR | syscall.O_NONBLOCK
		}
		fd, err := os.OpenFile(jf.Path, flag, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { fd.Close() })
		fds = append(fds, fd)
	}
	return fds
}

// asOwner runs argv as the owner and returns its error.
func asOwner(argv ...string) error {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: jailOwner, Gid: jailOwner}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%v: %w: %s", argv, err, out)
	}
	return nil
}

// TestJailerRefusesOutOfScope: launchJailer runs only banger's ids, the
// configured binaries, the owner's uid and gid, a jail in one of the
// owner's VM directories, allowlisted cgroup settings and jail files, no
// other argument, and only with descriptors that prove the owner's access;
// a refusal starts nothing and leaves no jail.
func TestJailerRefusesOutOfScope(t *testing.T) {
	testutil.RequireRoot(t) // the fixture chowns to the owner
	f := newJailFixture(t)
	mod := func(m func(c *firecracker.JailerConfig)) *firecracker.JailerConfig {
		c := f.good()
		m(&c)
		return &c
	}
	files := func(m func(fs []firecracker.JailFile) []firecracker.JailFile) []firecracker.JailFile {
		return m(slices.Clone(f.files))
	}
	// VM directories the owner could make: a symlink to another, one of
	// another user's, one where the jail is already a symlink to /.
	os.MkdirAll(filepath.Join(f.policy.VMs, "other"), 0o700)
	os.Chown(filepath.Join(f.policy.VMs, "other"), jailOwner, jailOwner)
	os.Symlink(filepath.Join(f.policy.VMs, "other"), filepath.Join(f.policy.VMs, "linked"))
	os.MkdirAll(filepath.Join(f.policy.VMs, "foreign"), 0o700)
	os.Chown(filepath.Join(f.policy.VMs, "foreign"), 1234, 1234)
	os.MkdirAll(filepath.Join(f.policy.VMs, "planted"), 0o700)
	os.Symlink("/", filepath.Join(f.policy.VMs, "planted", firecracker.JailDirName))
	os.Chown(filepath.Join(f.policy.VMs, "planted"), jailOwner, jailOwner)
	at := func(id string) *firecracker.JailerConfig {
		return mod(func(c *firecracker.JailerConfig) {
			c.ID, c.ChrootBase = id, filepath.Join(f.policy.VMs, id, firecracker.JailDirName)
		})
	}
	fifo := filepath.Join(f.vmDir, "fifo")
	syscall.Mkfifo(fifo, 0o600)
	os.Chown(fifo, jailOwner, jailOwner)
	rootFifo := filepath.Join(f.vmDir, "root-fifo")
	syscall.Mkfifo(rootFifo, 0o600)
	for _, tc := range []struct {
		name   string
		req    *firecracker.JailerConfig
		files  []firecracker.JailFile // nil: f.files
		fds    func() []*os.File      // nil: f.descriptors(files)
		policy *JailerPolicy          // nil: f.policy
		class  error
		says   string
	}{
		{"no arguments", nil, nil, nil, nil, errdefs.ErrInvalidArgument, "no jailer"},
		{"id traversal", mod(func(c *firecracker.JailerConfig) { c.ID = "../x" }), nil, nil, nil, errdefs.ErrInvalidArgument, "../x"},
		{"id empty", mod(func(c *firecracker.JailerConfig) { c.ID = "" }), nil, nil, nil, errdefs.ErrInvalidArgument, "jail id"},
		{"id slash", mod(func(c *firecracker.JailerConfig) { c.ID = "a/b" }), nil, nil, nil, errdefs.ErrInvalidArgument, "a/b"},
		{"id too long", mod(func(c *firecracker.JailerConfig) { c.ID = strings.Repeat("a", 65) }), nil, nil, nil, errdefs.ErrInvalidArgument, "jail id"},
		{"id dot", mod(func(c *firecracker.JailerConfig) { c.ID = "." }), nil, nil, nil, errdefs.ErrInvalidArgument, `"."`},
		{"other binary", mod(func(c *firecracker.JailerConfig) { c.ExecFile = "/bin/sh" }), nil, nil, nil, errdefs.ErrPermissionDenied, "/bin/sh"},
		{"binary relative", mod(func(c *firecracker.JailerConfig) { c.ExecFile = "firecracker" }), nil, nil, nil, errdefs.ErrPermissionDenied, "exec file"},
		{"uid root", mod(func(c *firecracker.JailerConfig) { c.UID = 0 }), nil, nil, nil, errdefs.ErrPermissionDenied, "uid:gid 0:"},
		{"gid root", mod(func(c *firecracker.JailerConfig) { c.GID = 0 }), nil, nil, nil, errdefs.ErrPermissionDenied, ":0"},
		{"uid other user", mod(func(c *firecracker.JailerConfig) { c.UID, c.GID = 1000, 1000 }), nil, nil, nil, errdefs.ErrPermissionDenied, "1000:1000"},
		{"base /", mod(func(c *firecracker.JailerConfig) { c.ChrootBase = "/" }), nil, nil, nil, errdefs.ErrPermissionDenied, "chroot base"},
		{"base default", mod(func(c *firecracker.JailerConfig) { c.ChrootBase = "" }), nil, nil, nil, errdefs.ErrPermissionDenied, "chroot base"},
		{"base dotdot", mod(func(c *firecracker.JailerConfig) { c.ChrootBase += "/../../etc" }), nil, nil, nil, errdefs.ErrPermissionDenied, "/../../etc"},
		{"base of another vm", mod(func(c *firecracker.JailerConfig) { c.ChrootBase = filepath.Join(f.policy.VMs, "other", "jail") }), nil, nil, nil, errdefs.ErrPermissionDenied, "chroot base"},
		{"vm dir a symlink", at("linked"), nil, nil, nil, errdefs.ErrPermissionDenied, "symlink"},
		{"vm dir another user's", at("foreign"), nil, nil, nil, errdefs.ErrPermissionDenied, "not the owner"},
		{"jail planted as a symlink", at("planted"), nil, nil, nil, errdefs.ErrAlreadyExists, "already exists"},
		{"vm dir missing", at("nosuchvm"), nil, nil, nil, errdefs.ErrNotFound, "nosuchvm"},
		{"netns", mod(func(c *firecracker.JailerConfig) { c.NetNS = "/proc/1/ns/net" }), nil, nil, nil, errdefs.ErrPermissionDenied, "netns"},
		{"parent cgroup", mod(func(c *firecracker.JailerConfig) { c.ParentCgroup = "../../system.slice" }), nil, nil, nil, errdefs.ErrPermissionDenied, "parent cgroup"},
		{"resource limit", mod(func(c *firecracker.JailerConfig) { c.ResourceLimits = []string{"fsize=1"} }), nil, nil, nil, errdefs.ErrPermissionDenied, "resource limits"},
		{"cgroup not allowlisted", mod(func(c *firecracker.JailerConfig) { c.Cgroups = []string{"cgroup.procs=1"} }), nil, nil, nil, errdefs.ErrPermissionDenied, "cgroup.procs"},
		{"cgroup path in value", mod(func(c *firecracker.JailerConfig) { c.Cgroups = []string{"memory.max=../1"} }), nil, nil, nil, errdefs.ErrPermissionDenied, "memory.max=../1"},
		{"cgroup version 3", mod(func(c *firecracker.JailerConfig) { c.CgroupVersion = 3 }), nil, nil, nil, errdefs.ErrInvalidArgument, "cgroup version"},
		{"extra firecracker arg", mod(func(c *firecracker.JailerConfig) { c.FirecrackerArgs = append(c.FirecrackerArgs, "--no-seccomp") }), nil, nil, nil, errdefs.ErrPermissionDenied, "--no-seccomp"},
		{"config file", mod(func(c *firecracker.JailerConfig) { c.FirecrackerArgs = []string{"--config-file", "/x"} }), nil, nil, nil, errdefs.ErrPermissionDenied, "--config-file"},
		{"api sock traversal", mod(func(c *firecracker.JailerConfig) { c.FirecrackerArgs = []string{"--api-sock", "/../../run/x"} }), nil, nil, nil, errdefs.ErrPermissionDenied, "/../../run/x"},
		{"jailer flag smuggled in api sock", mod(func(c *firecracker.JailerConfig) { c.FirecrackerArgs = []string{"--api-sock", "--daemonize"} }), nil, nil, nil, errdefs.ErrPermissionDenied, "--daemonize"},
		{"no jail files", f.ptr(), []firecracker.JailFile{}, nil, nil, errdefs.ErrPermissionDenied, "jail files"},
		{"kernel not first", f.ptr(), files(func(fs []firecracker.JailFile) []firecracker.JailFile { return fs[1:] }), nil, nil, errdefs.ErrPermissionDenied, "vmlinux"},
		{"file name traversal", f.ptr(), files(func(fs []firecracker.JailFile) []firecracker.JailFile { fs[1].Name = "../../etc/x"; return fs }), nil, nil, errdefs.ErrPermissionDenied, "../../etc/x"},
		{"file name of the exec copy", f.ptr(), files(func(fs []firecracker.JailFile) []firecracker.JailFile { fs[1].Name = "firecracker"; return fs }), nil, nil, errdefs.ErrPermissionDenied, `"firecracker"`},
		{"file twice", f.ptr(), files(func(fs []firecracker.JailFile) []firecracker.JailFile { fs[2].Name = "vda"; return fs }), nil, nil, errdefs.ErrPermissionDenied, "twice"},
		{"file path relative", f.ptr(), files(func(fs []firecracker.JailFile) []firecracker.JailFile { fs[1].Path = "rootfs.ext4"; return fs }), nil, nil, errdefs.ErrPermissionDenied, "not absolute"},
		{"writable kernel", f.ptr(), files(func(fs []firecracker.JailFile) []firecracker.JailFile { fs[0].Writable = true; return fs }), nil, nil, errdefs.ErrPermissionDenied, "only drives"},
		{"too many files", f.ptr(), files(func(fs []firecracker.JailFile) []firecracker.JailFile {
			for i := range 20 {
				fs = append(fs, firecracker.JailFile{Name: fmt.Sprintf("vd%c", 'c'+i), Path: "/x"})
			}
			return fs
		}), nil, nil, errdefs.ErrPermissionDenied, "jail files"},
		{"writable drive sent read-only", f.ptr(), nil, func() []*os.File {
			fds := f.descriptors(t, f.files[:2])
			ro, _ := os.Open(f.files[2].Path)
			t.Cleanup(func() { ro.Close() })
			return append(append(fds, ro), f.descriptors(t, f.files[3:])[1:]...)
		}, nil, errdefs.ErrPermissionDenied, "reading and writing"},
		{"a fifo for a drive", f.ptr(), nil, func() []*os.File {
			fds := f.descriptors(t, f.files[:2])
			ff, err := os.OpenFile(fifo, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ff.Close() })
			return append(append(fds, ff), f.descriptors(t, f.files[3:])[1:]...)
		}, nil, errdefs.ErrPermissionDenied, "regular file"},
		{"a regular file for the log pipe", f.ptr(), nil, func() []*os.File {
			fds := f.descriptors(t, f.files[:3])
			reg, _ := os.Open(f.files[0].Path)
			t.Cleanup(func() { reg.Close() })
			return append(append(fds, reg), f.descriptors(t, f.files[4:])[1:]...)
		}, nil, errdefs.ErrPermissionDenied, "named pipe"},
		{"another user's log pipe", f.ptr(), nil, func() []*os.File {
			fds := f.descriptors(t, f.files[:3])
			ff, err := os.OpenFile(rootFifo, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ff.Close() })
			return append(append(fds, ff), f.descriptors(t, f.files[4:])[1:]...)
		}, nil, errdefs.ErrPermissionDenied, "named pipe"},
		{"no log pipes", f.ptr(), files(func(fs []firecracker.JailFile) []firecracker.JailFile { return fs[:3] }), nil, nil, errdefs.ErrPermissionDenied, "pipes"},
		{"descriptors missing", f.ptr(), nil, func() []*os.File { return f.descriptors(t, f.files[:1]) }, nil, errdefs.ErrInvalidArgument, "descriptors"},
		{"helper without a policy", f.ptr(), nil, nil, &JailerPolicy{}, errdefs.ErrFailedPrecondition, "--vms"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pol := &f.policy
			if tc.policy != nil {
				pol = tc.policy
				if tc.policy.Jailer == "" {
					pol = nil
				}
			}
			jf := tc.files
			if jf == nil {
				jf = f.files
			}
			var fds []*os.File
			if tc.fds != nil {
				fds = tc.fds()
			} else {
				fds = f.descriptors(t, f.files)
			}
			s := &server{owner: jailOwner, jail: pol, log: slog.New(slog.DiscardHandler)}
			resp, out := s.handle(context.Background(), s.log, jailOwner, &request{Op: OpLaunchJailer, Jailer: tc.req, JailFiles: jf}, fds)
			if out != nil {
				unix.PidfdSendSignal(int(out.Fd()), syscall.SIGKILL, nil, 0)
				out.Close()
				t.Error("refused request started a process")
			}
			if _, err := os.Stat(f.ran); err == nil {
				os.Remove(f.ran)
				t.Fatal("the jailer ran")
			}
			if _, err := os.Lstat(filepath.Join(f.vmDir, firecracker.JailDirName)); err == nil {
				t.Error("a refused request left a jail")
			}
			err := errdefs.FromCode(resp.Class, resp.Error)
			if resp.Error == "" || !errors.Is(err, tc.class) {
				t.Fatalf("reply %+v: want class %v", resp, tc.class)
			}
			if !strings.Contains(resp.Error, "refused") && !strings.Contains(resp.Error, tc.says) || !strings.Contains(resp.Error, tc.says) {
				t.Errorf("reply %q: want it to name %q", resp.Error, tc.says)
			}
		})
	}
	if target, err := os.Readlink(filepath.Join(f.policy.VMs, "planted", firecracker.JailDirName)); err != nil || target != "/" {
		t.Errorf("the owner's planted symlink was changed: %q, %v", target, err)
	}
}

// TestJailBuiltForJailer: the helper builds the jail root's, in the VM's
// directory, with the VM's files hard-linked from the daemon's
// descriptors, and gives the jailer a path through its own mount on which
// every directory is root's; the owner can neither change the jail nor
// redirect the path by renaming their own directories; the jail goes when
// firecracker exits.
func TestJailBuiltForJailer(t *testing.T) {
	testutil.RequireRoot(t)
	f := newJailFixture(t)
	s := &server{owner: jailOwner, jail: &f.policy, log: slog.New(slog.DiscardHandler)}
	resp, pidfd := s.handle(context.Background(), s.log, jailOwner, &request{Op: OpLaunchJailer, Jailer: f.ptr(), JailFiles: f.files}, f.descriptors(t, f.files))
	if resp.Error != "" || pidfd == nil {
		t.Fatalf("launch: %+v", resp)
	}
	p, err := proc.FromPidfd(resp.PID, pidfd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Signal(syscall.SIGKILL) })
	target := filepath.Join(f.policy.MountDir, jailID)
	want := f.good()
	want.ChrootBase = target
	ran := waitFile(t, f.ran)
	if strings.TrimSpace(ran) != strings.Join(firecracker.JailerArgs(want), " ") {
		t.Errorf("jailer ran with %q, want --chroot-base-dir %s", ran, target)
	}
	jail := filepath.Join(f.vmDir, firecracker.JailDirName)
	root := filepath.Join(jail, "firecracker", jailID, "root")
	// Every directory the jailer resolves, from / to the chroot, is root's
	// and writable only by root.
	cur := "/"
	for _, part := range strings.Split(strings.TrimPrefix(filepath.Join(target, "firecracker", jailID, "root"), "/"), "/") {
		cur = filepath.Join(cur, part)
		fi, err := os.Lstat(cur)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		// A sticky directory (the test's /tmp) lets no one else replace
		// root's entries in it.
		if !fi.IsDir() || st.Uid != 0 || fi.Mode().Perm()&0o022 != 0 && fi.Mode()&os.ModeSticky == 0 {
			t.Errorf("%s on the jailer's path: %v uid %d; want a directory only root can write", cur, fi.Mode(), st.Uid)
		}
	}
	for _, jf := range f.files {
		a, _ := os.Stat(jf.Path)
		b, err := os.Stat(filepath.Join(root, jf.Name))
		if err != nil || !os.SameFile(a, b) {
			t.Errorf("%s in the jail: %v; want a hard link of %s", jf.Name, err, jf.Path)
		}
	}
	for _, name := range []string{firecracker.LogFile, firecracker.MetricsFile} {
		fi, err := os.Lstat(filepath.Join(root, name))
		if err != nil || fi.Mode().Type() != os.ModeNamedPipe || fi.Sys().(*syscall.Stat_t).Uid != jailOwner {
			t.Errorf("%s in the jail: %v; want the owner's named pipe", name, err)
		}
	}
	// The owner cannot touch the jail...
	for _, argv := range [][]string{
		{"touch", filepath.Join(jail, "x")},
		{"mv", filepath.Join(jail, "firecracker"), filepath.Join(jail, "y")},
		{"ln", "-s", "/etc", filepath.Join(root, "dev")},
		{"rm", "-rf", jail},
	} {
		if err := asOwner(argv...); err == nil {
			t.Errorf("the owner could %v", argv)
		}
	}
	// ...and renaming their own directory with a symlink in its place
	// does not move the jailer's path.
	if err := asOwner("mv", jail, jail+".moved"); err != nil {
		t.Fatal(err)
	}
	if err := asOwner("ln", "-s", "/", jail); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(target, "firecracker", jailID, "root", "vmlinux")); err != nil {
		t.Errorf("the jailer's path lost the jail when the owner renamed theirs: %v", err)
	}
	os.Remove(jail)
	os.Rename(jail+".moved", jail)
	// Refused while it runs; removed once firecracker exits.
	if err := removeJail(f.ptr(), &f.policy); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("removeJail while it runs: %v", err)
	}
	if err := killJailer(&f.policy, p.PID()); err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		_, err1 := os.Lstat(jail)
		_, err2 := os.Lstat(target)
		if errors.Is(err1, os.ErrNotExist) && errors.Is(err2, os.ErrNotExist) {
			break
		}
		if i == 500 {
			t.Fatalf("jail %s (%v) or mount %s (%v) left after firecracker exited", jail, err1, target, err2)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := removeJail(f.ptr(), &f.policy); err != nil {
		t.Errorf("removeJail of a removed jail: %v", err)
	}
	for _, jf := range f.files {
		if _, err := os.Stat(jf.Path); err != nil {
			t.Errorf("the VM's %s went with the jail: %v", jf.Name, err)
		}
	}
}

// waitFile returns path's contents once it has some.
func waitFile(t *testing.T, path string) string {
	t.Helper()
	for range 1000 {
		if b, err := os.ReadFile(path); err == nil && len(b) > 0 {
			return string(b)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s never written", path)
	return ""
}

func (f *jailFixture) ptr() *firecracker.JailerConfig { c := f.good(); return &c }

// TestLaunchedJailerSurvivesHelper: the jailer the helper starts, in a
// session of its own, keeps running when the helper is killed and when a
// new helper starts; the daemon's handle (a pidfd) still follows it, and
// the new helper's killJailer reaches it but no other process.
func TestLaunchedJailerSurvivesHelper(t *testing.T) {
	testutil.RequireRoot(t)
	f := newJailFixture(t)
	sock := filepath.Join(t.TempDir(), "root.sock")
	startHelper := func() *exec.Cmd {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), helperMainEnv+"=1",
			"HELPER_ARGS="+strings.Join([]string{"--socket", sock, "--owner", fmt.Sprint(jailOwner),
				"--jailer", f.policy.Jailer, "--firecracker", f.policy.Firecracker, "--vms", f.policy.VMs}, "\x1f"))
		var out strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		for i := 0; i < 200; i++ {
			if c, err := net.Dial("unix", sock); err == nil {
				c.Close()
				return cmd
			}
			time.Sleep(25 * time.Millisecond)
		}
		t.Fatalf("helper did not listen:\n%s", out.String())
		return nil
	}
	helper := startHelper()
	t.Cleanup(func() { unmountJail(filepath.Join(filepath.Dir(sock), "jails", jailID)) })

	p, err := New(sock).LaunchJailer(context.Background(), f.good(), f.files, f.log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Signal(syscall.SIGKILL) })
	if sid, _ := unix.Getsid(p.PID()); sid != p.PID() {
		t.Errorf("jailer session %d, want its own (%d)", sid, p.PID())
	}
	helper.Process.Kill()
	helper.Wait()
	os.Remove(sock)
	startHelper()
	if p.Exited() {
		t.Fatal("the jailer died with the helper")
	}
	if pp, err := proc.Open(p.PID()); err != nil || pp.Exited() {
		t.Fatalf("jailer %d not running after the helper restart: %v", p.PID(), err)
	}
	if err := New(sock).RemoveJail(context.Background(), f.good()); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("removeJail while its firecracker runs: %v", err)
	}
	// The restarted helper kills what its predecessor launched, and
	// nothing else.
	other := exec.Command("sleep", "600")
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { other.Process.Kill(); other.Wait() }()
	if err := New(sock).KillJailer(context.Background(), other.Process.Pid); !errdefs.IsPermissionDenied(err) {
		t.Errorf("killJailer of a process it did not launch: %v", err)
	}
	if err := New(sock).KillJailer(context.Background(), p.PID()); err != nil {
		t.Fatalf("killJailer of its jailer: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Wait(ctx); err != nil {
		t.Errorf("jailer still running after killJailer: %v", err)
	}
	// This helper did not launch it, so its jail stays until the daemon
	// asks (as it does when it sees firecracker exit).
	if err := New(sock).RemoveJail(context.Background(), f.good()); err != nil {
		t.Errorf("removeJail after exit: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(f.vmDir, firecracker.JailDirName)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("jail left after removeJail: %v", err)
	}
	mount := filepath.Join(filepath.Dir(sock), "jails", jailID)
	if _, err := os.Lstat(mount); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("jail mount %s left after removeJail: %v", mount, err)
	}
	ran, _ := os.ReadFile(f.ran)
	jc := f.good()
	jc.ChrootBase = mount
	want := strings.Join(firecracker.JailerArgs(jc), " ")
	if strings.TrimSpace(string(ran)) != want {
		t.Errorf("jailer ran with %q, want %q", ran, want)
	}
	console, _ := os.ReadFile(f.log.Name())
	if !strings.Contains(string(console), "jailer started") {
		t.Errorf("console log %q: want the jailer's output", console)
	}
}

const helperMainEnv = "BANGER_TEST_ROOTHELPER_MAIN"

// TestMain lets TestLaunchedJailerSurvivesHelper run this binary as the
// helper, a process it can kill.
func TestMain(m *testing.M) {
	if os.Getenv(helperMainEnv) == "1" {
		os.Exit(run(strings.Split(os.Getenv("HELPER_ARGS"), "\x1f"), os.Stderr))
	}
	os.Exit(m.Run())
}
