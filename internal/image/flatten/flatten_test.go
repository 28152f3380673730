package flatten

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bangervm/banger/errdefs"
)

// listTree returns every path under root, "dir/" for directories and
// "link -> target" for symbolic links, sorted.
func listTree(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if p == root {
			return nil
		}
		rel, _ := filepath.Rel(root, p)
		switch {
		case fi.IsDir():
			rel += "/"
		case fi.Mode()&os.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			rel += " -> " + target
		}
		out = append(out, rel)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestLayers checks the result of applying layers, entry by entry, as the
// OCI image spec's change sets define it.
func TestLayers(t *testing.T) {
	tests := []struct {
		name   string
		layers [][]ent
		want   []string
		files  map[string]string // content checks
	}{
		{
			name: "whiteout deletes lower file and directory",
			layers: [][]ent{
				{dir("a"), file("a/x", "x"), file("a/y", "y"), dir("b"), file("b/z", "z"), file("c", "c")},
				{whiteout("a/.wh.x"), whiteout(".wh.b"), whiteout(".wh.missing"), whiteout("nodir/.wh.q")},
			},
			want: []string{"a/", "a/y", "c"},
		},
		{
			name: "whiteout does not hide an entry of its own layer",
			layers: [][]ent{
				{file("a", "lower")},
				{whiteout(".wh.a"), file("a", "upper"), file("b", "b"), whiteout(".wh.b")},
			},
			want:  []string{"a", "b"},
			files: map[string]string{"a": "upper"},
		},
		{
			name: "opaque directory keeps its own layer's entries before and after the marker",
			layers: [][]ent{
				{dir("d"), file("d/old", "o"), dir("d/sub"), file("d/sub/deep", "d"), dir("d/keep"), file("d/keep/lower", "l"),
					dir("d/p"), dir("d/p/q"), file("d/p/q/lowerq", "l"), file("other", "o")},
				{file("d/before", "b"), dir("d/keep"), file("d/p/q/new", "n"), whiteout("d/.wh..wh..opq")},
			},
			want: []string{"d/", "d/before", "d/keep/", "d/p/", "d/p/q/", "d/p/q/new", "other"},
		},
		{
			name: "opaque directory with marker in the middle",
			layers: [][]ent{
				{dir("d"), file("d/old", "o"), dir("d/keep"), file("d/keep/lower", "l"), file("top", "t")},
				{file("d/before", "b"), dir("d/keep"), whiteout("d/.wh..wh..opq"), file("d/after", "a"), file("d/keep/new", "n")},
			},
			want: []string{"d/", "d/after", "d/before", "d/keep/", "d/keep/new", "top"},
		},
		{
			name: "hard link keeps content when its target is replaced later",
			layers: [][]ent{
				{file("f", "old"), hardlink("h", "f"), hardlink("h2", "./f")},
				{file("f", "new")},
			},
			want:  []string{"f", "h", "h2"},
			files: map[string]string{"f": "new", "h": "old", "h2": "old"},
		},
		{
			name: "later layers replace across types",
			layers: [][]ent{
				{file("f2d", "f"), dir("d2f"), file("d2f/child", "c"), dir("dd"), file("dd/child", "c"), dir("d2l"), file("d2l/c", "c"),
					symlink("l2f", "/etc")},
				{dir("f2d"), file("f2d/new", "n"), file("d2f", "now a file"), dir("dd"), symlink("d2l", "target"), file("l2f", "file")},
			},
			want:  []string{"d2f", "d2l -> target", "dd/", "dd/child", "f2d/", "f2d/new", "l2f"},
			files: map[string]string{"d2f": "now a file", "l2f": "file"},
		},
		{
			name: "symlinks are kept, not followed",
			layers: [][]ent{
				{symlink("abs", "/etc/passwd"), symlink("rel", "../../x"), symlink("dot", ".."), dir("d"), symlink("d/up", "../..")},
			},
			want: []string{"abs -> /etc/passwd", "d/", "d/up -> ../..", "dot -> ..", "rel -> ../../x"},
		},
		{
			name:   "implicit parents are created",
			layers: [][]ent{{file("a/b/c", "c")}},
			want:   []string{"a/", "a/b/", "a/b/c"},
		},
		{
			name: "device nodes and fifos are skipped and replace what was there",
			layers: [][]ent{
				{file("dev/null", "not a device"), file("keep", "k")},
				{{name: "dev/null", typ: tar.TypeChar}, {name: "dev/sda", typ: tar.TypeBlock}, {name: "fifo", typ: tar.TypeFifo}},
			},
			want: []string{"dev/", "keep"},
		},
		{
			name: "names are cleaned",
			layers: [][]ent{
				{dir("./"), file("./a/./b/../c", "c"), dir("e/")},
			},
			want: []string{"a/", "a/c", "e/"},
		},
		{
			name: "AUFS metadata files are ignored",
			layers: [][]ent{
				{file(".wh..wh.plnk/1.2", ""), file(".wh..wh.aufs", ""), file("a", "a")},
			},
			want: []string{"a"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var layers [][]byte
			for _, l := range tt.layers {
				layers = append(layers, layerTar(t, l...))
			}
			_, s := apply(t, false, layers...)
			got := listTree(t, s.root)
			if !slices.Equal(got, tt.want) {
				t.Errorf("tree = %q\nwant   %q", got, tt.want)
			}
			for p, want := range tt.files {
				if got := readFile(t, filepath.Join(s.root, p)); got != want {
					t.Errorf("%s = %q, want %q", p, got, want)
				}
			}
		})
	}
}

func TestRootOpaqueMarker(t *testing.T) {
	_, s := apply(t, false,
		layerTar(t, file("old", "o"), dir("d"), file("d/x", "x")),
		layerTar(t, file("new", "n"), file(".wh..wh..opq", "")))
	if got, want := listTree(t, s.root), []string{"new"}; !slices.Equal(got, want) {
		t.Errorf("tree = %q, want %q", got, want)
	}
}

func TestHardLinkInodes(t *testing.T) {
	_, s := apply(t, false,
		layerTar(t, file("f", "old"), hardlink("h", "f")),
		layerTar(t, file("f", "new")))
	var sf, sh syscall.Stat_t
	if err := syscall.Lstat(filepath.Join(s.root, "f"), &sf); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Lstat(filepath.Join(s.root, "h"), &sh); err != nil {
		t.Fatal(err)
	}
	if sf.Ino == sh.Ino || sf.Nlink != 1 || sh.Nlink != 1 {
		t.Errorf("f ino %d nlink %d, h ino %d nlink %d; want separate inodes with one link each", sf.Ino, sf.Nlink, sh.Ino, sh.Nlink)
	}
}

// TestHardLinkKeepsXattrs checks that a link entry without xattrs does not
// strip those of the inode it links to.
func TestHardLinkKeepsXattrs(t *testing.T) {
	tr, s := apply(t, true, layerTar(t,
		ent{name: "f", body: "f", xattrs: map[string]string{"user.k": "v", "trusted.t": "t"}},
		hardlink("g", "f"),
	))
	for k, v := range map[string]string{"user.k": "v", "trusted.t": "t"} {
		buf := make([]byte, 16)
		n, err := syscall.Getxattr(filepath.Join(s.root, "g"), k, buf)
		f, _ := fixupFor(tr, "/f")
		if (err != nil || string(buf[:n]) != v) && f.xattrs[k] != v {
			t.Errorf("%s neither on host (%v) nor in fixups (%+v)", k, err, f)
		}
	}
}

func TestNames(t *testing.T) {
	long := strings.Repeat("l", 150)
	deep := strings.Repeat("d", 200) + "/" + strings.Repeat("e", 200) + "/" + long
	ents := []ent{
		{name: long + "-gnu", body: "gnu", format: tar.FormatGNU},
		{name: long + "-pax", body: "pax", format: tar.FormatPAX},
		{name: deep, body: "deep", format: tar.FormatPAX},
		{name: "héllo wörld.txt", body: "unicode", format: tar.FormatPAX},
		{name: "日本語/ファイル", body: "cjk", format: tar.FormatGNU},
		{name: `quote"and'back\slash`, body: "q"},
		{name: "empty", body: ""},
		{name: "hl-" + long, typ: tar.TypeLink, link: deep, format: tar.FormatPAX},
	}
	_, s := apply(t, false, layerTar(t, ents...))
	for _, e := range ents {
		want := e.body
		if e.typ == tar.TypeLink {
			want = "deep"
		}
		if got := readFile(t, filepath.Join(s.root, e.name)); got != want {
			t.Errorf("%q = %q, want %q", e.name, got, want)
		}
	}
}

func TestMetadataOnHost(t *testing.T) {
	mtime := time.Unix(1_234_567_890, 0)
	tr, s := apply(t, false, layerTar(t,
		ent{name: "etc", typ: tar.TypeDir, mode: 0o755, mtime: mtime},
		ent{name: "etc/f", body: "f", mode: 0o640, mtime: time.Unix(1_000_000_000, 0)},
		ent{name: "suid", body: "s", mode: 0o4755},
		ent{name: "sticky", typ: tar.TypeDir, mode: 0o1777},
		ent{name: "ro", typ: tar.TypeDir, mode: 0o500},
		ent{name: "ro/inside", body: "i", mode: 0o444},
		ent{name: "none", typ: tar.TypeDir, zero: true},
		ent{name: "none/inside", body: "i"},
		ent{name: "unreadable", body: "u", zero: true},
		ent{name: "x", body: "x", xattrs: map[string]string{"user.foo": "bar"}},
	), layerTar(t,
		// Adding to etc must not change its mtime.
		ent{name: "etc/g", body: "g"},
	))
	check := func(p string, wantPerm os.FileMode, wantMtime time.Time) {
		t.Helper()
		fi, err := os.Lstat(filepath.Join(s.root, p))
		if err != nil {
			t.Fatal(err)
		}
		perm := fi.Mode() & (os.ModePerm | os.ModeSetuid | os.ModeSetgid | os.ModeSticky)
		if perm != wantPerm {
			t.Errorf("%s: mode %v, want %v", p, perm, wantPerm)
		}
		if !wantMtime.IsZero() && !fi.ModTime().Equal(wantMtime) {
			t.Errorf("%s: mtime %v, want %v", p, fi.ModTime(), wantMtime)
		}
	}
	check("etc", 0o755, mtime)
	check("etc/f", 0o640, time.Unix(1_000_000_000, 0))
	check("suid", 0o755|os.ModeSetuid, testTime)
	check("sticky", 0o777|os.ModeSticky, testTime)
	// Modes that would lock the builder out are kept open on the host
	// and fixed in the image.
	check("ro", 0o700, testTime)
	check("none", 0o700, testTime)
	check("unreadable", 0o400, testTime)
	for p, mode := range map[string]uint32{"/ro": 0o500, "/none": 0, "/unreadable": 0} {
		f, ok := fixupFor(tr, p)
		if !ok || !f.hasMode || f.mode != mode {
			t.Errorf("fixup for %s = %+v, %v; want mode %o", p, f, ok, mode)
		}
	}
	if _, ok := fixupFor(tr, "/etc/f"); ok && os.Geteuid() == 0 {
		t.Errorf("unexpected fixup for /etc/f as root")
	}
	buf := make([]byte, 16)
	n, err := syscall.Getxattr(filepath.Join(s.root, "x"), "user.foo", buf)
	f, hasFix := fixupFor(tr, "/x")
	switch {
	case err == nil && string(buf[:n]) == "bar":
	case hasFix && f.xattrs["user.foo"] == "bar":
		// The host filesystem has no user xattrs.
	default:
		t.Errorf("user.foo neither on host (%v) nor in fixups (%+v)", err, f)
	}
}

// TestFixups checks the fixups of an unprivileged build: ownership, modes
// and xattrs the host cannot hold, keyed by final path.
func TestFixups(t *testing.T) {
	tr, _ := apply(t, true,
		layerTar(t,
			ent{name: "./", typ: tar.TypeDir, mode: 0o755, mtime: time.Unix(42, 0)},
			ent{name: "root-owned", body: "r", uid: 0, gid: 0},
			ent{name: "user", body: "u", uid: 1000, gid: 1000},
			ent{name: "nobody", body: "n", uid: 65534, gid: 65534},
			ent{name: "sgid", body: "s", mode: 0o2755, gid: 5},
			ent{name: "secure", body: "s", xattrs: map[string]string{"security.capability": "\x01\x00", "trusted.t": "t"}},
			ent{name: "gone", body: "g", uid: 1000},
			ent{name: "dir", typ: tar.TypeDir, uid: 1000},
			ent{name: "dir/child", body: "c", uid: 1000},
			ent{name: "hl/a", body: "a", uid: 1000},
			ent{name: "hl/b", typ: tar.TypeLink, link: "hl/a", uid: 1000},
			ent{name: "hl/c", typ: tar.TypeLink, link: "hl/a", uid: 1000},
			ent{name: "sl", typ: tar.TypeSymlink, link: "/x", uid: 1000, xattrs: map[string]string{"trusted.s": "s"}},
		),
		layerTar(t,
			whiteout(".wh.gone"),
			whiteout(".wh.dir"),
			whiteout("hl/.wh.a"),
			ent{name: "user", body: "now root", uid: 0},
		))
	uid, gid := os.Geteuid(), os.Getegid()
	tests := []struct {
		path     string
		want     bool
		uid, gid int
		mode     int64 // -1: no mode fixup expected
		xattrs   map[string]string
	}{
		{path: "/", want: true, uid: 0, gid: 0, mode: 0o755},
		{path: "/root-owned", want: uid != 0 || gid != 0, mode: -1},
		{path: "/user", want: uid != 0 || gid != 0, mode: -1},
		{path: "/nobody", want: uid != 65534 || gid != 65534, uid: 65534, gid: 65534, mode: -1},
		{path: "/gone", want: false},
		{path: "/dir", want: false},
		{path: "/dir/child", want: false},
		{path: "/hl/a", want: false},
		// The fixup of the hard-linked inode moves to a surviving path.
		{path: "/hl/b", want: true, uid: 1000, mode: -1},
		{path: "/hl/c", want: false},
		{path: "/sl", want: true, uid: 1000, mode: -1, xattrs: map[string]string{"trusted.s": "s"}},
	}
	for _, tt := range tests {
		f, ok := fixupFor(tr, tt.path)
		if ok != tt.want {
			t.Errorf("%s: fixup present %v, want %v (%+v)", tt.path, ok, tt.want, f)
			continue
		}
		if !ok {
			continue
		}
		if !f.owner || f.uid != tt.uid || f.gid != tt.gid {
			t.Errorf("%s: owner fixup %+v, want %d:%d", tt.path, f, tt.uid, tt.gid)
		}
		if (tt.mode >= 0) != f.hasMode || (f.hasMode && int64(f.mode) != tt.mode) {
			t.Errorf("%s: mode fixup %+v, want %o", tt.path, f, tt.mode)
		}
		for k, v := range tt.xattrs {
			if f.xattrs[k] != v {
				t.Errorf("%s: xattr %s = %q, want %q", tt.path, k, f.xattrs[k], v)
			}
		}
	}
	f, _ := fixupFor(tr, "/secure")
	if f.xattrs["trusted.t"] != "t" && uid != 0 {
		t.Errorf("/secure: trusted.t not in fixups as unprivileged: %+v", f)
	}
	if f, _ := fixupFor(tr, "/sgid"); uid != 0 && f.gid != 5 {
		t.Errorf("/sgid: fixup %+v, want gid 5", f)
	}
	fixups := tr.Fixups()
	if !sort.SliceIsSorted(fixups, func(i, j int) bool { return fixups[i].Path < fixups[j].Path }) {
		t.Errorf("fixups not sorted by path")
	}
	if fixups[0].Path != "/" || fixups[0].Mtime == nil || *fixups[0].Mtime != 42 {
		t.Errorf("root fixup = %+v, want mtime 42", fixups[0])
	}
}

func TestHostile(t *testing.T) {
	tests := []struct {
		name   string
		layers [][]ent
		entry  string // the entry the error must name
	}{
		{name: "dot-dot", layers: [][]ent{{file("../x", "x")}}, entry: "../x"},
		{name: "dot-dot inside", layers: [][]ent{{file("a/../../x", "x")}}, entry: "a/../../x"},
		{name: "absolute", layers: [][]ent{{file("/abs", "x")}}, entry: "/abs"},
		{name: "absolute dir", layers: [][]ent{{dir("/etc/")}}, entry: "/etc/"},
		{name: "through symlink to outside", layers: [][]ent{{symlink("evil", "OUTSIDE"), file("evil/pwned", "x")}}, entry: "evil/pwned"},
		{name: "through symlink in a later layer", layers: [][]ent{{symlink("evil", "OUTSIDE")}, {file("evil/pwned", "x")}}, entry: "evil/pwned"},
		{name: "through symlink to dot-dot", layers: [][]ent{{symlink("up", ".."), file("up/outside/pwned", "x")}}, entry: "up/outside/pwned"},
		{name: "through symlink to dot", layers: [][]ent{{dir("d"), symlink("d/self", "."), file("d/self/x", "x")}}, entry: "d/self/x"},
		{name: "directory through symlink", layers: [][]ent{{symlink("evil", "OUTSIDE"), dir("evil/sub")}}, entry: "evil/sub"},
		{name: "symlink then dir entry then file", layers: [][]ent{{symlink("evil", "OUTSIDE")}, {file("evil/a/b", "x")}}, entry: "evil/a/b"},
		{name: "hard link escaping", layers: [][]ent{{hardlink("pw", "../../etc/passwd")}}, entry: "pw"},
		{name: "hard link absolute", layers: [][]ent{{hardlink("pw", "/etc/passwd")}}, entry: "pw"},
		{name: "hard link through symlinked parent", layers: [][]ent{{symlink("evil", "OUTSIDE"), hardlink("h", "evil/target")}}, entry: "h"},
		{name: "hard link into symlinked parent", layers: [][]ent{{file("t", "t"), symlink("evil", "OUTSIDE"), hardlink("evil/h", "t")}}, entry: "evil/h"},
		{name: "hard link to missing", layers: [][]ent{{hardlink("h", "nothing")}}, entry: "h"},
		{name: "hard link to directory", layers: [][]ent{{dir("d"), hardlink("h", "d")}}, entry: "h"},
		{name: "whiteout through symlink", layers: [][]ent{{symlink("evil", "VICTIMS")}, {whiteout("evil/.wh.victim")}}, entry: "evil/.wh.victim"},
		{name: "opaque through symlink to victims", layers: [][]ent{{symlink("evil", "VICTIMS")}, {whiteout("evil/.wh..wh..opq")}}, entry: "evil/.wh..wh..opq"},
		{name: "opaque through symlink", layers: [][]ent{{symlink("evil", "OUTSIDE"), whiteout("evil/.wh..wh..opq")}}, entry: "evil/.wh..wh..opq"},
		// The parent directory descriptor kept from the previous entry
		// must not survive the directory being replaced.
		{name: "cached parent replaced by symlink", layers: [][]ent{{dir("d"), file("d/a", "a"), symlink("d", "OUTSIDE"), file("d/pwned", "x")}}, entry: "d/pwned"},
		{name: "cached parent replaced by symlink, deep", layers: [][]ent{{dir("d/e"), file("d/e/a", "a"), symlink("d", "OUTSIDE"), file("d/e/pwned", "x")}}, entry: "d/e/pwned"},
		{name: "cached parent whited out then symlink", layers: [][]ent{{dir("d"), file("d/a", "a")}, {file("d/b", "b"), whiteout(".wh.d"), symlink("d", "OUTSIDE"), file("d/pwned", "x")}}, entry: "d/pwned"},
		{name: "file under a file", layers: [][]ent{{file("f", "f"), file("f/x", "x")}}, entry: "f/x"},
		{name: "root as a file", layers: [][]ent{{file(".", "x")}}, entry: "."},
		{name: "component too long", layers: [][]ent{{{name: strings.Repeat("n", 300), body: "x", format: tar.FormatPAX}}}, entry: strings.Repeat("n", 300)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSandbox(t)
			// A sentinel file outside, which a whiteout must not remove.
			victimDir := filepath.Join(s.base, "victims")
			if err := os.Mkdir(victimDir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(victimDir, "victim"), nil, 0o644); err != nil {
				t.Fatal(err)
			}
			tr, err := New(s.root)
			if err != nil {
				t.Fatal(err)
			}
			defer tr.Close()
			var applyErr error
			for _, l := range tt.layers {
				for i := range l {
					l[i].link = strings.ReplaceAll(l[i].link, "OUTSIDE", s.outside)
					l[i].link = strings.ReplaceAll(l[i].link, "VICTIMS", victimDir)
				}
				if applyErr = tr.Apply(context.Background(), bytes.NewReader(layerTar(t, l...))); applyErr != nil {
					break
				}
			}
			if !isEntryError(applyErr, tt.entry) {
				t.Fatalf("Apply() error = %v, want *EntryError naming %q", applyErr, tt.entry)
			}
			if !errdefs.IsInvalidArgument(applyErr) {
				t.Errorf("error %v is not InvalidArgument", applyErr)
			}
			if es, err := os.ReadDir(s.outside); err != nil || len(es) != 0 {
				t.Errorf("sentinel outside the root has %v (%v)", es, err)
			}
			if _, err := os.Stat(filepath.Join(victimDir, "victim")); err != nil {
				t.Errorf("victim outside the root: %v", err)
			}
		})
	}
}

