package flatten

import (
	"archive/tar"
	"context"
	"fmt"
	"maps"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bangervm/banger/internal/ext4"
	"github.com/bangervm/banger/internal/ext4/ext4test"
)

var (
	rootTime = time.Unix(1_500_000_000, 0)
	etcTime  = time.Unix(1_400_000_000, 0)
	// capBlob is a valid VFS_CAP_REVISION_2 security.capability value
	// (cap_net_bind_service), which the kernel stores unchanged.
	capBlob    = "\x01\x00\x00\x02\x00\x04\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
	longName   = "long/" + strings.Repeat("l", 150)
	deepName   = "long/" + strings.Repeat("d", 200) + "/" + strings.Repeat("e", 100) + "/deep"
	longTarget = "/" + strings.Repeat("t", 99)
)

// imageLayers covers every kind of entry and change a layer can hold.
func imageLayers(t testing.TB) [][]byte {
	return [][]byte{
		layerTar(t,
			ent{name: "./", typ: tar.TypeDir, mode: 0o755, mtime: rootTime},
			ent{name: "etc/", typ: tar.TypeDir, mode: 0o755, mtime: etcTime},
			file("etc/passwd", "old passwd\n"),
			ent{name: "usr/bin/passwd", body: "suid", mode: 0o4755},
			ent{name: "usr/bin/wall", body: "sgid", mode: 0o2755, gid: 5},
			ent{name: "tmp/", typ: tar.TypeDir, mode: 0o1777},
			ent{name: "home/user/", typ: tar.TypeDir, mode: 0o750, uid: 1000, gid: 1000},
			ent{name: "home/user/file", body: "mine", mode: 0o600, uid: 1000, gid: 1000},
			ent{name: "nobody", body: "n", uid: 65534, gid: 65534},
			ent{name: "secret/", typ: tar.TypeDir, mode: 0o500},
			ent{name: "secret/inner", body: "hidden", zero: true},
			ent{name: "locked/", typ: tar.TypeDir, zero: true},
			file("locked/f", "f"),
			ent{name: "zero", body: "z", zero: true},
			file("empty", ""),
			ent{name: "x/user", body: "u", xattrs: map[string]string{"user.foo": "bar"}},
			ent{name: "x/sec", body: "s", xattrs: map[string]string{"security.capability": capBlob}},
			ent{name: "x/trusted", body: "t", xattrs: map[string]string{"trusted.overlay.opaque": "y"}},
			ent{name: "x/dir/", typ: tar.TypeDir, xattrs: map[string]string{"user.d": "dir", "trusted.d": "tdir"}},
			ent{name: "links/target", body: "old content", uid: 1000, gid: 1000},
			// Like containerd, a link entry's metadata applies to the inode,
			// so it repeats the target's as tar writers do.
			ent{name: "links/hard", typ: tar.TypeLink, link: "links/target", uid: 1000, gid: 1000},
			ent{name: "links/hard2", typ: tar.TypeLink, link: "links/hard", uid: 1000, gid: 1000},
			symlink("links/abs", "/etc/passwd"),
			symlink("links/rel", "../etc/passwd"),
			symlink("links/long", longTarget),
			ent{name: "links/owned", typ: tar.TypeSymlink, link: "x", uid: 1000, gid: 1000},
			ent{name: "links2/a", body: "a", uid: 1000},
			ent{name: "links2/b", typ: tar.TypeLink, link: "links2/a", uid: 1000},
			file("del/file", "x"), file("del/dir/sub/f", "x"),
			file("opq/old", "x"), file("opq/sub/deep", "x"), dir("opq/keep/"), file("opq/keep/lower", "x"),
			file("typ/file2dir", "x"), dir("typ/dir2file/"), file("typ/dir2file/child", "x"),
			dir("typ/dirdir/"), file("typ/dirdir/child", "kept"),
			ent{name: longName, body: "gnu", format: tar.FormatGNU},
			ent{name: deepName, body: "pax", format: tar.FormatPAX},
			file("héllo wörld.txt", "unicode"),
			file(`say "hi"`, "quoted"),
			file("sp ace", ""),
			ent{name: "dev/null", typ: tar.TypeChar},
			ent{name: "dev/fifo", typ: tar.TypeFifo},
		),
		layerTar(t,
			whiteout("del/.wh.file"), whiteout("del/.wh.dir"),
			file("opq/before", "before"), dir("opq/keep/"), whiteout("opq/.wh..wh..opq"), file("opq/after", "after"),
			file("links/target", "new content"),
			whiteout("links2/.wh.a"),
			dir("typ/file2dir/"), file("typ/file2dir/child", "c"), file("typ/dir2file", "file now"),
			ent{name: "typ/dirdir/", typ: tar.TypeDir, mode: 0o700, uid: 1000},
			file("etc/passwd", "new passwd\n"),
			whiteout("x/.wh.trusted"),
		),
		layerTar(t, whiteout("opq/.wh.after")),
	}
}

