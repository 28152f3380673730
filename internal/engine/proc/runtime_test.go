package proc

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/bangervm/banger/errdefs"
)

// sleeper starts a process that runs until killed, with tag in its argv
// for good (the shell does not exec its last command: it loops).
func sleeper(t *testing.T, tag string) *Process {
	t.Helper()
	p, err := Start([]string{"/bin/sh", "-c", "while :; do sleep 1; done", tag}, StartOptions{Log: filepath.Join(t.TempDir(), "log")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Signal(9); p.Wait(context.Background()) })
	return p
}

func TestRuntimeWaitCleansUpOnlyItsOwnFiles(t *testing.T) {
	dir := t.TempDir()
	pidFile, sock, jail := filepath.Join(dir, "x.pid"), filepath.Join(dir, "x.sock"), filepath.Join(dir, "jail")
	os.WriteFile(sock, nil, 0o600)
	os.MkdirAll(filepath.Join(jail, "root"), 0o755)

	// A stale handle: the pidfile names another process (the VM was
	// started again), so nothing may be removed.
	stale := &Runtime{ID: "vm1", P: sleeper(t, "stale"), PIDFile: pidFile, Files: []string{sock, ""}, Dirs: []string{jail}}
	other := sleeper(t, "other")
	os.WriteFile(pidFile, []byte(strconv.Itoa(other.PID())+"\n"), 0o600)
	if err := stale.Kill(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := stale.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{pidFile, sock, jail} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("stale handle removed %s", p)
		}
	}

	r := &Runtime{ID: "vm1", P: other, PIDFile: pidFile, Files: []string{sock}, Dirs: []string{jail}}
	if r.PID() != other.PID() {
		t.Errorf("PID %d, want %d", r.PID(), other.PID())
	}
	if st, err := r.Stats(ctx); err != nil || st.PID != other.PID() {
		t.Errorf("Stats = %+v, %v", st, err)
	}
	if err := r.KillAndWait(ctx, "sleep"); err != nil {
		t.Fatal(err)
	}
	r.Cleanup()
	for _, p := range []string{pidFile, sock, jail} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s left behind", p)
		}
	}
}

func TestRuntimeAgentSlot(t *testing.T) {
	r := &Runtime{ID: "vm1", P: sleeper(t, "slot")}
	ctx := context.Background()
	dial := func(context.Context) (net.Conn, error) { a, _ := net.Pipe(); return a, nil }
	c, err := r.DialAgentWith(ctx, dial)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.DialAgentWith(ctx, dial); !errdefs.IsUnavailable(err) {
		t.Errorf("second dial while the first is open: %v, want unavailable", err)
	}
	c.Close()
	c.Close() // twice is harmless
	c, err = r.DialAgentWith(ctx, dial)
	if err != nil {
		t.Fatalf("dial after close: %v", err)
	}
	c.Close()
	failing := func(context.Context) (net.Conn, error) { return nil, os.ErrDeadlineExceeded }
	if _, err := r.DialAgentWith(ctx, failing); !errdefs.IsUnavailable(err) {
		t.Errorf("failed dial: %v, want unavailable", err)
	}
	if c, err := r.DialAgentWith(ctx, dial); err != nil {
		t.Errorf("a failed dial kept the slot: %v", err)
	} else {
		c.Close()
	}
}

func TestFindOwnedAndReadState(t *testing.T) {
	dir := t.TempDir()
	var v struct{ A int }
	if err := ReadState(dir, "state.json", &v); !errdefs.IsNotFound(err) {
		t.Errorf("ReadState of a missing file: %v", err)
	}
	os.WriteFile(filepath.Join(dir, "state.json"), []byte(`{"A": 7}`), 0o600)
	if err := ReadState(dir, "state.json", &v); err != nil || v.A != 7 {
		t.Errorf("ReadState = %+v, %v", v, err)
	}

	tag := "banger-findowned-" + strconv.Itoa(os.Getpid())
	p := sleeper(t, tag)
	ours := func(argv []string) bool { return slices.Contains(argv, tag) }
	pidFile := filepath.Join(dir, "x.pid")
	// No pidfile: found by scanning.
	if got, err := FindOwned(pidFile, ours); err != nil || got == nil || got.PID() != p.PID() {
		t.Fatalf("FindOwned = %v, %v", got, err)
	}
	// A pidfile naming a process that is not ours is not trusted.
	os.WriteFile(pidFile, []byte(strconv.Itoa(os.Getpid())), 0o600)
	if got, err := FindOwned(pidFile, ours); err != nil || got == nil || got.PID() != p.PID() {
		t.Fatalf("FindOwned with a foreign pidfile = %v, %v", got, err)
	}
	if got, err := FindOwned(pidFile, func([]string) bool { return false }); err != nil || got != nil {
		t.Errorf("FindOwned of nothing = %v, %v", got, err)
	}
}
