package install

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/consolelog"
	"github.com/bangervm/banger/internal/engine/proc"
	"github.com/bangervm/banger/internal/store"
	"github.com/bangervm/banger/internal/testutil"
)

// fakeEngineEnv makes this test binary stand for an engine process: it
// prints a line and runs until killed.
const fakeEngineEnv = "BANGER_TEST_FAKE_ENGINE"

func TestMain(m *testing.M) {
	if os.Getenv(fakeEngineEnv) == "1" {
		fmt.Println("fake engine up")
		for {
			time.Sleep(time.Hour)
		}
	}
	os.Exit(m.Run())
}

// startFakeQEMU starts, as the daemon starts QEMU (proc.Start: its own
// session, its output through a console-log copier that outlives the
// caller), a process the QEMU engine recognises as the engine of a VM
// directory: this test binary named qemu-system-x86_64 with the
// directory's QMP socket in its argv, recorded in the directory's
// engine.json and pidfile.
func startFakeQEMU(t *testing.T, dir string) *proc.Process {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "qemu-system-x86_64")
	if err := os.Symlink(self, bin); err != nil {
		t.Fatal(err)
	}
	qmp, pidFile := filepath.Join(dir, "qmp.sock"), filepath.Join(dir, "qemu.pid")
	p, err := proc.Start([]string{bin, "-qmp", "unix:" + qmp + ",server=on,wait=off"}, proc.StartOptions{
		Dir: dir, Log: filepath.Join(dir, "qemu.log"), Console: filepath.Join(dir, "console.log"),
		Env: append(os.Environ(), fakeEngineEnv+"=1"),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Signal(syscall.SIGKILL) })
	st, _ := json.Marshal(map[string]string{"engine": "qemu", "id": filepath.Base(dir), "pidFile": pidFile, "qmpSocket": qmp})
	if err := os.WriteFile(filepath.Join(dir, "engine.json"), st, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(p.PID())), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// copiers returns the console-log copiers writing into dir.
func copiers(t *testing.T, dir string) []int {
	t.Helper()
	pids, err := proc.Find(func(argv []string) bool {
		return len(argv) > 1 && argv[0] == consolelog.CopierName && strings.HasPrefix(argv[1], dir+"/")
	})
	if err != nil {
		t.Fatal(err)
	}
	return pids
}

// With the daemon down (its socket gone: stopped, crashed or masked),
// uninstall still finds the VM whose engine process outlived it, in the
// owner's VM directories: it refuses, naming the VM and the fix. With
// --force it starts the daemon unit to stop the VM cleanly, and when that
// fails too (a masked unit), stops the engine itself and says so: then
// neither the engine nor its console-log copier runs.
func TestStopVMsWithDaemonDown(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	state := filepath.Join(root, "state")
	dir := filepath.Join(state, "vms", "k1")
	engineProc := startFakeQEMU(t, dir)
	// Stopped, with no engine: not running, not refused.
	os.MkdirAll(filepath.Join(state, "vms", "s1"), 0o700)
	// A directory whose engine state cannot be read: whether it runs is
	// unknown, which only --force goes past.
	bad := filepath.Join(state, "vms", "b1")
	os.MkdirAll(bad, 0o700)
	os.WriteFile(filepath.Join(bad, "engine.json"), []byte("{"), 0o600)
	db, err := store.Open(ctx, filepath.Join(state, "banger.db"))
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []store.VM{
		{ID: "k1", Name: "keep", Engine: "qemu", State: api.VMRunning, Dir: dir, CreatedAt: time.Now()},
		{ID: "s1", Name: "idle", Engine: "qemu", State: api.VMStopped, Dir: filepath.Join(state, "vms", "s1"), CreatedAt: time.Now()},
	} {
		if err := db.PutVM(ctx, v); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()
	if len(copiers(t, dir)) == 0 {
		t.Fatal("no console-log copier runs for the fake engine")
	}

	r := testRecord()
	r.Paths.DaemonRuntime = filepath.Join(root, "run")   // no daemon listens
	sd := &recorder{failAt: "restart " + HelperUnitName} // the units cannot start
	var log bytes.Buffer
	o := StopVMsOptions{Record: r, Systemd: sd, Daemon: DaemonClient(r), Engines: LocalEngines(state), Log: &log, Timeout: time.Second}

	err = StopVMs(ctx, o)
	if !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "keep") || strings.Contains(err.Error(), "idle") || !strings.Contains(err.Error(), "--force") || !strings.Contains(err.Error(), "b1") {
		t.Fatalf("without --force: %v; want a refusal naming keep (not idle), b1's unreadable state and --force", err)
	}
	if engineProc.Exited() || len(sd.calls) != 0 {
		t.Fatalf("refusing stopped the engine (exited %v) or touched the units (%v)", engineProc.Exited(), sd.calls)
	}

	o.Force = true
	if err := StopVMs(ctx, o); err != nil {
		t.Fatalf("with --force: %v\n%s", err, log.String())
	}
	if !slices.Contains(sd.calls, "restart "+HelperUnitName) {
		t.Errorf("--force did not try to start the units first: %v", sd.calls)
	}
	if !strings.Contains(log.String(), "could not start") || !strings.Contains(log.String(), "directly") || !strings.Contains(log.String(), "going on") {
		t.Errorf("--force does not say it stopped the engines itself, and went past b1: %q", log.String())
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := engineProc.Wait(wctx); err != nil {
		t.Fatalf("the engine still runs after --force: %v", err)
	}
	if pids := copiers(t, dir); len(pids) > 0 {
		t.Errorf("console-log copiers %v still run after --force", pids)
	}
	o.Force = false
	if err := StopVMs(ctx, o); !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "looking for VMs") {
		t.Errorf("only b1 unreadable, without --force: %v; want a refusal saying looking failed", err)
	}
	os.RemoveAll(bad)
	if err := StopVMs(ctx, o); err != nil {
		t.Errorf("nothing left running, without --force: %v", err)
	}
}

// OwnerEngines runs the command as the owner, with the owner's state
// directory, and escapes what it reads back (the names come from the
// owner's files and are printed on root's terminal).
func TestOwnerEngines(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	for d := dir; d != os.TempDir(); d = filepath.Dir(d) {
		os.Chmod(d, 0o755) // the owner runs the command from here
	}
	self := filepath.Join(dir, "banger")
	script := "#!/bin/sh\nprintf '[{\"id\":\"k1\",\"name\":\"%s\\\\u001b[2J\",\"pid\":7}]' \"$(id -u):$(id -g) $*\"\n"
	if err := os.WriteFile(self, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	r := testRecord()
	r.Owner.UID, r.Owner.GID, r.Owner.Home = 65534, 65534, "/nonexistent"
	state := r.Owner.Layout(r.Paths).State
	vms, err := OwnerEngines(self, r)(context.Background(), true)
	want := "65534:65534 system " + OwnerEnginesCommand + " --state " + state + " --stop\\x1b[2J"
	if err != nil || len(vms) != 1 || vms[0].Name != want || vms[0].PID != 7 {
		t.Fatalf("OwnerEngines = %+v, %v; want one VM named %q", vms, err, want)
	}
}
