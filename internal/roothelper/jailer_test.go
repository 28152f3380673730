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
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/engine/firecracker"
	"github.com/bangervm/banger/internal/engine/proc"
	"github.com/bangervm/banger/internal/testutil"
)

const jailOwner = 65534

// jailFixture is a helper policy over a temporary chroot base, its jailer
// a script that records its arguments in ran and then sleeps as
// "firecracker" would run.
type jailFixture struct {
	policy JailerPolicy
	ran    string
	log    *os.File // the console log
}

func newJailFixture(t *testing.T) *jailFixture {
	t.Helper()
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	f := &jailFixture{ran: filepath.Join(dir, "ran")}
	jailer := filepath.Join(dir, "jailer")
	script := fmt.Sprintf("#!/bin/sh\necho \"$@\" > %s\necho jailer started\nexec sleep 600\n", f.ran)
	if err := os.WriteFile(jailer, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	fc := filepath.Join(dir, "firecracker")
	os.WriteFile(fc, []byte("#!/bin/sh\n"), 0o755)
	base := filepath.Join(dir, "state", "jail")
	f.policy = JailerPolicy{Jailer: jailer, Firecracker: fc, ChrootBase: base, UID: jailOwner, GID: jailOwner, StateFile: filepath.Join(dir, "jailed.json")}
	f.stage(t, "abc123def45")
	log, err := os.OpenFile(filepath.Join(dir, "console.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { log.Close() })
	f.log = log
	return f
}

// stage makes the chroot the daemon would: <base>/firecracker/<id>/root,
// the owner's.
func (f *jailFixture) stage(t *testing.T, id string) string {
	root := filepath.Join(f.policy.ChrootBase, "firecracker", id, "root")
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chown(root, jailOwner, jailOwner)
	return root
}

// good is a request the policy allows.
func (f *jailFixture) good() firecracker.JailerConfig {
	return firecracker.JailerConfig{
		ID: "abc123def45", ExecFile: f.policy.Firecracker, UID: jailOwner, GID: jailOwner,
		ChrootBase: f.policy.ChrootBase, CgroupVersion: 2,
		Cgroups:         []string{"cpu.max=100000 100000", "memory.max=402653184"},
		FirecrackerArgs: []string{"--api-sock", "/fc.sock"},
	}
}

// TestJailerRefusesOutOfScope: launchJailer runs only banger's ids, the
// configured binaries, the owner's uid and gid, the configured chroot base
// with nothing symlinked or planted on the way, allowlisted cgroup
// settings and no other argument; a refusal starts nothing.
func TestJailerRefusesOutOfScope(t *testing.T) {
	testutil.RequireRoot(t) // the fixture chowns to the owner
	f := newJailFixture(t)
	elsewhere := t.TempDir()
	os.MkdirAll(filepath.Join(elsewhere, "root"), 0o755)
	// A staged jail whose id directory is a symlink out of the base.
	os.MkdirAll(filepath.Join(f.policy.ChrootBase, "firecracker"), 0o755)
	os.Symlink(elsewhere, filepath.Join(f.policy.ChrootBase, "firecracker", "linked"))
	// A jail with a symlink where the jailer copies firecracker.
	planted := f.stage(t, "planted")
	os.Symlink("/etc/passwd", filepath.Join(planted, "firecracker"))
	// A jail in a directory another user owns.
	foreign := f.stage(t, "foreign")
	os.Chown(filepath.Dir(foreign), 1234, 1234)

	linkedBase := f.symlinkedBase(t)
	mod := func(m func(c *firecracker.JailerConfig)) *firecracker.JailerConfig {
		c := f.good()
		m(&c)
		return &c
	}
	for _, tc := range []struct {
		name   string
		req    *firecracker.JailerConfig
		policy *JailerPolicy // nil: f.policy
		class  error
		says   string
	}{
		{"no arguments", nil, nil, errdefs.ErrInvalidArgument, "no jailer"},
		{"id traversal", mod(func(c *firecracker.JailerConfig) { c.ID = "../x" }), nil, errdefs.ErrInvalidArgument, "../x"},
		{"id empty", mod(func(c *firecracker.JailerConfig) { c.ID = "" }), nil, errdefs.ErrInvalidArgument, "jail id"},
		{"id slash", mod(func(c *firecracker.JailerConfig) { c.ID = "a/b" }), nil, errdefs.ErrInvalidArgument, "a/b"},
		{"id too long", mod(func(c *firecracker.JailerConfig) { c.ID = strings.Repeat("a", 65) }), nil, errdefs.ErrInvalidArgument, "jail id"},
		{"id dot", mod(func(c *firecracker.JailerConfig) { c.ID = "." }), nil, errdefs.ErrInvalidArgument, `"."`},
		{"other binary", mod(func(c *firecracker.JailerConfig) { c.ExecFile = "/bin/sh" }), nil, errdefs.ErrPermissionDenied, "/bin/sh"},
		{"binary relative", mod(func(c *firecracker.JailerConfig) { c.ExecFile = "firecracker" }), nil, errdefs.ErrPermissionDenied, "exec file"},
		{"uid root", mod(func(c *firecracker.JailerConfig) { c.UID = 0 }), nil, errdefs.ErrPermissionDenied, "uid:gid 0:"},
		{"gid root", mod(func(c *firecracker.JailerConfig) { c.GID = 0 }), nil, errdefs.ErrPermissionDenied, ":0"},
		{"uid other user", mod(func(c *firecracker.JailerConfig) { c.UID, c.GID = 1000, 1000 }), nil, errdefs.ErrPermissionDenied, "1000:1000"},
		{"base /", mod(func(c *firecracker.JailerConfig) { c.ChrootBase = "/" }), nil, errdefs.ErrPermissionDenied, "chroot base"},
		{"base default", mod(func(c *firecracker.JailerConfig) { c.ChrootBase = "" }), nil, errdefs.ErrPermissionDenied, "chroot base"},
		{"base dotdot", mod(func(c *firecracker.JailerConfig) { c.ChrootBase += "/../../etc" }), nil, errdefs.ErrPermissionDenied, "/../../etc"},
		{"base elsewhere", mod(func(c *firecracker.JailerConfig) { c.ChrootBase = elsewhere }), nil, errdefs.ErrPermissionDenied, elsewhere},
		{"id dir symlinked out", mod(func(c *firecracker.JailerConfig) { c.ID = "linked" }), nil, errdefs.ErrPermissionDenied, "linked is a symlink"},
		{"symlinked chroot base", mod(func(c *firecracker.JailerConfig) { c.ChrootBase = linkedBase }),
			&JailerPolicy{Jailer: f.policy.Jailer, Firecracker: f.policy.Firecracker, ChrootBase: linkedBase, UID: jailOwner, GID: jailOwner}, errdefs.ErrPermissionDenied, "linkedjail is a symlink"},
		{"planted exec copy", mod(func(c *firecracker.JailerConfig) { c.ID = "planted" }), nil, errdefs.ErrPermissionDenied, "already exists"},
		{"foreign-owned dir", mod(func(c *firecracker.JailerConfig) { c.ID = "foreign" }), nil, errdefs.ErrPermissionDenied, "neither root nor the owner"},
		{"not staged", mod(func(c *firecracker.JailerConfig) { c.ID = "nosuchvm" }), nil, errdefs.ErrFailedPrecondition, "stage the jail"},
		{"netns", mod(func(c *firecracker.JailerConfig) { c.NetNS = "/proc/1/ns/net" }), nil, errdefs.ErrPermissionDenied, "netns"},
		{"parent cgroup", mod(func(c *firecracker.JailerConfig) { c.ParentCgroup = "../../system.slice" }), nil, errdefs.ErrPermissionDenied, "parent cgroup"},
		{"resource limit", mod(func(c *firecracker.JailerConfig) { c.ResourceLimits = []string{"fsize=1"} }), nil, errdefs.ErrPermissionDenied, "resource limits"},
		{"cgroup not allowlisted", mod(func(c *firecracker.JailerConfig) { c.Cgroups = []string{"cgroup.procs=1"} }), nil, errdefs.ErrPermissionDenied, "cgroup.procs"},
		{"cgroup path in value", mod(func(c *firecracker.JailerConfig) { c.Cgroups = []string{"memory.max=../1"} }), nil, errdefs.ErrPermissionDenied, "memory.max=../1"},
		{"cgroup version 3", mod(func(c *firecracker.JailerConfig) { c.CgroupVersion = 3 }), nil, errdefs.ErrInvalidArgument, "cgroup version"},
		{"extra firecracker arg", mod(func(c *firecracker.JailerConfig) { c.FirecrackerArgs = append(c.FirecrackerArgs, "--no-seccomp") }), nil, errdefs.ErrPermissionDenied, "--no-seccomp"},
		{"config file", mod(func(c *firecracker.JailerConfig) { c.FirecrackerArgs = []string{"--config-file", "/x"} }), nil, errdefs.ErrPermissionDenied, "--config-file"},
		{"api sock traversal", mod(func(c *firecracker.JailerConfig) { c.FirecrackerArgs = []string{"--api-sock", "/../../run/x"} }), nil, errdefs.ErrPermissionDenied, "/../../run/x"},
		{"jailer flag smuggled in api sock", mod(func(c *firecracker.JailerConfig) { c.FirecrackerArgs = []string{"--api-sock", "--daemonize"} }), nil, errdefs.ErrPermissionDenied, "--daemonize"},
		{"helper without a policy", f.ptr(), &JailerPolicy{}, errdefs.ErrFailedPrecondition, "--jail-base"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pol := &f.policy
			if tc.policy != nil {
				pol = tc.policy
				if tc.policy.Jailer == "" {
					pol = nil
				}
			}
			s := &server{owner: jailOwner, jail: pol, log: slog.New(slog.DiscardHandler)}
			resp, out := s.handle(context.Background(), s.log, jailOwner, &request{Op: OpLaunchJailer, Jailer: tc.req}, f.log)
			if out != nil {
				unix.PidfdSendSignal(int(out.Fd()), syscall.SIGKILL, nil, 0)
				out.Close()
				t.Error("refused request started a process")
			}
			if _, err := os.Stat(f.ran); err == nil {
				os.Remove(f.ran)
				t.Fatal("the jailer ran")
			}
			err := errdefs.FromCode(resp.Class, resp.Error)
			if resp.Error == "" || !errors.Is(err, tc.class) {
				t.Fatalf("reply %+v: want class %v", resp, tc.class)
			}
			if !strings.Contains(resp.Error, "refused") || !strings.Contains(resp.Error, tc.says) {
				t.Errorf("reply %q: want it to name %q", resp.Error, tc.says)
			}
		})
	}
}

func (f *jailFixture) ptr() *firecracker.JailerConfig { c := f.good(); return &c }

// symlinkedBase adds a second base, a symlink to the real one, and returns
// it: the owner could swap their state directory's jail for such a link,
// so even a policy naming it must refuse.
func (f *jailFixture) symlinkedBase(t *testing.T) string {
	link := filepath.Join(filepath.Dir(f.policy.ChrootBase), "linkedjail")
	if err := os.Symlink(f.policy.ChrootBase, link); err != nil && !errors.Is(err, os.ErrExist) {
		t.Fatal(err)
	}
	return link
}

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
				"--jailer", f.policy.Jailer, "--firecracker", f.policy.Firecracker, "--jail-base", f.policy.ChrootBase}, "\x1f"))
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

	p, err := New(sock).LaunchJailer(context.Background(), f.good(), f.log)
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
	ran, _ := os.ReadFile(f.ran)
	want := strings.Join(firecracker.JailerArgs(f.good()), " ")
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
