// Package enginetest is the conformance suite every engine.Engine runs: it
// boots real guests (or whatever the engine under test boots) and checks the
// contract of package engine — agent channel, graceful and forced stops,
// re-attach after a daemon restart, clean failure.
//
// An engine's test calls Run with a constructor and fixtures:
//
//	func TestConformance(t *testing.T) {
//		enginetest.Run(t, func(t *testing.T) engine.Engine { return qemu.New(qemu.Config{}) },
//			enginetest.DebianFixtures(t))
//	}
//
// The fixture guest answers "PING x" with "PONG x" on the agent channel and
// powers off on "QUIT" or on the ACPI power button.
package enginetest

import (
	"bufio"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/engine"
	"github.com/bangervm/banger/internal/engine/proc"
)

// Fixtures is the guest the suite boots.
type Fixtures struct {
	Kernel string // vmlinux or bzImage
	Initrd string // initramfs whose /init runs the fixture agent
	// Cmdline is extra kernel arguments.
	Cmdline string
	// MemoryMiB is the guest memory; 0 means 256.
	MemoryMiB int
	// PowerButton: the guest powers off on the ACPI power button, so
	// Shutdown must end without force.
	PowerButton bool
	// IgnoreButtonCmdline, when set, is a kernel argument that makes the
	// guest ignore the power button; the suite then checks that Shutdown
	// falls back to force at its deadline.
	IgnoreButtonCmdline string
	// BootTimeout bounds boot to agent reply; 0 means 60 s.
	BootTimeout time.Duration
}

// maxVMs bounds the VMs the suite runs at once (TCG on 2 cores).
const maxVMs = 2

// Run runs the conformance suite. newEngine is called once per simulated
// daemon lifetime, so Attach is tested on a fresh value.
func Run(t *testing.T, newEngine func(t *testing.T) engine.Engine, fx Fixtures) {
	if fx.MemoryMiB == 0 {
		fx.MemoryMiB = 256
	}
	if fx.BootTimeout == 0 {
		fx.BootTimeout = 60 * time.Second
	}
	s := &suite{fx: fx, newEngine: newEngine, slots: make(chan struct{}, maxVMs)}

	t.Run("Features", s.testFeatures)
	t.Run("StartMissingKernel", s.testStartMissingKernel)
	t.Run("AttachNothing", s.testAttachNothing)
	t.Run("VMs", func(t *testing.T) {
		t.Run("BootAgentShutdown", func(t *testing.T) { t.Parallel(); s.testBootAgentShutdown(t) })
		t.Run("AttachAfterRestart", func(t *testing.T) { t.Parallel(); s.testAttachAfterRestart(t) })
		if fx.IgnoreButtonCmdline != "" {
			t.Run("ShutdownForced", func(t *testing.T) { t.Parallel(); s.testShutdownForced(t) })
		}
	})
	t.Run("KillAndAttachAfterRestart", s.testKill)
	if _, ok := newEngine(t).(engine.Templater); ok {
		t.Run("Template", s.testTemplate)
	}
}

type suite struct {
	fx        Fixtures
	newEngine func(t *testing.T) engine.Engine
	slots     chan struct{}
	n         atomic.Int32
}

// spec returns a Spec for a fresh VM directory. The directory is short
// (under os.TempDir) so socket paths fit, and removed after the test.
func (s *suite) spec(t *testing.T) engine.Spec {
	dir, err := os.MkdirTemp("", "bvm")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	id := fmt.Sprintf("enginetest-%d", s.n.Add(1))
	return engine.Spec{
		ID: id, Dir: dir, VCPU: 1, MemoryMiB: s.fx.MemoryMiB,
		Kernel: s.fx.Kernel, Initrd: s.fx.Initrd, Cmdline: s.fx.Cmdline,
	}
}

// start boots a VM, holding one of maxVMs slots until it is gone, and makes
// sure it is killed when the test ends.
func (s *suite) start(t *testing.T, e engine.Engine, spec engine.Spec) engine.Instance {
	t.Helper()
	s.slots <- struct{}{}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	inst, err := e.Start(ctx, spec)
	if err != nil {
		<-s.slots
		t.Fatalf("Start: %v", err)
	}
	s.release(t, inst)
	return inst
}

// release kills inst when the test ends and frees its slot.
func (s *suite) release(t *testing.T, inst engine.Instance) {
	t.Cleanup(func() {
		defer func() { <-s.slots }()
		inst.Kill()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := inst.Wait(ctx); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		if t.Failed() {
			logConsole(t, inst)
		}
	})
}

func logConsole(t *testing.T, inst engine.Instance) {
	if cl, ok := inst.(engine.ConsoleLogger); ok {
		b, _ := os.ReadFile(cl.ConsoleLog())
		t.Logf("console log %s:\n%s", cl.ConsoleLog(), b)
	}
}