// want is what one path of the image must hold; zero fields are checked
// as zero except where noted.
type want struct {
	typ      string // "regular" when empty
	perm     uint32 // 0644, 0755 for directories, 0777 for symlinks when 0
	zeroPerm bool
	uid, gid uint32
	content  *string // regular files
	link     string
	links    int // 1 when 0 (2+ for directories: not checked)
	xattrs   map[string]string
	mtime    time.Time // testTime when zero
}

func str(s string) *string { return &s }

var imageWant = map[string]want{
	"/":                                {typ: "directory", mtime: rootTime},
	"/etc":                             {typ: "directory", mtime: etcTime},
	"/etc/passwd":                      {content: str("new passwd\n")},
	"/usr":                             {typ: "directory"},
	"/usr/bin":                         {typ: "directory"},
	"/usr/bin/passwd":                  {perm: 0o4755, content: str("suid")},
	"/usr/bin/wall":                    {perm: 0o2755, gid: 5, content: str("sgid")},
	"/tmp":                             {typ: "directory", perm: 0o1777},
	"/home/user":                       {typ: "directory", perm: 0o750, uid: 1000, gid: 1000},
	"/home/user/file":                  {perm: 0o600, uid: 1000, gid: 1000, content: str("mine")},
	"/nobody":                          {uid: 65534, gid: 65534, content: str("n")},
	"/secret":                          {typ: "directory", perm: 0o500},
	"/secret/inner":                    {zeroPerm: true, content: str("hidden")},
	"/locked":                          {typ: "directory", zeroPerm: true},
	"/locked/f":                        {content: str("f")},
	"/zero":                            {zeroPerm: true, content: str("z")},
	"/empty":                           {content: str("")},
	"/x/user":                          {content: str("u"), xattrs: map[string]string{"user.foo": "bar"}},
	"/x/sec":                           {content: str("s"), xattrs: map[string]string{"security.capability": capBlob}},
	"/x/dir":                           {typ: "directory", xattrs: map[string]string{"user.d": "dir", "trusted.d": "tdir"}},
	"/links/target":                    {content: str("new content")},
	"/links/hard":                      {uid: 1000, gid: 1000, content: str("old content"), links: 2},
	"/links/hard2":                     {uid: 1000, gid: 1000, content: str("old content"), links: 2},
	"/links/abs":                       {typ: "symlink", link: "/etc/passwd"},
	"/links/rel":                       {typ: "symlink", link: "../etc/passwd"},
	"/links/long":                      {typ: "symlink", link: longTarget},
	"/links/owned":                     {typ: "symlink", link: "x", uid: 1000, gid: 1000},
	"/links2/b":                        {uid: 1000, content: str("a")},
	"/del":                             {typ: "directory"},
	"/opq":                             {typ: "directory"},
	"/opq/before":                      {content: str("before")},
	"/opq/keep":                        {typ: "directory"},
	"/typ/file2dir":                    {typ: "directory"},
	"/typ/file2dir/child":              {content: str("c")},
	"/typ/dir2file":                    {content: str("file now")},
	"/typ/dirdir":                      {typ: "directory", perm: 0o700, uid: 1000},
	"/typ/dirdir/child":                {content: str("kept")},
	"/" + longName:                     {content: str("gnu")},
	"/" + deepName:                     {content: str("pax")},
	"/héllo wörld.txt":                 {content: str("unicode")},
	`/say "hi"`:                        {content: str("quoted")},
	"/sp ace":                          {content: str("")},
	"/dev":                             {typ: "directory"},
	"/lost+found":                      {}, // made by mke2fs; not checked
	"/long":                            {typ: "directory"},
	"/x":                               {typ: "directory"},
	"/links":                           {typ: "directory"},
	"/links2":                          {typ: "directory"},
	"/typ":                             {typ: "directory"},
	"/home":                            {typ: "directory"},
	"/" + path.Dir(deepName):           {typ: "directory"},
	"/" + path.Dir(path.Dir(deepName)): {typ: "directory"},
}

