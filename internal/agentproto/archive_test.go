package agentproto

import (
	"archive/tar"
	"bytes"
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/testutil"
)

// makeTree builds a tree with nested dirs, odd modes, a symlink, a hard
// link and a name with spaces; it returns the tree's root.
func makeTree(t *testing.T) string {
	t.Helper()
	root := filepath.Join(t.TempDir(), "src")
	mt := time.Date(2020, 1, 2, 3, 4, 5, 6000, time.UTC)
	mkdir := func(p string, mode fs.FileMode) {
		if err := os.MkdirAll(filepath.Join(root, p), 0o755); err != nil {
			t.Fatal(err)
		}
		os.Chmod(filepath.Join(root, p), mode)
	}
	write := func(p, data string, mode fs.FileMode) {
		full := filepath.Join(root, p)
		if err := os.WriteFile(full, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(full, mode); err != nil {
			t.Fatal(err)
		}
		os.Chtimes(full, mt, mt)
	}
	mkdir("", 0o755)
	mkdir("a/b/c", 0o755)
	write("run.sh", "#!/bin/sh\n", 0o755)
	write("secret", "s3cret", 0o600)
	write("a/b/suid", "x", 0o4755|fs.ModeSetuid)
	if err := os.Chmod(filepath.Join(root, "a/b/suid"), 0o755|fs.ModeSetuid); err != nil {
		t.Fatal(err)
	}
	write("a/b/c/with spaces.txt", "spaces", 0o644)
	if err := os.Symlink("a/b/c/with spaces.txt", filepath.Join(root, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc/passwd", filepath.Join(root, "a/abs")); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(root, "secret"), filepath.Join(root, "a/hard")); err != nil {
		t.Fatal(err)
	}
	mkdir("ro", 0o555)
	os.Chtimes(filepath.Join(root, "a/b/c"), mt, mt)
	return root
}

type entryInfo struct {
	mode fs.FileMode
	data string // file contents or link target
	mt   time.Time
}

func snapshot(t *testing.T, root string) map[string]entryInfo {
	t.Helper()
	m := map[string]entryInfo{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		e := entryInfo{mode: fi.Mode(), mt: fi.ModTime()}
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			e.data, _ = os.Readlink(p)
		case fi.Mode().IsRegular():
			b, _ := os.ReadFile(p)
			e.data = string(b)
		}
		m[rel] = e
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func roundTrip(t *testing.T, src, dst string, opts ExtractOptions) {
	t.Helper()
	var buf bytes.Buffer
	if err := WriteTar(context.Background(), &buf, src, TarName(src)); err != nil {
		t.Fatal(err)
	}
	if err := ExtractTar(context.Background(), dst, &buf, opts); err != nil {
		t.Fatal(err)
	}
}

func compareTrees(t *testing.T, want, got string) {
	t.Helper()
	w, g := snapshot(t, want), snapshot(t, got)
	for k, we := range w {
		ge, ok := g[k]
		if !ok {
			t.Errorf("%s missing", k)
			continue
		}
		if we.mode != ge.mode || we.data != ge.data {
			t.Errorf("%s: got mode %v data %q, want %v %q", k, ge.mode, ge.data, we.mode, we.data)
		}
		if we.mode&fs.ModeSymlink == 0 && !we.mt.Equal(ge.mt) {
			t.Errorf("%s: mtime %v, want %v", k, ge.mt, we.mt)
		}
	}
	for k := range g {
		if _, ok := w[k]; !ok {
			t.Errorf("unexpected %s", k)
		}
	}
}

func TestTarRoundTrip(t *testing.T) {
	src := makeTree(t)
	dst := t.TempDir()
	roundTrip(t, src, dst, ExtractOptions{})
	compareTrees(t, src, filepath.Join(dst, "src"))
	a, _ := os.Stat(filepath.Join(dst, "src/secret"))
	b, _ := os.Stat(filepath.Join(dst, "src/a/hard"))
	if !os.SameFile(a, b) {
		t.Error("hard link not kept")
	}

	// Again, over the first copy: files and links are replaced.
	roundTrip(t, src, dst, ExtractOptions{})
	compareTrees(t, src, filepath.Join(dst, "src"))

	// Renamed, as "cp src dst/renamed".
	roundTrip(t, src, dst, ExtractOptions{Rename: "renamed"})
	compareTrees(t, src, filepath.Join(dst, "renamed"))

	// A single file and a symlink at the root.
	one := t.TempDir()
	roundTrip(t, filepath.Join(src, "a/b/suid"), one, ExtractOptions{Rename: "copy"})
	if fi, err := os.Stat(filepath.Join(one, "copy")); err != nil || fi.Mode() != 0o755|fs.ModeSetuid {
		t.Errorf("single file: %v %v", fi, err)
	}
	roundTrip(t, filepath.Join(src, "link"), one, ExtractOptions{})
	if l, err := os.Readlink(filepath.Join(one, "link")); err != nil || l != "a/b/c/with spaces.txt" {
		t.Errorf("root symlink: %q %v", l, err)
	}
}

func TestTarOwnership(t *testing.T) {
	testutil.RequireRoot(t)
	src := t.TempDir()
	f := filepath.Join(src, "owned")
	if err := os.WriteFile(f, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(f, 1234, 5678); err != nil {
		t.Fatal(err)
	}
	dst := t.TempDir()
	roundTrip(t, f, dst, ExtractOptions{Chown: true})
	var buf bytes.Buffer
	if err := WriteTar(context.Background(), &buf, filepath.Join(dst, "owned"), "x"); err != nil {
		t.Fatal(err)
	}
	hdr, err := tar.NewReader(&buf).Next()
	if err != nil || hdr.Uid != 1234 || hdr.Gid != 5678 {
		t.Fatalf("owner %d:%d, %v", hdr.Uid, hdr.Gid, err)
	}
}

func TestWriteTarMissing(t *testing.T) {
	err := WriteTar(context.Background(), &bytes.Buffer{}, filepath.Join(t.TempDir(), "nope"), "nope")
	if !errdefs.IsNotFound(err) {
		t.Fatalf("err = %v, want NotFound", err)
	}
}

// tarEntry is one entry of a hand-made archive.
type tarEntry struct {
	name, link, data string
	typ              byte
}

func makeTar(t testing.TB, entries ...tarEntry) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Linkname: e.link, Typeflag: e.typ, Mode: 0o644, Size: int64(len(e.data)), Format: tar.FormatPAX}
		if e.typ == tar.TypeDir {
			h.Mode = 0o755
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(e.data))
	}
	tw.Close()
	return buf.Bytes()
}

func TestExtractHostile(t *testing.T) {
	tests := []struct {
		name    string
		entries []tarEntry
	}{
		{"dot dot", []tarEntry{{name: "../x", data: "x", typ: tar.TypeReg}}},
		{"dot dot inside", []tarEntry{{name: "a/../../x", data: "x", typ: tar.TypeReg}}},
		{"absolute", []tarEntry{{name: "/abs", data: "x", typ: tar.TypeReg}}},
		{"through a symlink to /", []tarEntry{
			{name: "evil", link: "/", typ: tar.TypeSymlink},
			{name: "evil/etc/x", data: "x", typ: tar.TypeReg},
		}},
		{"through a relative symlink", []tarEntry{
			{name: "up", link: "..", typ: tar.TypeSymlink},
			{name: "up/x", data: "x", typ: tar.TypeReg},
		}},
		{"file through a symlink to a dir", []tarEntry{
			{name: "d", link: "..", typ: tar.TypeSymlink},
			{name: "d/", typ: tar.TypeDir},
		}},
		{"hard link outside", []tarEntry{{name: "h", link: "../outside", typ: tar.TypeLink}}},
		{"hard link through a symlink", []tarEntry{
			{name: "up", link: "..", typ: tar.TypeSymlink},
			{name: "h", link: "up/outside", typ: tar.TypeLink},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			outer := t.TempDir()
			os.WriteFile(filepath.Join(outer, "outside"), []byte("keep"), 0o644)
			dir := filepath.Join(outer, "dir")
			os.Mkdir(dir, 0o755)
			err := ExtractTar(context.Background(), dir, bytes.NewReader(makeTar(t, tt.entries...)), ExtractOptions{})
			if !errdefs.IsInvalidArgument(err) {
				t.Fatalf("err = %v, want InvalidArgument", err)
			}
			checkOutside(t, outer)
		})
	}
}

// checkOutside fails if anything but "dir" and "outside" appeared in outer
// or outside changed.
func checkOutside(t *testing.T, outer string) {
	t.Helper()
	ents, _ := os.ReadDir(outer)
	for _, e := range ents {
		if e.Name() != "dir" && e.Name() != "outside" {
			t.Errorf("%s was written outside the directory", e.Name())
		}
	}
	if b, _ := os.ReadFile(filepath.Join(outer, "outside")); string(b) != "keep" {
		t.Errorf("outside = %q", b)
	}
}

func TestExtractErrors(t *testing.T) {
	dir := t.TempDir()
	err := ExtractTar(context.Background(), filepath.Join(dir, "missing"), bytes.NewReader(makeTar(t)), ExtractOptions{})
	if !errdefs.IsNotFound(err) {
		t.Errorf("missing dir: %v", err)
	}
	os.WriteFile(filepath.Join(dir, "file"), nil, 0o644)
	err = ExtractTar(context.Background(), filepath.Join(dir, "file"), bytes.NewReader(makeTar(t)), ExtractOptions{})
	if !errdefs.IsInvalidArgument(err) {
		t.Errorf("file as dir: %v", err)
	}
	err = ExtractTar(context.Background(), dir, bytes.NewReader(makeTar(t, tarEntry{name: "file/", typ: tar.TypeDir})), ExtractOptions{})
	if err == nil || !strings.Contains(err.Error(), "non-directory") {
		t.Errorf("dir over file: %v", err)
	}
	if err := ExtractTar(context.Background(), dir, bytes.NewReader(makeTar(t)), ExtractOptions{Rename: "../x"}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("bad rename: %v", err)
	}
}

func FuzzExtractTar(f *testing.F) {
	f.Add(makeTar(f, tarEntry{name: "a/", typ: tar.TypeDir}, tarEntry{name: "a/b", data: "x", typ: tar.TypeReg}))
	f.Add(makeTar(f, tarEntry{name: "evil", link: "/", typ: tar.TypeSymlink}, tarEntry{name: "evil/x", data: "x", typ: tar.TypeReg}))
	f.Add(makeTar(f, tarEntry{name: "l", link: "..", typ: tar.TypeSymlink}, tarEntry{name: "h", link: "l/outside", typ: tar.TypeLink}))
	f.Fuzz(func(t *testing.T, b []byte) {
		outer := t.TempDir()
		os.WriteFile(filepath.Join(outer, "outside"), []byte("keep"), 0o644)
		dir := filepath.Join(outer, "dir")
		os.Mkdir(dir, 0o755)
		_ = ExtractTar(context.Background(), dir, bytes.NewReader(b), ExtractOptions{})
		checkOutside(t, outer)
	})
}