func (s *suite) testFeatures(t *testing.T) {
	f, err := s.newEngine(t).Features(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if f.Accel != engine.AccelKVM && f.Accel != engine.AccelTCG {
		t.Errorf("Accel = %q", f.Accel)
	}
	if f.AccelReason == "" {
		t.Error("no AccelReason")
	}
	want := engine.AgentSerial
	if f.HasVsock {
		want = engine.AgentVsock
	}
	if f.AgentTransport != want {
		t.Errorf("AgentTransport = %q with HasVsock %v", f.AgentTransport, f.HasVsock)
	}
	t.Logf("features: %+v", f)
}

func (s *suite) testStartMissingKernel(t *testing.T) {
	e := s.newEngine(t)
	spec := s.spec(t)
	spec.Kernel = filepath.Join(spec.Dir, "no-such-vmlinux")
	inst, err := e.Start(context.Background(), spec)
	if err == nil {
		inst.Kill()
		t.Fatal("Start with a missing kernel succeeded")
	}
	t.Logf("Start: %v", err)
	AssertNoProcess(t, spec.Dir)
	if _, err := e.Attach(context.Background(), spec); !errdefs.IsNotFound(err) {
		t.Errorf("Attach after a failed Start: %v, want NotFound", err)
	}
}

func (s *suite) testAttachNothing(t *testing.T) {
	spec := s.spec(t)
	if _, err := s.newEngine(t).Attach(context.Background(), spec); !errdefs.IsNotFound(err) {
		t.Errorf("Attach on an empty directory: %v, want NotFound", err)
	}
}

// testBootAgentShutdown boots, checks the process and the agent channel,
// then stops the VM gracefully.
func (s *suite) testBootAgentShutdown(t *testing.T) {
	e := s.newEngine(t)
	spec := s.spec(t)
	begin := time.Now()
	inst := s.start(t, e, spec)
	t.Logf("Start returned after %v", time.Since(begin).Round(time.Millisecond))
	ctx := context.Background()

	assertDetached(t, inst.PID())
	if st, err := inst.Status(ctx); err != nil || st != engine.StateRunning {
		t.Errorf("Status = %q, %v; want running", st, err)
	}
	conn := s.agent(t, inst)
	t.Logf("agent answered %v after Start", time.Since(begin).Round(time.Millisecond))
	if _, err := inst.DialAgent(ctx); !errdefs.IsUnavailable(err) {
		t.Errorf("second DialAgent while one is open: %v, want Unavailable", err)
	}
	conn.Close()
	// The slot is free again once the first connection is closed.
	conn = s.agent(t, inst)
	conn.Close()
	if !t.Failed() {
		assertConsoleMarker(t, inst)
	}

	st, err := inst.Stats(ctx)
	if err != nil {
		t.Errorf("Stats: %v", err)
	} else if st.PID != inst.PID() || st.RSSBytes == 0 || st.CPUTime() < 0 || st.Threads < 1 {
		t.Errorf("Stats = %+v", st)
	}

	timeout := 20 * time.Second
	if !s.fx.PowerButton {
		timeout = 3 * time.Second
	}
	sctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	begin = time.Now()
	err = inst.Shutdown(sctx)
	t.Logf("Shutdown took %v: %v", time.Since(begin).Round(time.Millisecond), err)
	switch {
	case s.fx.PowerButton && err != nil:
		t.Errorf("Shutdown of a guest that honours the power button: %v", err)
	case !s.fx.PowerButton && !errors.Is(err, engine.ErrForced):
		t.Errorf("Shutdown of a guest that ignores the power button: %v, want ErrForced", err)
	}
	s.assertGone(t, inst, spec)
}

// testAttachAfterRestart starts a VM with one Engine value and finds it with
// another, as a restarted daemon would, then stops it through the new handle.
func (s *suite) testAttachAfterRestart(t *testing.T) {
	spec := s.spec(t)
	first := s.start(t, s.newEngine(t), spec)
	s.agent(t, first).Close()

	restarted := s.newEngine(t)
	ctx := context.Background()
	inst, err := restarted.Attach(ctx, engine.Spec{ID: spec.ID, Dir: spec.Dir})
	if err != nil {
		t.Fatalf("Attach: %v", err)
	}
	if inst.PID() != first.PID() {
		t.Fatalf("Attach found pid %d, Start had %d", inst.PID(), first.PID())
	}
	if st, err := inst.Status(ctx); err != nil || st != engine.StateRunning {
		t.Errorf("Status after Attach = %q, %v", st, err)
	}
	if _, err := inst.Stats(ctx); err != nil {
		t.Errorf("Stats after Attach: %v", err)
	}
	s.agent(t, inst).Close()

	sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := inst.Shutdown(sctx); err != nil && !(errors.Is(err, engine.ErrForced) && !s.fx.PowerButton) {
		t.Errorf("Shutdown after Attach: %v", err)
	}
	s.assertGone(t, inst, spec)
	if _, err := restarted.Attach(ctx, spec); !errdefs.IsNotFound(err) {
		t.Errorf("Attach after the VM stopped: %v, want NotFound", err)
	}

	// Start again in the same directory (vm stop; vm start). Stale handles
	// of the first run must not disturb the second.
	again := s.start(t, restarted, spec)
	if err := first.Wait(ctx); err != nil {
		t.Errorf("Wait on a stale handle: %v", err)
	}
	if st, err := first.Status(ctx); err != nil || st != engine.StateExited {
		t.Errorf("Status of a stale handle = %q, %v", st, err)
	}
	s.agent(t, again).Close()
	found, err := s.newEngine(t).Attach(ctx, spec)
	if err != nil || found.PID() != again.PID() {
		t.Fatalf("Attach after a restart in the same directory: %v", err)
	}
	if err := found.Kill(); err != nil {
		t.Errorf("Kill: %v", err)
	}
	s.assertGone(t, again, spec)
}

// testShutdownForced boots a guest that ignores the power button: Shutdown
// must stop it anyway once its deadline passes, and say so.
func (s *suite) testShutdownForced(t *testing.T) {
	spec := s.spec(t)
	spec.Cmdline = strings.TrimSpace(spec.Cmdline + " " + s.fx.IgnoreButtonCmdline)
	inst := s.start(t, s.newEngine(t), spec)
	s.agent(t, inst).Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	begin := time.Now()
	err := inst.Shutdown(ctx)
	t.Logf("Shutdown took %v: %v", time.Since(begin).Round(time.Millisecond), err)
	if !errors.Is(err, engine.ErrForced) {
		t.Errorf("Shutdown of a guest ignoring the power button: %v, want ErrForced", err)
	}
	s.assertGone(t, inst, spec)
}

// testKill kills a VM through an attached handle.
func (s *suite) testKill(t *testing.T) {
	spec := s.spec(t)
	first := s.start(t, s.newEngine(t), spec)
	inst, err := s.newEngine(t).Attach(context.Background(), spec)
	if err != nil {
		t.Fatalf("Attach: %v", err)
	}
	if inst.PID() != first.PID() {
		t.Fatalf("Attach found pid %d, Start had %d", inst.PID(), first.PID())
	}
	if err := inst.Kill(); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	s.assertGone(t, inst, spec)
	// Both handles see the end.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := first.Wait(ctx); err != nil {
		t.Errorf("Wait on the original handle: %v", err)
	}
}

