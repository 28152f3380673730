package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bangervm/banger/internal/crashpoint"
	"github.com/bangervm/banger/internal/testutil"
)

// crashAt runs one banger command against a bangerd built with crash
// points that kills itself (SIGKILL, as kill -9) at point. The command must
// fail, the daemon log must name the point, and the daemon must be gone;
// the next command starts a normal bangerd.
func (e *env) crashAt(point string, args ...string) {
	e.t.Helper()
	e.stopDaemon()
	c := *e
	c.extra = append(append([]string{}, e.extra...), "BANGERD="+filepath.Join(binDir, "bangerd-crash"), crashpoint.Env+"="+point)
	r := c.run(args...)
	if r.code == 0 {
		e.t.Fatalf("crash at %s: banger %s succeeded: the daemon never reached the point\n%s", point, strings.Join(args, " "), r.out)
	}
	if !strings.Contains(e.daemonLog(), "crashpoint "+point+":") {
		e.t.Fatalf("crash at %s: banger %s failed otherwise: %s\ndaemon log:\n%s", point, strings.Join(args, " "), r.err, e.daemonLog())
	}
	pid := e.daemonPID()
	for processAlive(pid) {
		time.Sleep(10 * time.Millisecond)
	}
}

// vmState returns the VM's state and reason as vm show prints them.
func (e *env) vmState(name string) (state, reason string) {
	e.t.Helper()
	var v struct{ State, Reason string }
	testutilJSON(e.t, e.ok("vm", "show", name, "--json"), &v)
	return v.State, v.Reason
}

// TestCrashRecovery kills bangerd at each step of create, start and stop
// and checks that the next daemon leaves the VM usable: an unfinished
// create is rolled back (no record, directory or engine process; the name
// is free again), and a VM whose start or stop was cut short starts, runs
// commands, stops and is deleted, with never more than one engine process
// and none after delete.
func TestCrashRecovery(t *testing.T) {
	e := newVMEnvWith(t, "")
	t.Run("create", func(t *testing.T) {
		e.t = t
		for _, point := range []string{"create.recorded", "create.disk", "start.net", "start.engine", "start.agent"} {
			e.crashAt(point, "vm", "create", "--name", "half", "--image", "bb")
			if r := e.run("vm", "show", "half"); r.code == 0 {
				t.Errorf("%s: the unfinished create is still listed after a restart: %s", point, r.out)
			}
			if n := e.vmLeftovers(); n != 0 {
				t.Errorf("%s: %d leftovers (records, directories, QEMU processes) after the restart", point, n)
			}
		}
		// The name is free, and a VM made under it works.
		e.ok("vm", "run", "-d", "--name", "half", "--image", "bb")
		if out := e.ok("vm", "exec", "half", "--", "echo", "ok"); out != "ok\n" {
			t.Errorf("exec after the rolled-back creates: %q", out)
		}
		e.ok("vm", "delete", "-f", "half")
	})

	e.ok("vm", "create", "--name", "crs", "--image", "bb", "--no-start")
	defer e.run("vm", "delete", "-f", "crs")
	usable := func(t *testing.T, point string) {
		t.Helper()
		if n := e.qemuProcesses(); n > 1 {
			t.Fatalf("%s: %d QEMU processes for one VM", point, n)
		}
		e.ok("vm", "start", "crs")
		if n := e.qemuProcesses(); n != 1 {
			t.Fatalf("%s: %d QEMU processes after start, want 1", point, n)
		}
		if out := e.ok("vm", "exec", "crs", "--", "sh", "-c", "echo "+point+" >> /root/log; cat /root/log | wc -l"); strings.TrimSpace(out) == "" {
			t.Errorf("%s: exec printed nothing", point)
		}
	}
	t.Run("start", func(t *testing.T) {
		e.t = t
		for _, point := range []string{"start.intent", "start.net", "start.engine", "start.agent"} {
			e.crashAt(point, "vm", "start", "crs")
			usable(t, point)
			if out := e.ok("vm", "stop", "crs"); !strings.Contains(out, "synced") {
				t.Errorf("%s: stop: %q", point, out)
			}
			if n := e.qemuProcesses(); n != 0 {
				t.Errorf("%s: %d QEMU processes after stop", point, n)
			}
		}
	})
	t.Run("stop", func(t *testing.T) {
		e.t = t
		e.ok("vm", "start", "crs")
		for _, point := range []string{"stop.intent", "stop.agent", "stop.exited"} {
			e.crashAt(point, "vm", "stop", "crs")
			usable(t, point)
		}
	})
	e.t = t
	if out := e.ok("vm", "exec", "crs", "--", "cat", "/root/log"); strings.Count(out, "\n") != 7 {
		t.Errorf("the VM's disk lost writes across the crashes: %q", out)
	}
	e.ok("vm", "delete", "-f", "crs")
	if n := e.vmLeftovers(); n != 0 {
		t.Errorf("%d leftovers after delete", n)
	}
}