// buildImage flattens the test layers and builds an ext4 image of them.
func buildImage(t *testing.T, unprivileged bool) string {
	t.Helper()
	tr, s := apply(t, unprivileged, imageLayers(t)...)
	img := filepath.Join(t.TempDir(), "rootfs.ext4")
	err := ext4.Build(context.Background(), ext4.Options{
		Dir:          s.root,
		Output:       img,
		ContentBytes: tr.ContentSize(),
		Inodes:       tr.Inodes(),
		Label:        "rootfs",
		Fixups:       tr.Fixups(),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := ext4test.Fsck(context.Background(), img); err != nil {
		t.Fatal(err)
	}
	return img
}

// TestImage flattens layers covering every case and checks the ext4 image
// attribute by attribute with debugfs, for a privileged build (when run
// as root) and an unprivileged one, which must give the same image.
func TestImage(t *testing.T) {
	ext4test.RequireTools(t)
	var mu sync.Mutex
	dumps := map[bool]map[string]string{}
	// The group returns once both parallel builds are done.
	t.Run("build", func(t *testing.T) {
		for _, unprivileged := range []bool{false, true} {
			t.Run(fmt.Sprintf("unprivileged=%v", unprivileged), func(t *testing.T) {
				t.Parallel()
				img := buildImage(t, unprivileged)
				checkImage(t, img)
				d := dumpImage(t, img)
				mu.Lock()
				dumps[unprivileged] = d
				mu.Unlock()
			})
		}
	})
	a, b := dumps[false], dumps[true]
	if a == nil || b == nil {
		return
	}
	for _, p := range slices.Sorted(maps.Keys(a)) {
		if a[p] != b[p] {
			t.Errorf("%s differs:\nprivileged:   %s\nunprivileged: %s", p, a[p], b[p])
		}
	}
	if len(a) != len(b) {
		t.Errorf("privileged image has %d paths, unprivileged %d", len(a), len(b))
	}
}

func checkImage(t *testing.T, img string) {
	ctx := context.Background()
	for p, w := range imageWant {
		if p == "/lost+found" {
			continue
		}
		in, err := ext4test.Stat(ctx, img, p)
		if err != nil {
			t.Errorf("%s: %v", p, err)
			continue
		}
		typ, perm := w.typ, w.perm
		if typ == "" {
			typ = "regular"
		}
		if perm == 0 && !w.zeroPerm {
			perm = map[string]uint32{"regular": 0o644, "directory": 0o755, "symlink": 0o777}[typ]
		}
		if in.Type != typ || in.Perm != perm || in.UID != w.uid || in.GID != w.gid {
			t.Errorf("%s: %s %04o %d:%d, want %s %04o %d:%d", p, in.Type, in.Perm, in.UID, in.GID, typ, perm, w.uid, w.gid)
		}
		mtime := w.mtime
		if mtime.IsZero() {
			mtime = testTime
		}
		if in.Mtime != mtime.Unix() {
			t.Errorf("%s: mtime %d, want %d", p, in.Mtime, mtime.Unix())
		}
		if links := max(w.links, 1); typ != "directory" && in.Links != links {
			t.Errorf("%s: %d links, want %d", p, in.Links, links)
		}
		if w.content != nil {
			got, err := ext4test.Cat(ctx, img, p)
			if err != nil || string(got) != *w.content {
				t.Errorf("%s: content %q (%v), want %q", p, got, err, *w.content)
			}
		}
		if typ == "symlink" {
			got, err := ext4test.Readlink(ctx, img, p)
			if err != nil || got != w.link {
				t.Errorf("%s: link %q (%v), want %q", p, got, err, w.link)
			}
		}
		xs, err := ext4test.Xattrs(ctx, img, p)
		if err != nil {
			t.Errorf("%s: xattrs: %v", p, err)
		}
		gotX := map[string]string{}
		for k, v := range xs {
			gotX[k] = string(v)
		}
		if w.xattrs == nil {
			w.xattrs = map[string]string{}
		}
		if !maps.Equal(gotX, w.xattrs) {
			t.Errorf("%s: xattrs %q, want %q", p, gotX, w.xattrs)
		}
	}
	h1, _ := ext4test.Stat(ctx, img, "/links/hard")
	h2, _ := ext4test.Stat(ctx, img, "/links/hard2")
	tg, _ := ext4test.Stat(ctx, img, "/links/target")
	if h1.Ino != h2.Ino || h1.Ino == tg.Ino {
		t.Errorf("inodes: hard %d, hard2 %d, target %d; want hard = hard2 != target", h1.Ino, h2.Ino, tg.Ino)
	}
	// Nothing else is in the image: no whiteouts, nothing deleted, no
	// devices.
	var walk func(dir string)
	walk = func(dir string) {
		es, err := ext4test.List(ctx, img, dir)
		if err != nil {
			t.Errorf("list %s: %v", dir, err)
			return
		}
		for _, e := range es {
			p := path.Join(dir, e.Name)
			w, ok := imageWant[p]
			if !ok {
				t.Errorf("unexpected %s in image", p)
				continue
			}
			if w.typ == "directory" {
				walk(p)
			}
		}
	}
	walk("/")
}

// dumpImage returns every path's stat (without inode number and change
// times) and xattrs, for comparing two images.
func dumpImage(t *testing.T, img string) map[string]string {
	ctx := context.Background()
	out := map[string]string{}
	for p := range imageWant {
		in, err := ext4test.Stat(ctx, img, p)
		if err != nil {
			t.Fatal(err)
		}
		xs, _ := ext4test.Xattrs(ctx, img, p)
		in.Ino = 0
		if p == "/lost+found" {
			in.Mtime = 0
		}
		out[p] = fmt.Sprintf("%+v %q", in, xs)
	}
	return out
}
