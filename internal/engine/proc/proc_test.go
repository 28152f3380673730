package proc

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bangervm/banger/errdefs"
)

func TestStartDetachedWaitKill(t *testing.T) {
	log := filepath.Join(t.TempDir(), "out.log")
	p, err := Start([]string{"/bin/sh", "-c", "echo hello; echo oops >&2; read x; exec sleep 60"}, StartOptions{Log: log})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Signal(syscall.SIGKILL)
	// Own session; stdin is /dev/null, so read returns at once and the
	// shell execs sleep.
	b, _ := os.ReadFile("/proc/" + strconv.Itoa(p.PID()) + "/stat")
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if f[3] != strconv.Itoa(p.PID()) {
		t.Errorf("session %s, want %d", f[3], p.PID())
	}
	if p.Exited() {
		t.Fatal("exited at once")
	}
	// A second handle, as after a daemon restart.
	q, err := Open(p.PID())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := q.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Wait on a live process: %v", err)
	}
	st, err := q.Stats()
	if err != nil || st.PID != p.PID() || st.RSSBytes == 0 || st.Threads != 1 {
		t.Errorf("Stats = %+v, %v", st, err)
	}
	if err := q.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer wcancel()
	if err := q.Wait(wctx); err != nil {
		t.Errorf("Wait (non-child handle): %v", err)
	}
	if err := p.Wait(wctx); err != nil {
		t.Errorf("Wait (child handle): %v", err)
	}
	if !p.Exited() || !q.Exited() {
		t.Error("not Exited after Wait")
	}
	if err := q.Signal(syscall.SIGKILL); err != nil {
		t.Errorf("Signal after exit: %v", err)
	}
	if _, err := q.Stats(); !errdefs.IsNotFound(err) {
		t.Errorf("Stats after exit: %v", err)
	}
	if _, err := Open(p.PID()); !errdefs.IsNotFound(err) {
		t.Errorf("Open after exit: %v", err)
	}
	out, _ := os.ReadFile(log)
	if string(out) != "hello\noops\n" {
		t.Errorf("log = %q", out)
	}
}

func TestStartMissingBinary(t *testing.T) {
	if _, err := Start([]string{"/nonexistent/qemu"}, StartOptions{Log: filepath.Join(t.TempDir(), "log")}); err == nil {
		t.Error("no error")
	}
}

func TestParseStat(t *testing.T) {
	line := "4242 (qemu (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 7 0 12345 1048576000 5000 18446744073709551615\n"
	s, err := parseStat([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	if s.UserTime != 2500*time.Millisecond || s.SystemTime != 750*time.Millisecond || s.Threads != 7 ||
		s.VSizeBytes != 1048576000 || s.RSSBytes != 5000*uint64(os.Getpagesize()) {
		t.Errorf("parseStat = %+v", s)
	}
	if _, err := parseStat([]byte("garbage")); err == nil {
		t.Error("garbage parsed")
	}
}

func TestFind(t *testing.T) {
	self, _ := os.Executable()
	pids, err := Find(func(argv []string) bool { return len(argv) > 0 && argv[0] == os.Args[0] })
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, p := range pids {
		found = found || p == os.Getpid()
	}
	if !found {
		t.Errorf("Find did not find this test process (%s) in %v", self, pids)
	}
}

// A pidfd handed over by another process (the root helper) is accepted
// only for the pid it claims to be.
func TestFromPidfd(t *testing.T) {
	p, err := Start([]string{"sleep", "60"}, StartOptions{Log: filepath.Join(t.TempDir(), "out.log")})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Signal(syscall.SIGKILL)
	dup := func() *os.File {
		fd, err := unix.PidfdOpen(p.PID(), 0)
		if err != nil {
			t.Fatal(err)
		}
		return os.NewFile(uintptr(fd), "pidfd")
	}
	if _, err := FromPidfd(os.Getpid(), dup()); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("pidfd of %d passed as %d's: %v", p.PID(), os.Getpid(), err)
	}
	q, err := FromPidfd(p.PID(), dup())
	if err != nil {
		t.Fatal(err)
	}
	q.Signal(syscall.SIGKILL)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := q.Wait(ctx); err != nil {
		t.Fatal(err)
	}
}
