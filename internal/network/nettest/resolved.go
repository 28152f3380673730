package nettest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
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

// ResolvedEnv names the directory the systemd-resolved package was
// extracted to (dpkg-deb -x, never installed: its postinst takes over the
// host's /etc/resolv.conf); DefaultResolvedDir when unset. .ci/install-deps
// extracts it there.
const ResolvedEnv = "BANGER_TEST_RESOLVED"

// DefaultResolvedDir is where .ci/install-deps extracts systemd-resolved.
const DefaultResolvedDir = "/opt/banger-ci/systemd-resolved"

// Sandbox is a network namespace with a private mount namespace on top:
// a tmpfs on /run holding a private D-Bus system bus, and optionally a
// real systemd-resolved. Programs started with Command run inside both,
// so resolvectl, busctl and the bus they use are the sandbox's, never the
// host's; the host's /run, /etc and network are not touched.
type Sandbox struct {
	NS  string // the network namespace
	pid int    // a process holding the mount namespace
	dir string // the extracted systemd-resolved package
}

// ResolvedDir returns the extracted systemd-resolved package, skipping the
// test (failing it in CI) when it is missing, along with the other tools a
// Sandbox needs.
func ResolvedDir(t testing.TB) string {
	t.Helper()
	Require(t)
	for _, tool := range [][2]string{{"dbus-daemon", "dbus-daemon"}, {"busctl", "systemd"}, {"nsenter", "util-linux"}, {"unshare", "util-linux"}, {"setpriv", "util-linux"}} {
		testutil.RequireTool(t, tool[0], tool[1])
	}
	dir := os.Getenv(ResolvedEnv)
	if dir == "" {
		dir = DefaultResolvedDir
	}
	_, err1 := os.Stat(filepath.Join(dir, "lib/systemd/systemd-resolved"))
	_, err2 := os.Stat(filepath.Join(dir, "usr/bin/resolvectl"))
	testutil.Require(t, err1 == nil && err2 == nil, "systemd-resolved extracted at "+dir+" ($"+ResolvedEnv+"; .ci/install-deps extracts it)")
	return dir
}

