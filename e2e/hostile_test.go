package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// hostileEnv is a banger home whose VMs boot the hostile test agent: it
// behaves until told otherwise through /run/banger-hostile in its guest.
func hostileEnv(t *testing.T, toml string, extra ...string) *env {
	return newVMEnvWith(t, toml, append(extra, "BANGER_AGENT="+hostileAgent)...)
}

func (e *env) setHostile(vm, modes string) {
	e.t.Helper()
	e.ok("vm", "exec", vm, "--", "sh", "-c", "echo "+modes+" > /run/banger-hostile")
}

// rssMiB is the resident memory of process pid.
func rssMiB(t *testing.T, pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("bangerd: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.Atoi(f[1])
			return kb / 1024
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// maxGrowth is how much the daemon may grow while it reads a hostile
// guest: far more than bounded parsing needs (a few tens of MiB), far
// less than reading an endless answer costs (about 1 GiB a minute).
const maxGrowth = 200

// runWatched runs banger args while watching the daemon's memory: the
// command is ended if the daemon grows past maxGrowth MiB over its size
// at the start, or runs past a hang guard. It returns the growth.
func (e *env) runWatched(args ...string) (res result, growth int) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	pid := e.daemonPID()
	base := rssMiB(e.t, pid)
	done := make(chan struct{})
	go func() {
		defer close(done)
		res = runCmd(e.t, e.cmd(ctx, args...))
	}()
	for {
		select {
		case <-done:
			return res, max(growth, rssMiB(e.t, pid)-base)
		case <-time.After(200 * time.Millisecond):
		}
		if growth = max(growth, rssMiB(e.t, pid)-base); growth > maxGrowth {
			cancel()
			<-done
			return res, growth
		}
	}
}

// TestHostileGuestBounded: a guest answering without end, or not at all,
// costs the daemon bounded memory and time, fails only the commands about
// itself with a clear error, and delays nothing about another VM (its
// ports, stats and auto-stop).
func TestHostileGuestBounded(t *testing.T) {
	e := hostileEnv(t, "auto_stop = \"20s\"\n")
	t.Cleanup(func() { e.run("vm", "delete", "-f", "evil", "good") })
	// Open sessions keep the VMs from being auto-stopped until they end.
	session := func(vm string) (end func()) {
		ctx, cancel := context.WithCancel(context.Background())
		cmd := e.cmd(ctx, "vm", "exec", vm, "--", "sleep", "600")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return sync.OnceFunc(func() { cancel(); cmd.Wait() })
	}
	e.ok("vm", "run", "-d", "--name", "evil", "--image", "bb")
	endEvil := session("evil")
	defer endEvil()
	e.ok("vm", "run", "-d", "--name", "good", "--image", "bb")
	endGood := session("good")
	defer endGood()

	// An endless socket table: vm ports fails, naming the limit, and the
	// daemon does not grow.
	e.setHostile("evil", "procnet-endless")
	base := rssMiB(t, e.daemonPID())
	r, growth := e.runWatched("vm", "ports", "evil")
	t.Logf("vm ports on an endless socket table: exit %d, %s; bangerd RSS %d MiB before, grew by %d MiB", r.code, strings.TrimSpace(r.err), base, growth)
	if growth > maxGrowth {
		t.Fatalf("bangerd grew by %d MiB reading the guest's socket table", growth)
	}
	if r.code == 0 || !strings.Contains(r.err, "/proc/net/tcp") || !strings.Contains(r.err, "limit") {
		t.Errorf("vm ports on an endless socket table: exit %d, stderr %q; want an error naming the file and the limit", r.code, r.err)
	}

	// A guest that never answers: vm ports fails within its bound, while
	// the other VM answers at once.
	e.setHostile("evil", "stall")
	endEvil() // from now on only the stall keeps it from looking idle
	stalled := make(chan result, 1)
	go func() { r, _ := e.runWatched("vm", "ports", "evil"); stalled <- r }()
	if out := e.ok("vm", "ports", "good"); !strings.Contains(out, "PORT") {
		t.Errorf("vm ports good: %q", out)
	}
	if out := e.ok("vm", "stats", "good", "--json"); !strings.Contains(out, "memTotalBytes") {
		t.Errorf("vm stats good has no guest part: %s", out)
	}
	r = <-stalled
	if r.code == 0 || !strings.Contains(r.err, "no answer within") {
		t.Errorf("vm ports on a stalled guest: exit %d, stderr %q; want a timeout error", r.code, r.err)
	}
	// Stats of the stalled guest still answer, with the host's view.
	if out := e.ok("vm", "stats", "evil", "--json"); strings.Contains(out, "memTotalBytes") {
		t.Errorf("vm stats on a stalled guest has a guest part: %s", out)
	}

	// auto_stop: with evil stalling every idle check, good, now idle,
	// is still stopped; evil, which cannot be seen, is not.
	endGood()
	state := func(name string) string {
		var v struct{ State string }
		testutilJSON(t, e.ok("vm", "show", name, "--json"), &v)
		return v.State
	}
	deadline := time.Now().Add(3 * time.Minute)
	for state("good") != "stopped" && time.Now().Before(deadline) {
		time.Sleep(time.Second)
	}
	if s := state("good"); s != "stopped" {
		t.Fatalf("idle VM is %s with auto_stop = 20s while another guest stalls\ndaemon log:\n%s", s, e.daemonLog())
	}
	if s := state("evil"); s != "running" {
		t.Errorf("the stalled VM is %s; what cannot be seen is not stopped", s)
	}

	// Oversized nonsense stats: the guest part is left out.
	e.setHostile("evil", "stats-huge")
	if out := e.ok("vm", "stats", "evil", "--json"); strings.Contains(out, "memTotalBytes") || strings.Contains(out, "\\u001b") {
		t.Errorf("vm stats shows a hostile guest's answer: %.300s", out)
	}
	if log := e.daemonLog(); !strings.Contains(log, "net devices") {
		t.Errorf("the daemon log does not say why the guest's stats were refused:\n%s", log)
	}
	if rss := rssMiB(t, e.daemonPID()); rss > base+maxGrowth {
		t.Errorf("bangerd RSS %d MiB at the end, %d at the start", rss, base)
	}
}

// TestConsoleLogRotated: a guest printing twice the cap on its console
// fills at most the capped console.log and one rotated file, also across
// a daemon restart (kill -9) between the halves.
func TestConsoleLogRotated(t *testing.T) {
	for _, tc := range []struct {
		name  string
		toml  string
		extra []string
	}{
		{"qemu", "", nil},
		{"firecracker-double", "engine = \"firecracker\"\nfirecracker_bin = \"" + filepath.Join(binDir, "firecracker") + "\"\njailer = false\n",
			[]string{"BANGER_TEST_FIRECRACKER_DOUBLE=1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// A small cap: a guest's serial console under emulation
			// prints some 50 KB/s. (The default, 8M, passed this test
			// too, in six minutes.)
			e := newVMEnvWith(t, "console_log_max = \"1M\"\n"+tc.toml, tc.extra...)
			t.Cleanup(func() { e.run("vm", "delete", "-f", "spam") })
			e.ok("vm", "run", "-d", "--name", "spam", "--image", "bb")
			var v struct{ Dir string }
			testutilJSON(t, e.ok("vm", "show", "spam", "--json"), &v)
			log := filepath.Join(v.Dir, "console.log")
			const capBytes = 1 << 20
			spam := func(mib int, marker string) {
				e.ok("vm", "exec", "spam", "--", "sh", "-c",
					fmt.Sprintf("yes 'console spam 0123456789abcdefghijklmnopqrstuvwxyz' | head -c %d > /dev/console; echo %s > /dev/console", mib<<20, marker))
			}
			spam(1, "FIRST-HALF-DONE")
			// The daemon dies; the VM and its console copier run on.
			pid := e.daemonPID()
			syscall.Kill(pid, syscall.SIGKILL)
			for processAlive(pid) {
				time.Sleep(20 * time.Millisecond)
			}
			spam(1, "SECOND-HALF-DONE") // through a new daemon
			// The copier writes behind the guest: wait for the marker.
			deadline := time.Now().Add(2 * time.Minute)
			for {
				b, _ := os.ReadFile(log)
				if strings.Contains(string(b[max(len(b)-200, 0):]), "SECOND-HALF-DONE") || time.Now().After(deadline) {
					break
				}
				time.Sleep(200 * time.Millisecond)
			}
			for _, p := range []string{log, log + ".1"} {
				fi, err := os.Stat(p)
				if err != nil {
					t.Fatalf("after 2 MiB on the console: %v", err)
				}
				t.Logf("%s: %d bytes", filepath.Base(p), fi.Size())
				if fi.Size() > capBytes {
					t.Errorf("%s is %d bytes, over the %d cap", p, fi.Size(), capBytes)
				}
			}
			if b, _ := os.ReadFile(log); !strings.Contains(string(b), "SECOND-HALF-DONE") {
				t.Errorf("console.log does not end with what the guest printed last: ...%q", b[max(len(b)-200, 0):])
			}
			if tc.name == "firecracker-double" {
				waitFirecrackerLog(t, v.Dir)
			}
		})
	}
}

// TestIncompatibleAgent: a VM whose agent speaks a protocol version this
// daemon does not (the hostile agent's proto-99 plays one from a far newer
// or older banger) is refused agent commands with an error naming both
// versions, and is still stopped data-safely: the engine's ACPI power
// button reaches the agent, which syncs and powers off, instead of the VM
// being killed after the stop timeout.
func TestIncompatibleAgent(t *testing.T) {
	e := hostileEnv(t, "")
	t.Cleanup(func() { e.run("vm", "delete", "-f", "alien") })
	e.ok("vm", "run", "-d", "--name", "alien", "--image", "bb")
	e.ok("vm", "exec", "alien", "--", "sh", "-c", "echo precious > /root/data")
	e.setHostile("alien", "proto-99")
	// The running daemon's session predates the change: the next daemon
	// has to shake hands again.
	pid := e.daemonPID()
	syscall.Kill(pid, syscall.SIGKILL)
	for processAlive(pid) {
		time.Sleep(20 * time.Millisecond)
	}
	if r := e.run("vm", "exec", "alien", "--", "true"); r.code == 0 || !strings.Contains(r.err, "protocol version 99") {
		t.Errorf("exec on an incompatible agent: exit %d, stderr %q; want an error naming protocol version 99", r.code, r.err)
	}
	var stopped []struct{ Method string }
	testutilJSON(t, e.ok("vm", "stop", "--json", "alien"), &stopped)
	if len(stopped) != 1 || stopped[0].Method != "engine" {
		t.Errorf("vm stop of an incompatible agent: %+v, want method engine (powered off on the power button, not killed)", stopped)
	}
	if log := e.consoleTails(); !strings.Contains(log, "power button pressed") {
		t.Errorf("the agent did not see the power button; console:\n%s", log)
	}
	e.ok("vm", "start", "alien")
	if out := e.ok("vm", "exec", "alien", "--", "cat", "/root/data"); out != "precious\n" {
		t.Errorf("after the stop: /root/data = %q", out)
	}
}