// TestConcurrentAfterRestart: right after a daemon restart, commands
// against one VM at once all work: they share one agent session instead
// of racing for the engine's single agent channel.
func TestConcurrentAfterRestart(t *testing.T) {
	e := sharedVMEnv(t)
	e.ok("vm", "run", "-d", "--name", "busy", "--image", e.image)
	defer e.run("vm", "delete", "-f", "busy")
	for round := 0; round < 2; round++ {
		pid := e.daemonPID()
		syscall.Kill(pid, syscall.SIGKILL)
		for processAlive(pid) {
			time.Sleep(10 * time.Millisecond)
		}
		var wg sync.WaitGroup
		res := make([]result, 4)
		for i := range res {
			wg.Add(1)
			go func() {
				defer wg.Done()
				res[i] = e.run("vm", "exec", "busy", "--", "echo", fmt.Sprint(i))
			}()
		}
		wg.Wait()
		for i, r := range res {
			if r.code != 0 || r.out != fmt.Sprintf("%d\n", i) {
				t.Errorf("round %d exec %d: exit %d out %q err %q", round, i, r.code, r.out, r.err)
			}
		}
	}
}

// shownVM is what the disk-full test reads of vm show.
type shownVM struct {
	State, Reason string
	PID           int
}

func (e *env) show(name string) shownVM {
	e.t.Helper()
	var v shownVM
	if err := json.Unmarshal([]byte(e.ok("vm", "show", name, "--json")), &v); err != nil {
		e.t.Fatal(err)
	}
	return v
}

// nsRun runs argv inside the mount namespace of process pid.
func nsRun(t *testing.T, pid int, argv ...string) string {
	t.Helper()
	out, err := execOut("nsenter", append([]string{"-t", fmt.Sprint(pid), "-m", "--"}, argv...)...)
	if err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(argv, " "), err, out)
	}
	return out
}

