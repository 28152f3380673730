package consolelog

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestFIFOCopier runs the named-pipe copier as the Firecracker engine
// does: the engine opens the pipes by path, writes far past the cap, and
// the copier ends only when the engine process exits.
func TestFIFOCopier(t *testing.T) {
	dir := t.TempDir()
	logs := []string{filepath.Join(dir, "fc.log"), filepath.Join(dir, "fc.metrics")}
	var fifos []*os.File
	for _, p := range logs {
		f, err := MakeFIFO(p+".fifo", -1, -1)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		fifos = append(fifos, f)
	}
	engine := exec.Command("sleep", "600")
	if err := engine.Start(); err != nil {
		t.Fatal(err)
	}
	defer engine.Process.Kill()
	fd, err := unix.PidfdOpen(engine.Process.Pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	pidfd := os.NewFile(uintptr(fd), "pidfd")
	done, err := StartFIFOCopier(fifos, logs, 64<<10, pidfd)
	if err != nil {
		t.Fatal(err)
	}
	pidfd.Close()
	for _, f := range fifos {
		f.Close()
	}

	// As Firecracker opens its log: read-write, non-blocking, no create.
	open := func(p string) *os.File {
		f, err := os.OpenFile(p+".fifo", os.O_RDWR|syscall.O_NONBLOCK, 0)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	lw, mw := open(logs[0]), open(logs[1])
	defer lw.Close()
	defer mw.Close()
	write := func(f *os.File, s string) {
		for {
			_, err := f.WriteString(s)
			if !errors.Is(err, syscall.EAGAIN) {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			time.Sleep(time.Millisecond) // the pipe is full: the copier drains it
		}
	}
	line := strings.Repeat("spam ", 20) + "\n"
	for range (1 << 20) / len(line) {
		write(lw, line)
	}
	write(lw, "the end\n")
	write(mw, `{"metrics":1}`+"\n")

	select {
	case <-done:
		t.Fatal("the copier exited while the engine runs")
	case <-time.After(200 * time.Millisecond):
	}
	engine.Process.Kill()
	engine.Wait()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("the copier did not exit after the engine did")
	}
	if tail, _ := Tail(logs[0], 8); string(tail) != "the end\n" {
		t.Errorf("log ends %q", tail)
	}
	if got, _ := os.ReadFile(logs[1]); string(got) != `{"metrics":1}`+"\n" {
		t.Errorf("metrics = %q", got)
	}
	if s := size(t, logs[0]); s > 64<<10 {
		t.Errorf("log is %d bytes, over the cap", s)
	}
	if s := size(t, OldPath(logs[0])); s == 0 || s > 64<<10 {
		t.Errorf("log.1 is %d bytes", s)
	}
}
