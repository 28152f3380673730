package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestAutoStopIdle: with auto_stop set, a VM nobody uses is stopped (its
// disk kept), while one with an exec session open, or with a job keeping
// its CPU busy, runs on.
func TestAutoStopIdle(t *testing.T) {
	e := newVMEnvWith(t, "auto_stop = \"4s\"\n")
	t.Cleanup(func() { e.run("vm", "delete", "-f", "idle", "session", "busy") })

	e.ok("vm", "run", "-d", "--name", "idle", "--image", "bb")
	e.ok("vm", "exec", "idle", "--", "sh", "-c", "echo kept > /root/kept")
	e.ok("vm", "run", "-d", "--name", "session", "--image", "bb")
	e.ok("vm", "run", "-d", "--name", "busy", "--image", "bb")
	// An open session: a command that runs for the whole test.
	ctx, cancel := context.WithCancel(context.Background())
	sess := e.cmd(ctx, "vm", "exec", "session", "--", "sleep", "600")
	if err := sess.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); sess.Wait() }()
	// A background job that keeps the CPU busy after its exec returned
	// (in a session of its own: the agent ends an exec's session with it).
	e.ok("vm", "exec", "busy", "--", "sh", "-c", "setsid sh -c 'while :; do :; done' </dev/null >/dev/null 2>&1 &")

	state := func(name string) string {
		var v struct{ State string }
		testutilJSON(t, e.ok("vm", "show", name, "--json"), &v)
		return v.State
	}
	deadline := time.Now().Add(90 * time.Second)
	// stopping: the stop is recorded before it runs; wait through it.
	for s := state("idle"); (s == "running" || s == "stopping") && time.Now().Before(deadline); s = state("idle") {
		time.Sleep(time.Second)
	}
	if s := state("idle"); s != "stopped" {
		t.Fatalf("idle VM is %s after 90 s with auto_stop = 4s", s)
	}
	if log, _ := os.ReadFile(filepath.Join(e.home, "state", "bangerd.log")); !strings.Contains(string(log), "stopping idle vm") {
		t.Errorf("the daemon log does not say why the VM stopped")
	}
	// Stopped the way vm stop does: the disk and what was written stay.
	e.ok("vm", "start", "idle")
	if out := e.ok("vm", "exec", "idle", "--", "cat", "/root/kept"); out != "kept\n" {
		t.Errorf("after auto-stop and start: %q", out)
	}
	// The others ran on through the same time (and 8 s more).
	time.Sleep(8 * time.Second)
	for _, n := range []string{"session", "busy"} {
		if s := state(n); s != "running" {
			t.Errorf("VM %s is %s; it was in use", n, s)
		}
	}
}