// TestDiskFull: banger's state directory is a small file system (a tmpfs
// in a mount namespace of the test's own) that fills while the guest
// writes. QEMU pauses the guest rather than failing its write; vm show and
// vm list say paused and why; vm start resumes it once space is freed and
// the write completes; on a paused VM kill, stop (synced once space is
// freed, else killed) and delete work.
func TestDiskFull(t *testing.T) {
	shared := sharedVMEnv(t)
	requireRootE2E(t)
	var k struct{ Vmlinux, Initrd string }
	testutilJSON(t, shared.ok("kernel", "show", "debian-cloud", "--json"), &k)

	e := newEnv(t)
	holder := startMountNS(t)
	state := filepath.Join(e.home, "state")
	if err := os.MkdirAll(state, 0o700); err != nil {
		t.Fatal(err)
	}
	nsRun(t, holder, "mount", "-t", "tmpfs", "-o", "size=1g,mode=0700", "banger-diskfull", state)
	e.wrap = []string{"nsenter", "-t", fmt.Sprint(holder), "-m", "--"}
	e.ok("kernel", "import", k.Vmlinux, "--initrd", k.Initrd, "--name", "debian-cloud")
	// Pulled, not registered: a pull writes a sparse image, a register
	// copies every byte of the 1 GiB file.
	reg := testutil.NewRegistry(t)
	e.ok("image", "pull", reg.Push(t, testutil.BusyboxImage(t), "test/busybox:1"), "--name", "bb", "--kernel", "debian-cloud")
	e.ok("vm", "run", "-d", "--name", "full", "--image", "bb")
	defer e.run("vm", "delete", "-f", "full")

	// resize makes the state file system free bytes larger than now.
	resize := func(free int64) {
		used := strings.TrimSpace(nsRun(t, holder, "sh", "-c", "df -B1 --output=used "+state+" | tail -1"))
		var n int64
		fmt.Sscan(used, &n)
		nsRun(t, holder, "mount", "-o", fmt.Sprintf("remount,size=%d", n+free), state)
	}
	// fill has the guest write 48 MiB with 4 MiB free on the host and
	// waits until the VM shows paused; the exec returns its result.
	fill := func(round int) <-chan result {
		resize(4 << 20)
		done := make(chan result, 1)
		go func() {
			done <- e.run("vm", "exec", "full", "--", "sh", "-c", fmt.Sprintf("dd if=/dev/zero of=/root/big%d bs=1M count=48 conv=fsync 2>&1 && echo wrote", round))
		}()
		deadline := time.Now().Add(3 * time.Minute)
		for {
			v := e.show("full")
			if time.Now().After(deadline) {
				t.Fatalf("no pause within 3 minutes of filling the disk: %+v", v)
			}
			if v.State == "paused" {
				if !strings.Contains(v.Reason, "no space left") {
					t.Errorf("paused reason %q does not say the host is out of space", v.Reason)
				}
				break
			}
			select {
			case r := <-done:
				t.Fatalf("the guest's write ended without a pause: %+v (state %s)", r, v.State)
			case <-time.After(200 * time.Millisecond):
			}
		}
		if out := e.ok("vm", "list"); !strings.Contains(out, "paused") || !strings.Contains(out, "no space left") {
			t.Errorf("vm list does not show the pause: %s", out)
		}
		return done
	}

	// Round 1: space is freed, vm start resumes, the write completes.
	done := fill(1)
	if r := e.run("vm", "exec", "full", "--", "true"); r.code == 0 || !strings.Contains(r.err, "paused") {
		t.Errorf("exec on a paused VM: exit %d %q, want an error saying it is paused", r.code, r.err)
	}
	resize(256 << 20)
	e.ok("vm", "start", "full")
	if r := <-done; r.code != 0 || !strings.Contains(r.out, "wrote") {
		t.Errorf("the write did not complete after resume: %+v", r)
	}
	if v := e.show("full"); v.State != "running" {
		t.Errorf("after resume: %+v", v)
	}

	// Round 2: kill on a paused VM.
	done = fill(2)
	e.ok("vm", "kill", "full")
	<-done
	if v := e.show("full"); v.State != "stopped" || e.qemuProcesses() != 0 {
		t.Errorf("after kill: %+v, %d QEMU processes", v, e.qemuProcesses())
	}

	// Round 3: space is freed, then vm stop resumes the guest and stops it
	// with its data synced.
	resize(256 << 20)
	e.ok("vm", "start", "full")
	done = fill(3)
	resize(256 << 20)
	if out := e.ok("vm", "stop", "full"); !strings.Contains(out, "synced") {
		t.Errorf("stop of a paused VM after space was freed: %q, want a synced stop", out)
	}
	<-done

	// Round 4: stop on a paused VM whose disk is still full kills it;
	// delete works with the disk still full.
	e.ok("vm", "start", "full")
	done = fill(4)
	if out := e.ok("vm", "stop", "full"); !strings.Contains(out, "paused") {
		t.Errorf("stop of a paused VM: %q, want it to say the guest was paused", out)
	}
	<-done
	e.ok("vm", "delete", "full")
	if n := e.vmLeftovers(); n != 0 {
		t.Errorf("%d leftovers after delete", n)
	}
	if out := nsRun(t, holder, "ls", "-A", filepath.Join(state, "vms")); out != "" {
		t.Errorf("VM directories left after delete: %q", out)
	}
}

// requireRootE2E: mounting the small file system needs root.
func requireRootE2E(t *testing.T) {
	t.Helper()
	testutil.RequireRoot(t)
	testutil.RequireTool(t, "nsenter", "util-linux")
	testutil.RequireTool(t, "unshare", "util-linux")
}

// startMountNS starts a process in a private mount namespace of its own
// and returns its pid; mounts made there (nsRun) are seen only by it and
// by what banger commands wrapped in nsenter start, the daemon and its
// VMs included. The namespace goes when the last of them exits.
func startMountNS(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("unshare", "-m", "--propagation", "private", "sleep", "infinity")
	if err := cmd.Start(); err != nil {
		t.Fatalf("unshare: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	// unshare execs sleep once the namespace exists.
	self, _ := os.Readlink("/proc/self/ns/mnt")
	for {
		if ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", cmd.Process.Pid)); err == nil && ns != self {
			if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", cmd.Process.Pid)); strings.TrimSpace(string(comm)) == "sleep" {
				return cmd.Process.Pid
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func execOut(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}