func TestMalformedTar(t *testing.T) {
	good := layerTar(t, file("a", strings.Repeat("x", 2000)))
	tests := []struct {
		name string
		data []byte
	}{
		{"truncated in content", good[:1000]},
		{"garbage header", bytes.Repeat([]byte{0x5a}, 1024)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSandbox(t)
			tr, err := New(s.root)
			if err != nil {
				t.Fatal(err)
			}
			defer tr.Close()
			err = tr.Apply(context.Background(), bytes.NewReader(tt.data))
			if !errdefs.IsInvalidArgument(err) {
				t.Errorf("Apply() error = %v, want InvalidArgument", err)
			}
		})
	}
}

func TestNewRequiresEmptyDir(t *testing.T) {
	d := t.TempDir()
	if err := os.WriteFile(filepath.Join(d, "x"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := New(d); !errdefs.IsInvalidArgument(err) {
		t.Errorf("New(non-empty) error = %v, want InvalidArgument", err)
	}
	if _, err := New(filepath.Join(d, "missing")); err == nil {
		t.Errorf("New(missing) succeeded")
	}
}

func TestCancel(t *testing.T) {
	s := newSandbox(t)
	tr, err := New(s.root)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err = tr.Apply(ctx, bytes.NewReader(layerTar(t, file("a", "a"))))
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Apply() error = %v, want context.Canceled", err)
	}
	if es, _ := os.ReadDir(s.root); len(es) != 0 {
		t.Errorf("cancelled Apply wrote %v", es)
	}
}

func TestContentSize(t *testing.T) {
	big := strings.Repeat("x", 1<<20)
	tr, _ := apply(t, false, layerTar(t, file("big", big), file("small", "s"), hardlink("big2", "big")))
	withBig := tr.ContentSize()
	if withBig < 1<<20 || withBig > 1<<20+64<<10 {
		t.Errorf("ContentSize() = %d, want a little over 1 MiB", withBig)
	}
	if n := tr.Inodes(); n != 3 { // root, big (twice linked), small
		t.Errorf("Inodes() = %d, want 3", n)
	}
	if err := tr.Apply(context.Background(), bytes.NewReader(layerTar(t, whiteout(".wh.big"), whiteout(".wh.big2")))); err != nil {
		t.Fatal(err)
	}
	if after := tr.ContentSize(); after >= 64<<10 {
		t.Errorf("ContentSize() after deleting big = %d, want small", after)
	}
}

// zeroReader is an endless stream of zeros.
type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// TestStreaming checks that applying a layer does not hold its content in
// memory.
func TestStreaming(t *testing.T) {
	const size = 256 << 20
	pr, pw := io.Pipe()
	go func() {
		tw := tar.NewWriter(pw)
		err := tw.WriteHeader(&tar.Header{Name: "big", Typeflag: tar.TypeReg, Mode: 0o644, Size: size})
		if err == nil {
			_, err = io.CopyN(tw, zeroReader{}, size)
		}
		if err == nil {
			err = tw.Close()
		}
		pw.CloseWithError(err)
	}()
	s := newSandbox(t)
	tr, err := New(s.root)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	if err := tr.Apply(context.Background(), pr); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	// The writer goroutine allocates too; both are far below the size.
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 16<<20 {
		t.Errorf("applying a %d-byte layer allocated %d bytes", size, alloc)
	}
	fi, err := os.Stat(filepath.Join(s.root, "big"))
	if err != nil || fi.Size() != size {
		t.Errorf("big: %v, %v", fi, err)
	}
}

// TestReplacedParentDir checks that entries after a directory was replaced
// within one layer go to the new directory, not the removed one that the
// previous entry had open.
func TestReplacedParentDir(t *testing.T) {
	_, s := apply(t, false,
		layerTar(t, dir("d"), file("d/a", "a"), file("d", "file now"), dir("d"), file("d/b", "b")),
		layerTar(t, file("e/a", "a"), whiteout(".wh.e"), file("e/b", "b")))
	for p, want := range map[string]bool{"d/a": false, "d/b": true, "e/a": true, "e/b": true} {
		_, err := os.Lstat(filepath.Join(s.root, p))
		if (err == nil) != want {
			t.Errorf("%s: exists %v, want %v", p, err == nil, want)
		}
	}
}
