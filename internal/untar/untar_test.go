package untar_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/agentproto"
	"github.com/bangervm/banger/internal/testutil"
	"github.com/bangervm/banger/internal/testutil/hostiletar"
	"github.com/bangervm/banger/internal/untar"
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

// compareTrees checks got against want; with strict, want's setuid,
// setgid and sticky bits are expected dropped.
func compareTrees(t *testing.T, want, got string, strict bool) {
	t.Helper()
	w, g := snapshot(t, want), snapshot(t, got)
	for k, we := range w {
		if strict {
			we.mode &^= fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky
		}
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

func roundTrip(t *testing.T, src, dst string, o untar.Options) error {
	t.Helper()
	var buf bytes.Buffer
	if err := agentproto.WriteTar(context.Background(), &buf, src, agentproto.TarName(src)); err != nil {
		t.Fatal(err)
	}
	return untar.Extract(context.Background(), dst, &buf, o)
}

func mustRoundTrip(t *testing.T, src, dst string, o untar.Options) {
	t.Helper()
	if err := roundTrip(t, src, dst, o); err != nil {
		t.Fatal(err)
	}
}

func TestRoundTrip(t *testing.T) {
	for _, p := range []untar.Policy{untar.Permissive, untar.Strict} {
		strict := p == untar.Strict
		t.Run(map[bool]string{false: "permissive", true: "strict"}[strict], func(t *testing.T) {
			src := makeTree(t)
			dst := t.TempDir()
			o := untar.Options{Policy: p, Top: "src"}
			mustRoundTrip(t, src, dst, o)
			compareTrees(t, src, filepath.Join(dst, "src"), strict)
			a, _ := os.Stat(filepath.Join(dst, "src/secret"))
			b, _ := os.Stat(filepath.Join(dst, "src/a/hard"))
			if !os.SameFile(a, b) {
				t.Error("hard link not kept")
			}
			if !strict {
				// Again, over the first copy: files and links are replaced.
				mustRoundTrip(t, src, dst, o)
				compareTrees(t, src, filepath.Join(dst, "src"), strict)
			}

			// Renamed, as "cp src dst/renamed".
			o.Rename = "renamed"
			mustRoundTrip(t, src, dst, o)
			compareTrees(t, src, filepath.Join(dst, "renamed"), strict)

			// A single file and a symlink at the root.
			one := t.TempDir()
			mustRoundTrip(t, filepath.Join(src, "a/b/suid"), one, untar.Options{Policy: p, Top: "suid", Rename: "copy"})
			want := fs.FileMode(0o755) | fs.ModeSetuid
			if strict {
				want = 0o755
			}
			if fi, err := os.Stat(filepath.Join(one, "copy")); err != nil || fi.Mode() != want {
				t.Errorf("single file: %v %v", fi, err)
			}
			mustRoundTrip(t, filepath.Join(src, "link"), one, untar.Options{Policy: p, Top: "link"})
			if l, err := os.Readlink(filepath.Join(one, "link")); err != nil || l != "a/b/c/with spaces.txt" {
				t.Errorf("root symlink: %q %v", l, err)
			}
		})
	}
}

// TestStrictOverwrite copies a tree twice into the same place, as cp -r
// would: files are replaced, the directories left as the first copy made
// them.
func TestStrictOverwrite(t *testing.T) {
	src := makeTree(t)
	dst := t.TempDir()
	o := untar.Options{Policy: untar.Strict, Top: "src"}
	mustRoundTrip(t, src, dst, o)
	os.WriteFile(filepath.Join(src, "run.sh"), []byte("changed"), 0o755)
	err := roundTrip(t, src, dst, o)
	var re *untar.RefusedError
	// Its symbolic links exist now: they are not replaced.
	if !errors.As(err, &re) || re.N != 2 {
		t.Fatalf("err = %v, want the 2 links refused", err)
	}
	if b, _ := os.ReadFile(filepath.Join(dst, "src/run.sh")); string(b) != "changed" {
		t.Errorf("run.sh = %q", b)
	}
}

func TestOwnership(t *testing.T) {
	testutil.RequireRoot(t)
	src := t.TempDir()
	f := filepath.Join(src, "owned")
	if err := os.WriteFile(f, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(f, 1234, 5678); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(f, 0o755|fs.ModeSetuid|fs.ModeSetgid); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name     string
		o        untar.Options
		uid, gid int
		mode     fs.FileMode
	}{
		{"permissive keeps", untar.Options{Policy: untar.Permissive, KeepOwner: true}, 1234, 5678, 0o755 | fs.ModeSetuid | fs.ModeSetgid},
		{"strict", untar.Options{Policy: untar.Strict, Top: "owned"}, 0, 0, 0o755},
		{"strict keeps", untar.Options{Policy: untar.Strict, Top: "owned", KeepOwner: true}, 1234, 5678, 0o755},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dst := t.TempDir()
			mustRoundTrip(t, f, dst, tt.o)
			fi, err := os.Stat(filepath.Join(dst, "owned"))
			if err != nil {
				t.Fatal(err)
			}
			st := fi.Sys().(*syscall.Stat_t)
			if int(st.Uid) != tt.uid || int(st.Gid) != tt.gid || fi.Mode() != tt.mode {
				t.Errorf("owner %d:%d mode %v, want %d:%d %v", st.Uid, st.Gid, fi.Mode(), tt.uid, tt.gid, tt.mode)
			}
		})
	}
}

