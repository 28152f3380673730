package cpio

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/bangervm/banger/internal/testutil"
)

type entry struct {
	hdr  Header
	data string
}

var sample = []entry{
	{Header{Name: "dev", Mode: TypeDir | 0o755}, ""},
	{Header{Name: "dev/console", Mode: TypeChar | 0o600, RDevMajor: 5, RDevMinor: 1}, ""},
	{Header{Name: "etc", Mode: TypeDir | 0o755, MTime: 1700000000}, ""},
	{Header{Name: "etc/a", Mode: TypeReg | 0o644}, "x"},       // 1 byte: 3 of padding
	{Header{Name: "etc/abcd", Mode: TypeReg | 0o600}, "abcd"}, // no padding
	{Header{Name: "etc/empty", Mode: TypeReg | 0o644}, ""},    // no data at all
	{Header{Name: "etc/link", Mode: TypeSymlink | 0o777, Linkname: "a"}, ""},
	{Header{Name: "etc/suid", Mode: TypeReg | 0o4755, UID: 1000, GID: 100}, "#!/bin/sh\n"},
}

func writeSample(t *testing.T, entries []entry) []byte {
	t.Helper()
	var b bytes.Buffer
	w := NewWriter(&b)
	for _, e := range entries {
		h := e.hdr
		h.Size = int64(len(e.data))
		if err := w.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(w, e.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestRoundTrip(t *testing.T) {
	archive := writeSample(t, sample)
	if len(archive)%4 != 0 {
		t.Errorf("archive length %d is not a multiple of 4", len(archive))
	}
	if !bytes.Equal(archive, writeSample(t, sample)) {
		t.Error("same entries gave different bytes")
	}
	r := NewReader(bytes.NewReader(archive))
	for i, want := range sample {
		h, err := r.Next()
		if err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
		data, err := io.ReadAll(r)
		if err != nil {
			t.Fatal(err)
		}
		w := want.hdr
		w.Size = int64(len(want.data))
		if w.Mode&TypeMask == TypeSymlink {
			w.Size = int64(len(w.Linkname))
		}
		if w.NLink == 0 {
			w.NLink = 1
			if w.Mode&TypeMask == TypeDir {
				w.NLink = 2
			}
		}
		if *h != w || (w.Mode&TypeMask == TypeReg && string(data) != want.data) {
			t.Errorf("entry %d:\n got %+v %q\nwant %+v %q", i, *h, data, w, want.data)
		}
	}
	if _, err := r.Next(); !errors.Is(err, io.EOF) {
		t.Errorf("after the last entry: %v, want EOF", err)
	}
}

// TestHostCpio checks the format against GNU cpio, when installed.
func TestHostCpio(t *testing.T) {
	testutil.RequireTool(t, "cpio", "cpio")
	archive := writeSample(t, sample)
	list := exec.Command("cpio", "-it", "--quiet")
	list.Stdin = bytes.NewReader(archive)
	out, err := list.Output()
	if err != nil {
		t.Fatalf("cpio -it: %v", err)
	}
	var want []string
	for _, e := range sample {
		want = append(want, e.hdr.Name)
	}
	if got := strings.Fields(string(out)); !slices.Equal(got, want) {
		t.Errorf("cpio -it lists %v, want %v", got, want)
	}

	dir := t.TempDir()
	// Devices need root to create; the listing above covers them.
	extract := exec.Command("cpio", "-id", "--quiet", "--no-absolute-filenames", "etc/*")
	extract.Dir = dir
	extract.Stdin = bytes.NewReader(archive)
	if out, err := extract.CombinedOutput(); err != nil {
		t.Fatalf("cpio -id: %v: %s", err, out)
	}
	for _, e := range sample {
		if e.hdr.Mode&TypeMask != TypeReg {
			continue
		}
		got, err := os.ReadFile(filepath.Join(dir, e.hdr.Name))
		if err != nil || string(got) != e.data {
			t.Errorf("%s: %q, %v", e.hdr.Name, got, err)
		}
	}
	if target, err := os.Readlink(filepath.Join(dir, "etc/link")); err != nil || target != "a" {
		t.Errorf("etc/link -> %q, %v", target, err)
	}
}

func TestWriterErrors(t *testing.T) {
	tests := []struct {
		name string
		run  func(w *Writer) error
	}{
		{"absolute name", func(w *Writer) error { return w.WriteHeader(&Header{Name: "/etc", Mode: TypeDir}) }},
		{"dot-dot", func(w *Writer) error { return w.WriteHeader(&Header{Name: "a/../b", Mode: TypeDir}) }},
		{"empty name", func(w *Writer) error { return w.WriteHeader(&Header{Mode: TypeDir}) }},
		{"trailer name", func(w *Writer) error { return w.WriteHeader(&Header{Name: trailer, Mode: TypeDir}) }},
		{"fifo", func(w *Writer) error { return w.WriteHeader(&Header{Name: "p", Mode: 0o010644}) }},
		{"symlink without target", func(w *Writer) error { return w.WriteHeader(&Header{Name: "l", Mode: TypeSymlink}) }},
		{"too much data", func(w *Writer) error {
			w.WriteHeader(&Header{Name: "f", Mode: TypeReg, Size: 1})
			_, err := w.Write([]byte("ab"))
			return err
		}},
		{"too little data", func(w *Writer) error {
			w.WriteHeader(&Header{Name: "f", Mode: TypeReg, Size: 2})
			w.Write([]byte("a"))
			return w.Close()
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.run(NewWriter(io.Discard)); err == nil {
				t.Error("no error")
			}
		})
	}
}

func TestReaderErrors(t *testing.T) {
	good := writeSample(t, sample)
	tests := []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"bad magic", append([]byte("070707"), good[6:]...)},
		{"truncated", good[:len(good)-40]},
		{"bad hex", append(append([]byte("070701"), "zzzzzzzz"...), good[14:]...)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewReader(bytes.NewReader(tt.data))
			for {
				_, err := r.Next()
				if errors.Is(err, io.EOF) {
					t.Fatal("read to the trailer")
				}
				if err != nil {
					return
				}
				if _, err := io.Copy(io.Discard, r); err != nil {
					return
				}
			}
		})
	}
}
