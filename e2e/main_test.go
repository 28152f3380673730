// Package e2e runs the built banger and bangerd binaries as a user would,
// each test with its own BANGER_HOME, and checks output, exit statuses and
// what is left on disk.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bangervm/banger/internal/testutil"
)

var binDir string

// hostileAgent is the test-only hostile banger-agent, for BANGER_AGENT.
var hostileAgent string

func TestMain(m *testing.M) {
	if dir := os.Getenv(envFakeDaemon); dir != "" {
		os.Exit(fakeDaemon(dir)) // a child of TestPlantedRuntimeDirCLI
	}
	// Each test sets the BANGER_* settings it relies on; none comes from
	// the shell.
	testutil.ClearProductEnv()
	// Daemons the tests start outside a namespace of their own must never
	// set up banger's bridge and NAT on the host; the network tests turn
	// it on inside their namespaces.
	os.Setenv("BANGER_NETWORK", "off")
	dir, err := os.MkdirTemp("", "banger-e2e-bin-")
	if err != nil {
		panic(err)
	}
	binDir = dir
	cmd := exec.Command("go", "build", "-o", dir+"/", "../cmd/banger", "../cmd/bangerd", "../cmd/banger-agent")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build: %v\n%s", err, out)
		os.Exit(1)
	}
	// The hostile test agent (see internal/agent/hostile.go).
	hostileAgent = filepath.Join(dir, "hostile", "banger-agent")
	ha := exec.Command("go", "build", "-tags", "hostileagent", "-o", hostileAgent, "../cmd/banger-agent")
	ha.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := ha.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build the hostile agent: %v\n%s", err, out)
		os.Exit(1)
	}
	// A bangerd that kills itself at the crash point named in
	// $BANGER_CRASH_AT, for TestCrashRecovery.
	crash := exec.Command("go", "build", "-tags", "crashpoint", "-o", filepath.Join(dir, "bangerd-crash"), "../cmd/bangerd")
	crash.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := crash.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build the crashpoint bangerd: %v\n%s", err, out)
		os.Exit(1)
	}
	// The Firecracker and jailer test doubles, under the names the engine
	// looks for.
	for name, pkg := range map[string]string{"firecracker": "fcdouble", "jailer": "jailerdouble"} {
		dbl := exec.Command("go", "build", "-o", filepath.Join(dir, name), "../internal/engine/firecracker/"+pkg)
		dbl.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := dbl.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build the %s test double: %v\n%s", name, err, out)
			os.Exit(1)
		}
	}
	code := m.Run()
	if debShared != nil {
		debShared.run("vm", "prune", "-f")
		debShared.stopDaemon()
		os.RemoveAll(debShared.home)
	}
	if vmShared != nil {
		vmShared.run("vm", "prune", "-f")
		vmShared.stopDaemon()
		os.RemoveAll(vmShared.home)
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

// env is one banger installation: its own home and daemon.
type env struct {
	t     *testing.T
	home  string
	extra []string
	// wrap runs banger through another command, e.g. ip netns exec NS.
	wrap []string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	// Short path: the socket must fit in 108 bytes.
	home, err := os.MkdirTemp("", "bh-")
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, home: home}
	t.Cleanup(func() {
		e.stopDaemon()
		os.RemoveAll(home)
	})
	return e
}

type result struct {
	out, err string
	code     int
}

// writeConfig writes e's config.toml; call it before e's daemon starts.
func (e *env) writeConfig(toml string) {
	e.t.Helper()
	dir := filepath.Join(e.home, "config")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		e.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(toml), 0o600); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) cmd(ctx context.Context, args ...string) *exec.Cmd {
	argv := append(append(append([]string{}, e.wrap...), filepath.Join(binDir, "banger")), args...)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "BANGER_HOME="+e.home, "BANGERD="+filepath.Join(binDir, "bangerd"))
	cmd.Env = append(cmd.Env, e.extra...)
	return cmd
}

// run runs banger and returns what it printed and its exit status.
func (e *env) run(args ...string) result {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	return runCmd(e.t, e.cmd(ctx, args...))
}

// runCmd runs cmd and returns what it printed and its exit status; it
// fails the test if cmd cannot run at all.
func runCmd(t *testing.T, cmd *exec.Cmd) result {
	t.Helper()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%s: %v", strings.Join(cmd.Args, " "), err)
	}
	return result{out: out.String(), err: errb.String(), code: code}
}

// ok runs banger and fails the test unless it exits 0.
func (e *env) ok(args ...string) string {
	e.t.Helper()
	r := e.run(args...)
	if r.code != 0 {
		e.t.Fatalf("banger %s: exit %d\nstdout: %s\nstderr: %s\ndaemon log:\n%s%s", strings.Join(args, " "), r.code, r.out, r.err, e.daemonLog(), e.consoleTails())
	}
	return r.out
}

// consoleTails is the end of every VM's console log, where the guest
// agent logs each exec it starts and each session: what a command that
// failed or hung reached in the guest.
func (e *env) consoleTails() string {
	logs, _ := filepath.Glob(filepath.Join(e.home, "state", "vms", "*", "console.log"))
	var b strings.Builder
	for _, l := range logs {
		c, _ := os.ReadFile(l)
		if len(c) > 2000 {
			c = c[len(c)-2000:]
		}
		fmt.Fprintf(&b, "\nconsole %s:\n%s", filepath.Base(filepath.Dir(l)), c)
	}
	return b.String()
}

func (e *env) daemonLog() string {
	b, _ := os.ReadFile(filepath.Join(e.home, "state", "bangerd.log"))
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

func (e *env) daemonPID() int {
	b, err := os.ReadFile(filepath.Join(e.home, "run", "bangerd.pid"))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

func (e *env) stopDaemon() {
	pid := e.daemonPID()
	if pid <= 1 {
		return
	}
	syscall.Kill(pid, syscall.SIGTERM)
	for i := 0; i < 200 && syscall.Kill(pid, 0) == nil; i++ {
		time.Sleep(25 * time.Millisecond)
	}
	syscall.Kill(pid, syscall.SIGKILL)
}

func processAlive(pid int) bool {
	if pid <= 0 || syscall.Kill(pid, 0) != nil {
		return false
	}
	// A zombie is not alive.
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	return err == nil && !strings.Contains(string(b), ") Z ")
}

func testutilJSON(t *testing.T, s string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(s), v); err != nil {
		t.Fatalf("%v: %q", err, s)
	}
}
