package e2e

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"

	"github.com/bangervm/banger/internal/paths"
	"github.com/bangervm/banger/internal/testutil"
)

func TestVersion(t *testing.T) {
	e := newEnv(t)
	out := e.ok("version")
	if !strings.Contains(out, "banger ") || !strings.Contains(out, "commit:") {
		t.Errorf("version output %q", out)
	}
	if e.daemonPID() != 0 {
		t.Error("version started a daemon")
	}
}

func TestDaemonAutoStartAndPermissions(t *testing.T) {
	e := newEnv(t)
	if out := e.ok("image", "list", "--json"); strings.TrimSpace(out) != "[]" {
		t.Errorf("image list on a fresh home: %q", out)
	}
	pid := e.daemonPID()
	if !processAlive(pid) {
		t.Fatalf("no daemon after first use (pid %d)", pid)
	}
	sock := filepath.Join(e.home, "run", "bangerd.sock")
	st, err := os.Stat(sock)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v (%v), want 0600", st.Mode().Perm(), err)
	}
	dst, _ := os.Stat(filepath.Dir(sock))
	if dst.Mode().Perm() != 0o700 {
		t.Errorf("runtime dir mode %v, want 0700", dst.Mode().Perm())
	}
	// The daemon is in its own session: not killed with the CLI's group.
	if sid, _ := unix.Getsid(pid); sid != pid {
		t.Errorf("daemon session %d, want its own (%d)", sid, pid)
	}
	if out := e.ok("daemon", "status"); !strings.Contains(out, "running") {
		t.Errorf("status: %q", out)
	}
	// Without a system install, restart stops this daemon and starts
	// another; logs is its bangerd.log.
	e.ok("daemon", "restart")
	if processAlive(pid) {
		t.Errorf("daemon %d still running after restart", pid)
	}
	if pid = e.daemonPID(); !processAlive(pid) {
		t.Fatalf("no daemon after restart (pid %d)", pid)
	}
	if out := e.ok("daemon", "logs", "-n", "1"); strings.Count(out, "\n") != 1 {
		t.Errorf("daemon logs -n 1: %q", out)
	}
	e.ok("daemon", "stop")
	if processAlive(pid) {
		t.Error("daemon still running after stop")
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("socket left after stop: %v", err)
	}
}

func TestTwoCLIsAtOnce(t *testing.T) {
	e := newEnv(t)
	var wg sync.WaitGroup
	results := make([]result, 4)
	for i := range results {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			results[i] = e.run("kernel", "list", "--json")
		}(i)
	}
	wg.Wait()
	for i, r := range results {
		if r.code != 0 {
			t.Errorf("CLI %d: exit %d: %s", i, r.code, r.err)
		}
	}
	// Exactly one daemon serves this home.
	out, _ := exec.Command("pgrep", "-f", "bangerd").Output()
	n := 0
	for _, p := range strings.Fields(string(out)) {
		env, _ := os.ReadFile("/proc/" + p + "/environ")
		if strings.Contains(string(env), "BANGER_HOME="+e.home+"\x00") {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d daemons for one home, want 1", n)
	}
}

func TestVersionMismatch(t *testing.T) {
	e := newEnv(t)
	other := filepath.Join(t.TempDir(), "bangerd-v999")
	cmd := exec.Command("go", "build", "-ldflags", "-X github.com/bangervm/banger/api.Version=999", "-o", other, "../cmd/bangerd")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build: %v %s", err, out)
	}
	e.extra = []string{"BANGERD=" + other}
	r := e.run("image", "list")
	if r.code != 1 || !strings.Contains(r.err, "speaks API v999") || !strings.Contains(r.err, "this banger speaks v1") || !strings.Contains(r.err, "banger daemon stop") {
		t.Fatalf("old CLI against new daemon: exit %d, stderr %q; want a clear version error", r.code, r.err)
	}
	// The advertised fix works: stop it, and the CLI starts its own.
	e.ok("daemon", "stop")
	e.extra = nil
	e.ok("image", "list")
}