// agent dials the agent channel and handshakes: PING until PONG.
func (s *suite) agent(t *testing.T, inst engine.Instance) net.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), s.fx.BootTimeout)
	defer cancel()
	conn, err := inst.DialAgent(ctx)
	if err != nil {
		t.Fatalf("DialAgent: %v", err)
	}
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(conn)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			case <-ctx.Done():
				return
			}
		}
	}()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	sent := map[string]bool{}
	for n := 0; ; n++ {
		tok := "t" + strconv.Itoa(n)
		if _, err := fmt.Fprintf(conn, "PING %s\n", tok); err != nil {
			conn.Close()
			t.Fatalf("agent write: %v", err)
		}
		sent[tok] = true
	wait:
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					conn.Close()
					t.Fatalf("agent channel closed before a PONG")
				}
				if tok, ok := strings.CutPrefix(l, "PONG "); ok && sent[tok] {
					// Stop the reader: the caller gets the conn clean.
					conn.SetReadDeadline(time.Now())
					cancel()
					for range lines {
					}
					conn.SetReadDeadline(time.Time{})
					return conn
				}
			case <-tick.C:
				break wait
			case <-ctx.Done():
				conn.Close()
				t.Fatalf("no PONG from the guest agent within %v", s.fx.BootTimeout)
			}
		}
	}
}

// assertGone waits for the instance to end and checks that it says so.
func (s *suite) assertGone(t *testing.T, inst engine.Instance, spec engine.Spec) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := inst.Wait(ctx); err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if st, err := inst.Status(ctx); err != nil || st != engine.StateExited {
		t.Errorf("Status after exit = %q, %v", st, err)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d/cmdline", inst.PID())); err == nil {
		if argv, _ := proc.Cmdline(inst.PID()); strings.Contains(strings.Join(argv, " "), spec.Dir) {
			t.Errorf("process %d still exists: %q", inst.PID(), argv)
		}
	}
	AssertNoProcess(t, spec.Dir)
}

