package consolelog

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bangervm/banger/internal/testutil/endless"
)

func size(t *testing.T, p string) int64 {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

func TestWriterCapsAndRotates(t *testing.T) {
	p := filepath.Join(t.TempDir(), "console.log")
	w, err := Open(p, 1000)
	if err != nil {
		t.Fatal(err)
	}
	line := []byte(strings.Repeat("x", 99) + "\n")
	for range 25 {
		if n, err := w.Write(line); err != nil || n != len(line) {
			t.Fatalf("write = %d, %v", n, err)
		}
	}
	if _, err := w.Write([]byte("last\n")); err != nil {
		t.Fatal(err)
	}
	w.Close()
	// 25 lines of 100 bytes: two rotations, 500 bytes + "last\n" left.
	if s := size(t, p); s != 505 {
		t.Errorf("console.log is %d bytes, want 505", s)
	}
	if s := size(t, OldPath(p)); s != 1000 {
		t.Errorf("console.log.1 is %d bytes, want 1000", s)
	}
	// Reopened, it goes on from its size.
	w, _ = Open(p, 1000)
	w.Write(bytes.Repeat([]byte("y"), 600))
	w.Close()
	if s := size(t, p); s != 600 {
		t.Errorf("after reopening: %d bytes, want 600 (rotated)", s)
	}
	// One write over the cap keeps its end.
	w, _ = Open(p, 1000)
	w.Write(append(bytes.Repeat([]byte("a"), 5000), "end"...))
	w.Close()
	b, _ := os.ReadFile(p)
	if len(b) != 1000 || !bytes.HasSuffix(b, []byte("end")) {
		t.Errorf("oversized write left %d bytes ending %q", len(b), b[max(len(b)-3, 0):])
	}
	if got, _ := Tail(p, 3); string(got) != "end" {
		t.Errorf("Tail = %q", got)
	}
}

// TestCopierProcess runs the copier as the engines do: a separate process
// (this test binary, started again) fed through pipes, one endless.
func TestCopierProcess(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "console.log"), filepath.Join(dir, "engine.log")
	ws, done, err := StartCopier([]string{a, b}, 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyN(ws[0], endless.Lines("", "spam spam spam\n"), 1<<20); err != nil {
		t.Fatal(err)
	}
	io.WriteString(ws[0], "the end\n")
	io.WriteString(ws[1], "engine says hi\n")
	ws[0].Close()
	ws[1].Close()
	// The copier exits once both pipes are closed; its files are then
	// complete.
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("the copier did not exit after its inputs closed")
	}
	got, _ := os.ReadFile(b)
	tail, _ := Tail(a, 8)
	if string(got) != "engine says hi\n" || string(tail) != "the end\n" {
		t.Fatalf("copier did not write: %q, %q", got, tail)
	}
	if s := size(t, a); s > 64<<10 {
		t.Errorf("console.log is %d bytes, over the cap", s)
	}
	if s := size(t, OldPath(a)); s == 0 || s > 64<<10 {
		t.Errorf("console.log.1 is %d bytes", s)
	}
}

func TestReaderFollowsRotation(t *testing.T) {
	p := filepath.Join(t.TempDir(), "console.log")
	w, _ := Open(p, 10)
	defer w.Close()
	w.Write([]byte("12345"))
	r, err := OpenReader(p)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var got bytes.Buffer
	drain := func() {
		buf := make([]byte, 3)
		for {
			n, err := r.Read(buf)
			got.Write(buf[:n])
			if err != nil {
				return
			}
		}
	}
	drain()
	w.Write([]byte("678"))   // old file
	w.Write([]byte("abcde")) // rotates
	w.Write([]byte("fgh"))
	drain()
	if got.String() != "12345678abcdefgh" {
		t.Errorf("read %q", got.String())
	}
}