func TestUsageErrors(t *testing.T) {
	e := newEnv(t)
	for _, args := range [][]string{
		{"image", "pull"},
		{"image", "pull", "a", "b"},
		{"kernel", "import", "--name", "x"},
		{"image", "register", "--name", "x"},
		{"image", "pull", "x", "--size", "huge"},
		{"nosuchcommand"},
	} {
		r := e.run(args...)
		if r.code != 2 || r.err == "" {
			t.Errorf("banger %v: exit %d stderr %q, want usage error (2)", args, r.code, r.err)
		}
	}
}

func TestCheckMigrations(t *testing.T) {
	e := newEnv(t)
	run := func() int {
		cmd := exec.Command(filepath.Join(binDir, "bangerd"), "--check-migrations")
		cmd.Env = append(os.Environ(), "BANGER_HOME="+e.home)
		err := cmd.Run()
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		return 0
	}
	if c := run(); c != 1 {
		t.Errorf("fresh home: exit %d, want 1 (pending)", c)
	}
	e.ok("image", "list")
	if c := run(); c != 0 {
		t.Errorf("after daemon start: exit %d, want 0", c)
	}
	// The JSON form banger doctor reads.
	cmd := exec.Command(filepath.Join(binDir, "bangerd"), "--check-migrations", "--json")
	cmd.Env = append(os.Environ(), "BANGER_HOME="+e.home)
	out, err := cmd.Output()
	var lvl struct{ Current, Latest int }
	if err != nil || json.Unmarshal(out, &lvl) != nil || lvl.Current == 0 || lvl.Current != lvl.Latest {
		t.Errorf("--check-migrations --json: %v %q", err, out)
	}
}

func pushBase(t *testing.T, reg *testutil.Registry, repoTag string) (string, v1.Image) {
	img := testutil.Image(t, v1.Config{Env: []string{"PATH=/bin"}, Cmd: []string{"/bin/sh"}, WorkingDir: "/srv"},
		testutil.Tar(t,
			testutil.TarEntry{Name: "etc/", Type: '5'},
			testutil.TarEntry{Name: "etc/os-release", Body: "ID=e2e\n"},
			testutil.TarEntry{Name: "srv/", Type: '5'},
		),
		testutil.Tar(t, testutil.TarEntry{Name: "srv/data", Body: strings.Repeat("x", 3<<20)}),
	)
	return reg.Push(t, img, repoTag), img
}

func TestImageCommands(t *testing.T) {
	e := newEnv(t)
	reg := testutil.NewRegistry(t)
	ref, _ := pushBase(t, reg, "team/dev:1")

	out := e.ok("image", "pull", ref, "--name", "dev", "--json")
	var img struct {
		Name, Digest, RootFS string
		Config               struct{ WorkingDir string }
	}
	if err := json.Unmarshal([]byte(out), &img); err != nil {
		t.Fatalf("pull --json: %v: %q", err, out)
	}
	if img.Name != "dev" || img.Config.WorkingDir != "/srv" || !strings.HasPrefix(img.Digest, "sha256:") {
		t.Errorf("pull result %+v", img)
	}
	if out, _ := exec.Command("debugfs", "-R", "cat /etc/os-release", img.RootFS).Output(); string(out) != "ID=e2e\n" {
		t.Errorf("rootfs content %q", out)
	}
	if out := e.ok("image", "list"); !strings.Contains(out, "dev") || !strings.Contains(out, ref) {
		t.Errorf("list: %q", out)
	}
	if out := e.ok("image", "show", "dev"); !strings.Contains(out, "workdir:    /srv") && !strings.Contains(out, "/srv") {
		t.Errorf("show: %q", out)
	}
	// Names match exactly; prefixes never.
	if r := e.run("image", "show", "de"); r.code != 1 || !strings.Contains(r.err, "not found") {
		t.Errorf("prefix lookup: %+v", r)
	}
	if out := e.ok("image", "cache", "list"); !strings.Contains(out, "dev") {
		t.Errorf("cache list: %q", out)
	}
	// A promoted copy: local, pinned, not re-pulled into, and it outlives
	// the pulled image and the cache.
	if out := e.ok("image", "promote", "dev", "--as", "dev-pinned"); !strings.Contains(out, "image dev-pinned is local (promoted from "+ref) {
		t.Errorf("promote: %q", out)
	}
	if r := e.run("image", "pull", ref, "--name", "dev-pinned"); r.code != 1 || !strings.Contains(r.err, "promoted") {
		t.Errorf("pull into a promoted name: %+v", r)
	}
	if r := e.run("image", "promote", "dev-pinned"); r.code != 1 || !strings.Contains(r.err, "already local") {
		t.Errorf("promote a promoted image: %+v", r)
	}
	e.ok("image", "delete", "dev")
	if out := e.ok("image", "cache", "prune", "--dry-run"); !strings.Contains(out, "would remove 2 blobs") {
		t.Errorf("prune dry run: %q", out)
	}
	if out := e.ok("image", "cache", "prune"); !strings.Contains(out, "removed 2 blobs") {
		t.Errorf("prune: %q", out)
	}
	var pinned struct{ RootFS, Source string }
	if err := json.Unmarshal([]byte(e.ok("image", "show", "dev-pinned", "--json")), &pinned); err != nil || pinned.Source != "promoted" {
		t.Errorf("promoted image after the pulled one and the cache went: %+v %v", pinned, err)
	} else if out, _ := exec.Command("debugfs", "-R", "cat /etc/os-release", pinned.RootFS).Output(); string(out) != "ID=e2e\n" {
		t.Errorf("promoted rootfs content %q", out)
	}
	e.ok("image", "delete", "dev-pinned")
	if r := e.run("image", "pull", "127.0.0.1:1/nothing:here"); r.code != 1 || !strings.Contains(r.err, "unreachable") {
		t.Errorf("registry down: %+v", r)
	}
}