// AssertNoProcess checks that no live process mentions dir in its argv.
// Helpers of the engine process (its console log copier) end once it and
// its children have closed their output: they get a few seconds to.
func AssertNoProcess(t *testing.T, dir string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		pids, err := proc.Find(func(argv []string) bool { return strings.Contains(strings.Join(argv, " "), dir+"/") })
		if err != nil {
			t.Fatal(err)
		}
		var left []int
		for _, pid := range pids {
			if pid != os.Getpid() {
				left = append(left, pid)
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			for _, pid := range left {
				argv, _ := proc.Cmdline(pid)
				t.Errorf("process %d left behind: %q", pid, argv)
			}
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// assertDetached checks the engine process leads its own session, so a
// signal to the daemon's session or process group does not reach it.
func assertDetached(t *testing.T, pid int) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatalf("read stat: %v", err)
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	// f[0] is field 3 (state); session is field 6.
	if sid, _ := strconv.Atoi(f[3]); sid != pid {
		t.Errorf("engine process %d is in session %d, want its own", pid, sid)
	}
}

// assertConsoleMarker checks, where the console is a file, that the
// guest's userspace printed its ready marker there.
func assertConsoleMarker(t *testing.T, inst engine.Instance) {
	t.Helper()
	cl, ok := inst.(engine.ConsoleLogger)
	if !ok {
		return
	}
	b, err := os.ReadFile(cl.ConsoleLog())
	if err != nil {
		t.Errorf("console log: %v", err)
		return
	}
	if !strings.Contains(string(b), ReadyMarker) {
		t.Errorf("console log has no %s:\n%s", ReadyMarker, b)
	}
}

// testTemplate saves a booted guest as a template and starts two clones of
// it at once: each answers on its agent channel, the template's files are
// unchanged by them, and a template whose state is garbage fails with
// ErrBadTemplate and leaves no process.
func (s *suite) testTemplate(t *testing.T) {
	e := s.newEngine(t)
	tp := e.(engine.Templater)
	ctx := context.Background()
	dir := t.TempDir()

	spec := s.spec(t)
	s.slots <- struct{}{}
	inst, err := tp.StartTemplate(ctx, spec, dir)
	if err != nil {
		<-s.slots
		t.Fatalf("StartTemplate: %v", err)
	}
	s.agent(t, inst).Close()
	err = tp.SaveTemplate(ctx, inst, dir)
	<-s.slots
	if err != nil {
		logConsole(t, inst)
		t.Fatalf("SaveTemplate: %v", err)
	}
	if !inst.Exited() {
		t.Errorf("the template's process still runs after SaveTemplate")
	}
	before := hashDir(t, dir)

	clones := make([]engine.Instance, 2)
	for i := range clones {
		clones[i] = s.startClone(t, tp, s.spec(t), dir)
	}
	for i, c := range clones {
		s.agent(t, c).Close()
		if st, err := c.Status(ctx); err != nil || st != engine.StateRunning {
			t.Errorf("clone %d: Status = %q, %v; want running", i, st, err)
		}
	}
	for _, c := range clones {
		c.Kill()
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		c.Wait(wctx)
		cancel()
	}
	if after := hashDir(t, dir); after != before {
		t.Errorf("the template's files changed while clones ran:\nbefore %s\nafter  %s", before, after)
	}

	entries, _ := os.ReadDir(dir)
	for _, en := range entries {
		if fi, err := en.Info(); err == nil && fi.Size() < 1<<20 {
			// The device state: replace it with garbage.
			os.WriteFile(filepath.Join(dir, en.Name()), []byte("not a template"), 0o600)
		}
	}
	bad := s.spec(t)
	if c, err := tp.StartClone(ctx, bad, dir); !errors.Is(err, engine.ErrBadTemplate) {
		if c != nil {
			c.Kill()
		}
		t.Fatalf("StartClone of a corrupt template: %v, want ErrBadTemplate", err)
	}
	AssertNoProcess(t, bad.Dir)
}

func (s *suite) startClone(t *testing.T, tp engine.Templater, spec engine.Spec, dir string) engine.Instance {
	t.Helper()
	s.slots <- struct{}{}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	inst, err := tp.StartClone(ctx, spec, dir)
	if err != nil {
		<-s.slots
		t.Fatalf("StartClone: %v", err)
	}
	s.release(t, inst)
	return inst
}

// hashDir returns the names and SHA-256 of the regular files in dir.
func hashDir(t *testing.T, dir string) string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, en := range entries {
		f, err := os.Open(filepath.Join(dir, en.Name()))
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		_, err = io.Copy(h, f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s=%x ", en.Name(), h.Sum(nil)[:8])
	}
	return b.String()
}