// TestStrictOwnerOutOfRange: a uid chown would read as "unchanged" (or
// truncate) is refused, not passed on.
func TestStrictOwnerOutOfRange(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	tb := testutil.Tar(t, testutil.TarEntry{Name: "f", Body: "x", UID: 1<<32 - 1}, testutil.TarEntry{Name: "g", Body: "x", UID: 1<<32 + 5})
	var got []untar.Refusal
	err := untar.Extract(context.Background(), dir, bytes.NewReader(tb), untar.Options{Policy: untar.Strict, Top: ".", KeepOwner: true, Refused: func(r untar.Refusal) { got = append(got, r) }})
	var re *untar.RefusedError
	if !errors.As(err, &re) || len(got) != 2 || !strings.Contains(got[0].Reason, "out of range") {
		t.Fatalf("err = %v, refused %v", err, got)
	}
	for _, n := range []string{"f", "g"} {
		if fi, err := os.Stat(filepath.Join(dir, n)); err != nil || fi.Sys().(*syscall.Stat_t).Uid != 0 {
			t.Errorf("%s: %v %v", n, fi, err)
		}
	}
}

// TestStrictKeepOwnerUnprivileged: an id the caller may not give is
// reported; the file lands, the caller's.
func TestStrictKeepOwnerUnprivileged(t *testing.T) {
	if os.Geteuid() == 0 {
		testutil.NotApplicable(t, "root may give any owner")
	}
	dir := t.TempDir()
	tb := testutil.Tar(t, testutil.TarEntry{Name: "f", Body: "x", UID: os.Geteuid() + 1})
	var got []untar.Refusal
	err := untar.Extract(context.Background(), dir, bytes.NewReader(tb), untar.Options{Policy: untar.Strict, Top: "f", KeepOwner: true, Refused: func(r untar.Refusal) { got = append(got, r) }})
	var re *untar.RefusedError
	if !errors.As(err, &re) || len(got) != 1 || !strings.Contains(got[0].Reason, "owner") {
		t.Fatalf("err = %v, refused %v", err, got)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "f")); string(b) != "x" {
		t.Errorf("f = %q", b)
	}
}

