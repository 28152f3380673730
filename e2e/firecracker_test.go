package e2e

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestFirecrackerThroughDouble runs the VM suite's core through the
// Firecracker engine, with firecracker_bin pointing at a test double that
// speaks Firecracker's command line, API and hybrid-vsock protocol and
// boots the guest under QEMU (no Firecracker can be had here).
func TestFirecrackerThroughDouble(t *testing.T) {
	e := newVMEnvWith(t, "engine = \"firecracker\"\nfirecracker_bin = \""+filepath.Join(binDir, "firecracker")+"\"\njailer = false\n",
		"BANGER_TEST_FIRECRACKER_DOUBLE=1")

	var info struct {
		Default string
		Engines []struct {
			Name, Version string
			Available     bool
		}
	}
	testutilJSON(t, e.ok("engine", "--json"), &info)
	if info.Default != "firecracker" {
		t.Fatalf("engine: %+v", info)
	}

	r := e.run("vm", "run", "--rm", "--image", "bb", "--", "sh", "-c", "echo hi; exit 7")
	if r.code != 7 || r.out != "hi\n" {
		t.Fatalf("vm run through firecracker: %+v\ndaemon log:\n%s", r, e.daemonLog())
	}
	e.ok("vm", "run", "-d", "--name", "fc", "--image", "bb")
	defer e.run("vm", "delete", "-f", "fc")
	var v struct {
		Engine string
		PID    int
	}
	json.Unmarshal([]byte(e.ok("vm", "show", "fc", "--json")), &v)
	if v.Engine != "firecracker" {
		t.Errorf("vm engine %q", v.Engine)
	}
	// Stop data safety and persistence.
	for i := 0; i < 3; i++ {
		e.ok("vm", "exec", "fc", "--", "sh", "-c", "echo round >> /root/log")
		if out := e.ok("vm", "stop", "fc"); !strings.Contains(out, "synced") {
			t.Fatalf("stop: %q", out)
		}
		e.ok("vm", "start", "fc")
	}
	if out := e.ok("vm", "exec", "fc", "--", "wc", "-l", "/root/log"); !strings.HasPrefix(strings.TrimSpace(out), "3") {
		t.Errorf("after 3 stop/start rounds: %q", out)
	}
	// Restart survival: kill -9 the daemon; the next one re-attaches.
	pid := e.daemonPID()
	syscall.Kill(pid, syscall.SIGKILL)
	for processAlive(pid) {
		time.Sleep(10 * time.Millisecond)
	}
	if out := e.ok("vm", "exec", "fc", "--", "cat", "/root/log"); strings.Count(out, "round") != 3 {
		t.Errorf("after daemon restart: %q", out)
	}
	if out := e.ok("vm", "stop", "fc"); !strings.Contains(out, "synced") {
		t.Errorf("stop after reattach: %q", out)
	}
}