// NewSandbox creates the namespaces and starts the private system bus.
// Everything is stopped and removed when the test ends.
func NewSandbox(t testing.TB) *Sandbox {
	t.Helper()
	dir := ResolvedDir(t)
	s := &Sandbox{NS: NewNS(t), dir: dir}
	// --propagation private: the tmpfs never shows outside. The shell
	// prints its pid, which sleep keeps (exec), for nsenter.
	holder := exec.Command("ip", "netns", "exec", s.NS, "unshare", "--mount", "--propagation", "private", "sh", "-ec", `
		mount -t tmpfs -o mode=0755 banger-test-run /run
		mkdir -p /run/dbus /run/systemd/resolve /run/systemd/resolved.conf.d
		# resolved runs as nobody: it writes here and drops nothing.
		chown 65534:65534 /run/systemd/resolve
		# Unicast DNS only: no LLMNR or mDNS chatter on the sandbox's links.
		printf '[Resolve]\nLLMNR=no\nMulticastDNS=no\n' > /run/systemd/resolved.conf.d/banger-test.conf
		echo $$
		exec sleep infinity
	`)
	holder.SysProcAttr = orphanKill()
	out, err := holder.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	holder.Stderr = &stderr
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	stopOnCleanup(t, "mount namespace holder", holder)
	line, err := bufio.NewReader(out).ReadString('\n')
	if s.pid, err = strconv.Atoi(strings.TrimSpace(line)); err != nil {
		t.Fatalf("sandbox: %q: %v\n%s", line, err, stderr.String())
	}

	conf := filepath.Join(t.TempDir(), "bus.conf")
	if err := os.WriteFile(conf, []byte(busConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	s.start(t, "dbus-daemon", "dbus-daemon", "--config-file="+conf, "--nofork", "--nopidfile")
	s.waitFor(t, "system bus", func() bool {
		_, err := os.Stat(s.Path("/run/dbus/system_bus_socket"))
		return err == nil
	})
	return s
}

// busConfig is a system bus that lets every local user own and call any
// name: it serves the sandbox alone.
const busConfig = `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=/run/dbus/system_bus_socket</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_type="method_return"/>
    <allow send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
  </policy>
</busconfig>
`

// StartResolved starts systemd-resolved in the sandbox and waits until it
// owns its bus name. It runs as nobody with the capabilities its unit
// grants (run as root it would insist on the systemd-resolve user, which
// exists only where the package is installed).
func (s *Sandbox) StartResolved(t testing.TB) {
	t.Helper()
	caps := "+setpcap,+net_raw,+net_bind_service"
	s.start(t, "systemd-resolved", "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
		"--inh-caps="+caps, "--ambient-caps="+caps, filepath.Join(s.dir, "lib/systemd/systemd-resolved"))
	s.waitFor(t, "systemd-resolved on the bus", func() bool {
		_, err := s.Command("busctl", "--system", "call", "org.freedesktop.DBus", "/org/freedesktop/DBus",
			"org.freedesktop.DBus", "GetConnectionUnixProcessID", "s", "org.freedesktop.resolve1").Output()
		return err == nil
	})
}

// Path is path as seen inside the sandbox's mount namespace.
func (s *Sandbox) Path(path string) string {
	return fmt.Sprintf("/proc/%d/root%s", s.pid, path)
}

// Env is the environment of programs in the sandbox: resolvectl from the
// extracted package first in PATH.
func (s *Sandbox) Env() []string {
	return append(os.Environ(), "PATH="+filepath.Join(s.dir, "usr/bin")+":"+os.Getenv("PATH"))
}

// Command is a command running inside the sandbox's network and mount
// namespaces (nsenter does not fork: the process is the program itself).
func (s *Sandbox) Command(name string, args ...string) *exec.Cmd {
	return s.CommandContext(context.Background(), name, args...)
}

// CommandContext is Command with a context.
func (s *Sandbox) CommandContext(ctx context.Context, name string, args ...string) *exec.Cmd {
	return s.command(ctx, "-n", name, args...)
}

// CommandIn is a command running in the sandbox's mount namespace (its
// bus, its resolved) but in another network namespace, ns.
func (s *Sandbox) CommandIn(ns, name string, args ...string) *exec.Cmd {
	// nsenter opens the namespace file before it enters the sandbox,
	// whose /run hides /run/netns.
	return s.command(context.Background(), "--net=/run/netns/"+ns, name, args...)
}

func (s *Sandbox) command(ctx context.Context, netFlag, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"-t", strconv.Itoa(s.pid), "-m", netFlag, "--", name}, args...)...)
	cmd.Env = s.Env()
	cmd.SysProcAttr = orphanKill()
	return cmd
}

// orphanKill has a child killed if the test binary dies without its
// cleanups (a -timeout panic): the bus and the holder then go with it.
// systemd-resolved loses the setting when setpriv changes its uid.
func orphanKill() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// Resolvectl runs the extracted resolvectl in the sandbox and returns its
// output (standard error included).
func (s *Sandbox) Resolvectl(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := s.CommandContext(ctx, filepath.Join(s.dir, "usr/bin/resolvectl"), args...).CombinedOutput()
	return string(out), err
}

// start runs a daemon in the sandbox until the test ends.
func (s *Sandbox) start(t testing.TB, what, name string, args ...string) {
	t.Helper()
	cmd := s.Command(name, args...)
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", what, err)
	}
	stopOnCleanup(t, what, cmd)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s said:\n%s", what, logs.String())
		}
	})
}

func (s *Sandbox) waitFor(t testing.TB, what string, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !ok(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("sandbox: no %s after 20s", what)
		}
	}
}

// stopOnCleanup ends cmd with SIGTERM (SIGKILL after 10s) and reaps it
// when the test ends.
func stopOnCleanup(t testing.TB, what string, cmd *exec.Cmd) {
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			if err := <-done; err != nil && !errors.Is(err, os.ErrProcessDone) {
				t.Logf("%s killed: %v", what, err)
			}
		}
	})
}