func TestPermissiveHostile(t *testing.T) {
	tests := []struct {
		name    string
		entries []testutil.TarEntry
	}{
		{"dot dot", []testutil.TarEntry{{Name: "../x", Body: "x"}}},
		{"dot dot inside", []testutil.TarEntry{{Name: "a/../../x", Body: "x"}}},
		{"absolute", []testutil.TarEntry{{Name: "/abs", Body: "x"}}},
		{"through a symlink to /", []testutil.TarEntry{
			{Name: "evil", Linkname: "/", Type: tar.TypeSymlink},
			{Name: "evil/etc/x", Body: "x"},
		}},
		{"through a relative symlink", []testutil.TarEntry{
			{Name: "up", Linkname: "..", Type: tar.TypeSymlink},
			{Name: "up/x", Body: "x"},
		}},
		{"file through a symlink to a dir", []testutil.TarEntry{
			{Name: "d", Linkname: "..", Type: tar.TypeSymlink},
			{Name: "d/", Type: tar.TypeDir},
		}},
		{"hard link outside", []testutil.TarEntry{{Name: "h", Linkname: "../outside", Type: tar.TypeLink}}},
		{"hard link through a symlink", []testutil.TarEntry{
			{Name: "up", Linkname: "..", Type: tar.TypeSymlink},
			{Name: "h", Linkname: "up/outside", Type: tar.TypeLink},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			outer, dir := newOuter(t)
			err := untar.Extract(context.Background(), dir, bytes.NewReader(testutil.Tar(t, tt.entries...)), untar.Options{})
			if !errdefs.IsInvalidArgument(err) {
				t.Fatalf("err = %v, want InvalidArgument", err)
			}
			checkOutside(t, outer)
		})
	}
}

// newOuter makes outer/dir, the extraction's directory, beside
// outer/outside (a file) and outer/elsewhere (an empty directory), which
// must stay as they are.
func newOuter(t testing.TB) (outer, dir string) {
	outer = t.TempDir()
	os.WriteFile(filepath.Join(outer, "outside"), []byte("keep"), 0o644)
	os.Mkdir(filepath.Join(outer, "elsewhere"), 0o755)
	dir = filepath.Join(outer, "dir")
	os.Mkdir(dir, 0o755)
	return outer, dir
}

// checkOutside fails if anything but dir, outside and elsewhere appeared in
// outer, or outside or elsewhere changed.
func checkOutside(t testing.TB, outer string) {
	t.Helper()
	ents, _ := os.ReadDir(outer)
	for _, e := range ents {
		switch e.Name() {
		case "dir", "outside", "elsewhere":
		default:
			t.Errorf("%s was written outside the directory", e.Name())
		}
	}
	if fi, err := os.Lstat(filepath.Join(outer, "outside")); err != nil || fi.Mode() != 0o644 {
		t.Errorf("outside: %v %v", fi, err)
	}
	if b, _ := os.ReadFile(filepath.Join(outer, "outside")); string(b) != "keep" {
		t.Errorf("outside = %q", b)
	}
	if ents, err := os.ReadDir(filepath.Join(outer, "elsewhere")); err != nil || len(ents) > 0 {
		t.Errorf("elsewhere: %v %v", ents, err)
	}
	if fi, err := os.Lstat(filepath.Join(outer, "elsewhere")); err != nil || fi.Mode() != fs.ModeDir|0o755 {
		t.Errorf("elsewhere: %v %v", fi, err)
	}
}

// checkSafe fails on anything in dir a Strict extraction must never
// create: devices, FIFOs, sockets, setuid, setgid or sticky bits.
func checkSafe(t testing.TB, dir string) {
	t.Helper()
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return nil
		}
		if fi.Mode()&(fs.ModeDevice|fs.ModeCharDevice|fs.ModeNamedPipe|fs.ModeSocket|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky) != 0 {
			t.Errorf("%s: mode %v", p, fi.Mode())
		}
		return nil
	})
}