// SIGTERM to the daemon in the middle of a pull: the pull fails for the
// client, and no image, rootfs, staging dir or partial blob is left.
func TestSIGTERMMidPull(t *testing.T) {
	e := newEnv(t)
	reg := testutil.NewRegistry(t)
	ref, img := pushBase(t, reg, "slow:1")
	layers, _ := img.Layers()
	d, _ := layers[1].Digest()
	release := reg.Stall(d.String())
	defer release()

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := e.cmd(ctx, "image", "pull", ref, "--name", "slow")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Wait until the stalled layer is being fetched.
	deadline := time.Now().Add(30 * time.Second)
	for reg.BlobGets(d.String()) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("pull never reached the second layer; stderr %s; log %s", stderr.String(), e.daemonLog())
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	pid := e.daemonPID()
	syscall.Kill(pid, syscall.SIGTERM)
	err := cmd.Wait()
	if err == nil {
		t.Fatal("pull succeeded although the daemon was stopped mid-layer")
	}
	for i := 0; i < 200 && processAlive(pid); i++ {
		time.Sleep(50 * time.Millisecond)
	}
	if processAlive(pid) {
		t.Fatal("daemon did not exit on SIGTERM")
	}
	for _, dir := range []string{"state/tmp", "state/images", "cache/blobs/incoming"} {
		entries, _ := os.ReadDir(filepath.Join(e.home, dir))
		if len(entries) != 0 {
			t.Errorf("%s holds %d entries after SIGTERM", dir, len(entries))
		}
	}
	if _, err := os.Stat(filepath.Join(e.home, "cache/blobs/sha256", strings.TrimPrefix(d.String(), "sha256:"))); err == nil {
		t.Error("partial blob published in the cache")
	}
	if out := e.ok("image", "list", "--json"); strings.TrimSpace(out) != "[]" {
		t.Errorf("image registered after an interrupted pull: %s", out)
	}
	release()
	// And the same pull works afterwards.
	e.ok("image", "pull", ref, "--name", "slow")
}

// TestDaemonStartFailureReported: a daemon that cannot start (here a
// config.toml it refuses) is reported by the CLI that started it in the
// daemon's own words, not as a daemon that did not answer in time.
func TestDaemonStartFailureReported(t *testing.T) {
	e := newEnv(t)
	cfg := paths.Under(e.home).ConfigFile()
	if err := os.MkdirAll(filepath.Dir(cfg), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg, []byte("[vm]\nmemory = \"lots\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := e.run("vm", "list")
	if r.code != 1 || !strings.Contains(r.err, "exited as it started") || !strings.Contains(r.err, "config") || strings.Contains(r.err, "did not answer") {
		t.Fatalf("banger vm list with a bad config: exit %d, stderr %q; want the daemon's own error", r.code, r.err)
	}
}