// gnuSparse is an old-GNU sparse entry: a few bytes of data at the end of
// a file of realSize bytes (below 8 GiB: the fields are octal).
func gnuSparse(name string, realSize int64, data string) []byte {
	h := make([]byte, 512)
	copy(h, name)
	octal := func(b []byte, v int64) { copy(b, fmt.Sprintf("%0*o", len(b)-1, v)) }
	octal(h[100:108], 0o644)
	octal(h[108:116], 0)
	octal(h[116:124], 0)
	octal(h[124:136], int64(len(data)))
	octal(h[136:148], 0)
	h[156] = tar.TypeGNUSparse
	copy(h[257:], "ustar  \x00")
	octal(h[386:398], realSize-int64(len(data)))
	octal(h[398:410], int64(len(data)))
	octal(h[483:495], realSize)
	copy(h[148:156], "        ")
	sum := 0
	for _, c := range h {
		sum += int(c)
	}
	copy(h[148:156], fmt.Sprintf("%06o\x00 ", sum))
	body := make([]byte, (len(data)+511)/512*512)
	copy(body, data)
	return append(h, body...)
}

// concat joins archives, dropping the end-of-archive blocks of all but
// the last.
func concat(parts ...[]byte) []byte {
	var out []byte
	for i, p := range parts {
		if i < len(parts)-1 {
			p = bytes.TrimRight(p, "\x00")
			p = p[:(len(p)+511)/512*512]
			if len(p) < len(parts[i]) {
				p = parts[i][:len(p)]
			}
		}
		out = append(out, p...)
	}
	return out
}

func TestStrictHostile(t *testing.T) {
	type E = testutil.TarEntry
	file := func(name string) E { return E{Name: name, Body: "x"} }
	tests := []struct {
		name string
		// plant prepares dir (holding the existing top/) before the copy.
		plant   func(t *testing.T, outer, dir string)
		tar     []byte
		limits  untar.Limits
		refused []string // entry names, in order
		fatal   bool     // the extraction stops with an error
		check   func(t *testing.T, dir string)
	}{
		{name: "dot dot", tar: testutil.Tar(t, file("top/../../outside"), file("../outside"), file("top/a/../../x")), refused: []string{"top/../../outside", "../outside", "top/a/../../x"}},
		{name: "absolute", tar: testutil.Tar(t, file("/outside"), file("/top/x")), refused: []string{"/outside", "/top/x"}},
		{name: "outside the source", tar: testutil.Tar(t, file("top/ok"), file(".bashrc"), file("other/.ssh/authorized_keys"), file("./.git/hooks/pre-commit")),
			refused: []string{".bashrc", "other/.ssh/authorized_keys", "./.git/hooks/pre-commit"},
			check: func(t *testing.T, dir string) {
				ents, _ := os.ReadDir(dir)
				if len(ents) != 1 || ents[0].Name() != "top" {
					t.Errorf("dir holds %v", ents)
				}
			}},
		{name: "through a symlink of the archive", tar: testutil.Tar(t,
			E{Name: "top/evil", Linkname: "../..", Type: tar.TypeSymlink},
			file("top/evil/outside"),
			E{Name: "top/abs", Linkname: "/", Type: tar.TypeSymlink},
			E{Name: "top/abs/tmp/", Type: tar.TypeDir}),
			refused: []string{"top/evil/outside", "top/abs/tmp/"}},
		{name: "through an existing symlink", plant: func(t *testing.T, outer, dir string) {
			os.Symlink(filepath.Join(outer, "elsewhere"), filepath.Join(dir, "top", "sub"))
		}, tar: testutil.Tar(t, file("top/sub/x"), E{Name: "top/sub/", Type: tar.TypeDir, Mode: 0o777}), refused: []string{"top/sub/x", "top/sub/"}},
		{name: "onto an existing symlink", plant: func(t *testing.T, outer, dir string) {
			os.Symlink("../../outside", filepath.Join(dir, "top", "link"))
		}, tar: testutil.Tar(t, file("top/link"), E{Name: "top/link", Linkname: "x", Type: tar.TypeSymlink}),
			refused: []string{"top/link", "top/link"},
			check: func(t *testing.T, dir string) {
				if l, _ := os.Readlink(filepath.Join(dir, "top", "link")); l != "../../outside" {
					t.Errorf("planted link now %q", l)
				}
			}},
		{name: "top onto an existing symlink", plant: func(t *testing.T, outer, dir string) {
			os.Remove(filepath.Join(dir, "top"))
			os.Symlink(filepath.Join(outer, "elsewhere"), filepath.Join(dir, "top"))
		}, tar: testutil.Tar(t, E{Name: "top/", Type: tar.TypeDir}, file("top/x")), refused: []string{"top/", "top/x"}},
		{name: "hard links", plant: func(t *testing.T, outer, dir string) {
			os.WriteFile(filepath.Join(dir, "top", "hostfile"), []byte("host"), 0o600)
		}, tar: testutil.Tar(t,
			E{Name: "top/h1", Linkname: "../outside", Type: tar.TypeLink},
			E{Name: "top/h2", Linkname: "top/../../outside", Type: tar.TypeLink},
			E{Name: "top/h3", Linkname: "top/hostfile", Type: tar.TypeLink},
			E{Name: "top/h4", Linkname: "/etc/passwd", Type: tar.TypeLink},
			E{Name: "top/h5", Linkname: "top/later", Type: tar.TypeLink},
			E{Name: "top/sl", Linkname: "../../outside", Type: tar.TypeSymlink},
			E{Name: "top/h6", Linkname: "top/sl", Type: tar.TypeLink},
			file("top/later"),
			E{Name: "top/ok", Linkname: "top/later", Type: tar.TypeLink}),
			refused: []string{"top/h1", "top/h2", "top/h3", "top/h4", "top/h5", "top/h6"},
			check: func(t *testing.T, dir string) {
				a, _ := os.Stat(filepath.Join(dir, "top", "later"))
				b, _ := os.Stat(filepath.Join(dir, "top", "ok"))
				if a == nil || b == nil || !os.SameFile(a, b) {
					t.Error("hard link within the copy not made")
				}
				if fi, _ := os.Stat(filepath.Join(dir, "top", "hostfile")); fi == nil || fi.Sys().(*syscall.Stat_t).Nlink != 1 {
					t.Error("host file linked")
				}
			}},
		{name: "devices, FIFOs, unknown types", tar: testutil.Tar(t,
			E{Name: "top/null", Type: tar.TypeChar, Mode: 0o666},
			E{Name: "top/sda", Type: tar.TypeBlock, Mode: 0o666},
			E{Name: "top/fifo", Type: tar.TypeFifo, Mode: 0o666},
			E{Name: "top/cont", Type: tar.TypeCont},
			E{Name: "top/odd", Type: 'Z'},
			file("top/fine")),
			refused: []string{"top/null", "top/sda", "top/fifo", "top/cont", "top/odd"},
			check: func(t *testing.T, dir string) {
				ents, _ := os.ReadDir(filepath.Join(dir, "top"))
				if len(ents) != 1 || ents[0].Name() != "fine" {
					t.Errorf("top holds %v", ents)
				}
			}},
		{name: "special bits", tar: testutil.Tar(t,
			E{Name: "top/suid", Body: "x", Mode: 0o4755},
			E{Name: "top/sgid", Body: "x", Mode: 0o2755},
			E{Name: "top/d/", Type: tar.TypeDir, Mode: 0o3777}),
			check: func(t *testing.T, dir string) {
				for p, want := range map[string]fs.FileMode{"top/suid": 0o755, "top/sgid": 0o755, "top/d": fs.ModeDir | 0o777} {
					if fi, err := os.Lstat(filepath.Join(dir, p)); err != nil || fi.Mode() != want {
						t.Errorf("%s: %v %v, want %v", p, fi, err, want)
					}
				}
			}},
		{name: "existing directories keep their modes", plant: func(t *testing.T, outer, dir string) {
			os.Mkdir(filepath.Join(dir, "top", "sub"), 0o700)
			os.Chmod(filepath.Join(dir, "top"), 0o700)
		}, tar: testutil.Tar(t, E{Name: "top/", Type: tar.TypeDir, Mode: 0o777}, E{Name: "top/sub/", Type: tar.TypeDir, Mode: 0o777}, file("top/sub/f")),
			check: func(t *testing.T, dir string) {
				for _, p := range []string{"top", "top/sub"} {
					if fi, _ := os.Stat(filepath.Join(dir, p)); fi == nil || fi.Mode().Perm() != 0o700 {
						t.Errorf("%s: %v", p, fi)
					}
				}
			}},
		{name: "a second entry of a name", tar: testutil.Tar(t, file("top/f"), E{Name: "top/f", Linkname: "/etc", Type: tar.TypeSymlink}, E{Name: "top/f", Body: "y"}),
			refused: []string{"top/f", "top/f"}},
		{name: "control characters", tar: testutil.Tar(t, E{Name: "top/\x1b[2J\x1b]0;owned\x07", Type: tar.TypeFifo}), refused: []string{"top/\x1b[2J\x1b]0;owned\x07"}},
		{name: "long names", tar: testutil.Tar(t, file("top/"+strings.Repeat("n", 40)), E{Name: "top/l", Linkname: strings.Repeat("t", 40), Type: tar.TypeSymlink}, file("top/ok")),
			limits: untar.Limits{NameLen: 32}, refused: []string{"top/" + strings.Repeat("n", 28) + "...", "top/l"}},
		{name: "an entry the file system refuses", tar: testutil.Tar(t, file("top/"+strings.Repeat("n", 300)), file("top/after")), refused: []string{"top/" + strings.Repeat("n", 300)},
			check: func(t *testing.T, dir string) {
				if _, err := os.Stat(filepath.Join(dir, "top", "after")); err != nil {
					t.Error(err)
				}
			}},
		{name: "too many entries", tar: testutil.Tar(t, file("top/1"), file("top/2"), file("top/3"), file("top/4")), limits: untar.Limits{Entries: 3}, fatal: true},
		{name: "too many name bytes", tar: testutil.Tar(t, file("top/1"), file("top/2"), file("top/3"), file("top/4")), limits: untar.Limits{NameBytes: 16}, fatal: true},
		{name: "sparse", tar: concat(gnuSparse("top/big", 1<<32, "tail"), testutil.Tar(t, file("top/after"))), refused: []string{"top/big"},
			check: func(t *testing.T, dir string) {
				if b, _ := os.ReadFile(filepath.Join(dir, "top", "after")); string(b) != "x" {
					t.Errorf("entry after the sparse one: %q", b)
				}
			}},
		{name: "shorter than its header", tar: func() []byte {
			var buf bytes.Buffer
			tw := tar.NewWriter(&buf)
			tw.WriteHeader(&tar.Header{Name: "top/short", Mode: 0o644, Size: 4096, Typeflag: tar.TypeReg})
			tw.Write([]byte("only this"))
			tw.Flush()
			return buf.Bytes()
		}(), fatal: true,
			check: func(t *testing.T, dir string) {
				if _, err := os.Lstat(filepath.Join(dir, "top", "short")); err == nil {
					t.Error("a file cut short stays")
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			outer, dir := newOuter(t)
			os.Mkdir(filepath.Join(dir, "top"), 0o755)
			if tt.plant != nil {
				tt.plant(t, outer, dir)
			}
			var got []string
			o := untar.Options{Policy: untar.Strict, Top: "top", Limits: tt.limits, Refused: func(r untar.Refusal) { got = append(got, r.Name) }}
			err := untar.Extract(context.Background(), dir, bytes.NewReader(tt.tar), o)
			var re *untar.RefusedError
			switch {
			case tt.fatal:
				if err == nil || errors.As(err, &re) || !errdefs.IsInvalidArgument(err) {
					t.Errorf("err = %v, want an InvalidArgument error ending the extraction", err)
				}
			case len(tt.refused) == 0:
				if err != nil {
					t.Errorf("err = %v", err)
				}
			case !errors.As(err, &re) || re.N != len(tt.refused) || !errdefs.IsInvalidArgument(err):
				t.Errorf("err = %v, want %d refused", err, len(tt.refused))
			}
			if !tt.fatal && strings.Join(got, "|") != strings.Join(tt.refused, "|") {
				t.Errorf("refused %q, want %q", got, tt.refused)
			}
			checkOutside(t, outer)
			checkSafe(t, dir)
			if tt.check != nil {
				tt.check(t, dir)
			}
		})
	}
}

// TestStrictRoot: a whole file system ("." as Top) lands directly in the
// directory, or under Rename.
func TestStrictRoot(t *testing.T) {
	tb := testutil.Tar(t, testutil.TarEntry{Name: "./", Type: tar.TypeDir, Mode: 0o700}, testutil.TarEntry{Name: "./etc/", Type: tar.TypeDir}, testutil.TarEntry{Name: "./etc/hostname", Body: "box"}, testutil.TarEntry{Name: "bare", Body: "b"})
	dir := t.TempDir()
	if err := untar.Extract(context.Background(), dir, bytes.NewReader(tb), untar.Options{Policy: untar.Strict, Top: "."}); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(dir); fi.Mode().Perm() == 0o700 {
		t.Error("the existing directory took the root entry's mode")
	}
	if err := untar.Extract(context.Background(), dir, bytes.NewReader(tb), untar.Options{Policy: untar.Strict, Top: ".", Rename: "copy"}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"etc/hostname", "bare", "copy/etc/hostname", "copy/bare"} {
		if _, err := os.Stat(filepath.Join(dir, p)); err != nil {
			t.Error(err)
		}
	}
}

func TestExtractErrors(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	empty := testutil.Tar(t)
	if err := untar.Extract(ctx, filepath.Join(dir, "missing"), bytes.NewReader(empty), untar.Options{}); !errdefs.IsNotFound(err) {
		t.Errorf("missing dir: %v", err)
	}
	os.WriteFile(filepath.Join(dir, "file"), nil, 0o644)
	if err := untar.Extract(ctx, filepath.Join(dir, "file"), bytes.NewReader(empty), untar.Options{}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("file as dir: %v", err)
	}
	err := untar.Extract(ctx, dir, bytes.NewReader(testutil.Tar(t, testutil.TarEntry{Name: "file/", Type: tar.TypeDir})), untar.Options{})
	if err == nil || !strings.Contains(err.Error(), "non-directory") {
		t.Errorf("dir over file: %v", err)
	}
	for _, o := range []untar.Options{
		{Top: "x", Rename: "../x"},
		{Rename: "x"},
		{Policy: untar.Strict},
		{Policy: untar.Strict, Top: "a/b"},
		{Policy: 7, Top: "x"},
	} {
		if err := untar.Extract(ctx, dir, bytes.NewReader(empty), o); !errdefs.IsInvalidArgument(err) {
			t.Errorf("options %+v: %v", o, err)
		}
	}
}

// FuzzStrict extracts arbitrary archives, Strict, into a directory holding
// symbolic links to outside it: nothing may land outside, no link may be
// followed or replaced, and nothing unsafe may be created.
func FuzzStrict(f *testing.F) {
	type E = testutil.TarEntry
	f.Add(testutil.Tar(f, E{Name: "top/", Type: tar.TypeDir}, E{Name: "top/a/b", Body: "x", Mode: 0o4755}))
	f.Add(testutil.Tar(f, E{Name: "top/evil", Linkname: "/", Type: tar.TypeSymlink}, E{Name: "top/evil/x", Body: "x"}))
	f.Add(testutil.Tar(f, E{Name: "top/l", Linkname: "..", Type: tar.TypeSymlink}, E{Name: "top/h", Linkname: "top/l/outside", Type: tar.TypeLink}))
	f.Add(testutil.Tar(f, E{Name: "top/out/x", Body: "x"}, E{Name: "top/link", Body: "x"}, E{Name: "top/fifo", Type: tar.TypeFifo}))
	f.Add(testutil.Tar(f, E{Name: "top/", Type: tar.TypeDir, Mode: 0o7777}, E{Name: "top/h", Linkname: "top/link", Type: tar.TypeLink}))
	f.Add(gnuSparse("top/s", 1<<32, "x"))
	f.Fuzz(func(t *testing.T, b []byte) {
		outer, dir := newOuter(t)
		os.Mkdir(filepath.Join(dir, "top"), 0o755)
		os.Symlink(filepath.Join(outer, "elsewhere"), filepath.Join(dir, "top", "out"))
		os.Symlink("../../outside", filepath.Join(dir, "top", "link"))
		_ = untar.Extract(context.Background(), dir, bytes.NewReader(b), untar.Options{Policy: untar.Strict, Top: "top", Limits: untar.Limits{Entries: 1000}})
		checkOutside(t, outer)
		checkSafe(t, dir)
		if l, _ := os.Readlink(filepath.Join(dir, "top", "out")); l != filepath.Join(outer, "elsewhere") {
			t.Errorf("planted link out now %q", l)
		}
		if l, _ := os.Readlink(filepath.Join(dir, "top", "link")); l != "../../outside" {
			t.Errorf("planted link now %q", l)
		}
		if fi, _ := os.Stat(filepath.Join(dir, "top")); fi == nil || fi.Mode() != fs.ModeDir|0o755 {
			t.Errorf("existing top now %v", fi)
		}
	})
}

// TestStrictHostileArchive extracts the hostile agent's archive (see
// hostiletar) as vm cp does, into a directory holding a planted link and
// a private directory: only the source and the good file land.
func TestStrictHostileArchive(t *testing.T) {
	outer, dir := newOuter(t)
	top := filepath.Join(dir, "src")
	os.Mkdir(top, 0o755)
	os.Mkdir(filepath.Join(top, hostiletar.PlantedDir), 0o700)
	os.Symlink("../../outside", filepath.Join(top, hostiletar.Planted))
	var got []string
	err := untar.Extract(context.Background(), dir, bytes.NewReader(hostiletar.Archive("src")), untar.Options{Policy: untar.Strict, Top: "src", Refused: func(r untar.Refusal) { got = append(got, r.Name) }})
	var re *untar.RefusedError
	want := hostiletar.Refused("src")
	if !errors.As(err, &re) || re.N != len(want) {
		t.Errorf("err = %v, want %d refused", err, len(want))
	}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("refused %q,\nwant %q", got, want)
	}
	checkOutside(t, outer)
	checkSafe(t, dir)
	if b, _ := os.ReadFile(filepath.Join(top, hostiletar.Good)); string(b) != hostiletar.GoodBody {
		t.Errorf("good file: %q", b)
	}
	if fi, _ := os.Lstat(filepath.Join(top, hostiletar.PlantedDir)); fi == nil || fi.Mode() != fs.ModeDir|0o700 {
		t.Errorf("private dir now %v", fi)
	}
	if l, _ := os.Readlink(filepath.Join(top, hostiletar.Planted)); l != "../../outside" {
		t.Errorf("planted link now %q", l)
	}
	if _, err := os.Lstat(hostiletar.Absolute); err == nil {
		t.Errorf("%s written", hostiletar.Absolute)
	}
}

// TestStrictEndless: an archive that never ends is read until the caller
// gives up, and the file cut short is removed.
func TestStrictEndless(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	r := &cancelAfter{r: hostiletar.Endless("src"), n: 8 << 20, cancel: cancel}
	err := untar.Extract(ctx, dir, r, untar.Options{Policy: untar.Strict, Top: "src"})
	if err == nil || !strings.Contains(err.Error(), hostiletar.EndlessName) {
		t.Errorf("err = %v, want the endless file named", err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "src", hostiletar.EndlessName)); err == nil {
		t.Error("the file cut short stays")
	}
}

// cancelAfter reads r, then fails once n bytes are read, as an HTTP body
// does when the caller's context ends.
type cancelAfter struct {
	r      io.Reader
	n      int64
	cancel context.CancelFunc
}

func (c *cancelAfter) Read(b []byte) (int, error) {
	if c.n <= 0 {
		c.cancel()
		return 0, context.Canceled
	}
	if int64(len(b)) > c.n {
		b = b[:c.n]
	}
	n, err := c.r.Read(b)
	c.n -= int64(n)
	return n, err
}
