package ext4_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/ext4"
	"github.com/bangervm/banger/internal/ext4/ext4test"
)

func TestAutoSize(t *testing.T) {
	const gib, mib = 1 << 30, 1 << 20
	tests := []struct {
		content, want int64
	}{
		{0, gib},
		{100 * mib, gib},
		{gib / 3 * 2, gib},
		{gib, gib + gib/2},
		{10 * gib, 15 * gib},
		{gib + 1, gib + gib/2 + mib}, // 1.5 GiB + 1.5 bytes, rounded up
	}
	for _, tt := range tests {
		got := ext4.AutoSize(tt.content)
		if got != tt.want {
			t.Errorf("AutoSize(%d) = %d, want %d", tt.content, got, tt.want)
		}
		if got%mib != 0 {
			t.Errorf("AutoSize(%d) = %d, not a multiple of 1 MiB", tt.content, got)
		}
	}
}

func u32(v uint32) *uint32 { return &v }
func i64(v int64) *int64   { return &v }

// nastyNames are file names a debugfs script must quote correctly.
var nastyNames = []string{
	"héllo wörld.txt",
	`say "hi"`,
	"two  spaces",
	"tab\there",
	`back\slash`,
	"#hash",
	"-dash",
	"<12>",
	"'single'",
}

func TestBuild(t *testing.T) {
	ext4test.RequireTools(t)
	ctx := context.Background()
	dir := t.TempDir()
	mustWrite(t, filepath.Join(dir, "plain"), "plain")
	for _, n := range nastyNames {
		mustWrite(t, filepath.Join(dir, n), n)
	}
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc/passwd", filepath.Join(dir, "sub", "link")); err != nil {
		t.Fatal(err)
	}
	binary := []byte{0, 1, 0xff, '"', '\n'}
	var fixups []ext4.Fixup
	fixups = append(fixups,
		ext4.Fixup{Path: "/", UID: u32(0), GID: u32(0), Mode: u32(0o700), Mtime: i64(1_000_000_000)},
		ext4.Fixup{Path: "/plain", UID: u32(100000), GID: u32(65534), Mode: u32(0o4750),
			Xattrs: map[string][]byte{"security.capability": binary, "trusted.t": []byte("t"), "user.empty": {}}},
		ext4.Fixup{Path: "/sub", Mode: u32(0o1777)},
		ext4.Fixup{Path: "/sub/link", UID: u32(7), Xattrs: map[string][]byte{"trusted.l": []byte("l")}},
	)
	for i, n := range nastyNames {
		fixups = append(fixups, ext4.Fixup{Path: "/" + n, UID: u32(uint32(1000 + i)),
			Xattrs: map[string][]byte{"user.name " + n: []byte(n)}})
	}
	img := filepath.Join(t.TempDir(), "out.ext4")
	err := ext4.Build(ctx, ext4.Options{Dir: dir, Output: img, SizeBytes: 64 << 20, Label: "test", Fixups: fixups})
	if err != nil {
		t.Fatal(err)
	}
	if err := ext4test.Fsck(ctx, img); err != nil {
		t.Fatal(err)
	}

	fi, err := os.Stat(img)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() != 64<<20 {
		t.Errorf("image size %d, want %d", fi.Size(), 64<<20)
	}
	if alloc := fi.Sys().(*syscall.Stat_t).Blocks * 512; alloc > fi.Size()/2 {
		t.Errorf("image allocates %d of %d bytes, want it sparse", alloc, fi.Size())
	}

	type want struct {
		path     string
		typ      string
		perm     uint32
		uid, gid uint32
		mtime    int64 // 0: not checked
	}
	myGID := uint32(os.Getgid())
	wants := []want{
		{"/", "directory", 0o700, 0, 0, 1_000_000_000},
		{"/plain", "regular", 0o4750, 100000, 65534, 0},
		{"/sub", "directory", 0o1777, uint32(os.Getuid()), myGID, 0},
		{"/sub/link", "symlink", 0o777, 7, myGID, 0},
	}
	for i, n := range nastyNames {
		wants = append(wants, want{"/" + n, "regular", 0o644, uint32(1000 + i), myGID, 0})
	}
	for _, w := range wants {
		in, err := ext4test.Stat(ctx, img, w.path)
		if err != nil {
			t.Errorf("stat %q: %v", w.path, err)
			continue
		}
		if in.Type != w.typ || in.Perm != w.perm || in.UID != w.uid || in.GID != w.gid {
			t.Errorf("%q: %s %o %d:%d, want %s %o %d:%d", w.path, in.Type, in.Perm, in.UID, in.GID, w.typ, w.perm, w.uid, w.gid)
		}
		if w.mtime != 0 && in.Mtime != w.mtime {
			t.Errorf("%q: mtime %d, want %d", w.path, in.Mtime, w.mtime)
		}
	}
	xs, err := ext4test.Xattrs(ctx, img, "/plain")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(xs["security.capability"], binary) || string(xs["trusted.t"]) != "t" {
		t.Errorf("xattrs of /plain = %q", xs)
	}
	if v, ok := xs["user.empty"]; !ok || len(v) != 0 {
		t.Errorf("user.empty = %q, %v; want empty and present", v, ok)
	}
	for _, n := range nastyNames {
		got, err := ext4test.Cat(ctx, img, "/"+n)
		if err != nil || string(got) != n {
			t.Errorf("cat %q = %q, %v", n, got, err)
		}
		xs, err := ext4test.Xattrs(ctx, img, "/"+n)
		if err != nil || string(xs["user.name "+n]) != n {
			t.Errorf("xattrs of %q = %q, %v", n, xs, err)
		}
	}
	if target, err := ext4test.Readlink(ctx, img, "/sub/link"); err != nil || target != "/etc/passwd" {
		t.Errorf("readlink = %q, %v", target, err)
	}
}

func TestBuildErrors(t *testing.T) {
	ext4test.RequireTools(t)
	ctx := context.Background()
	big := t.TempDir()
	f, err := os.Create(filepath.Join(big, "big"))
	if err != nil {
		t.Fatal(err)
	}
	// Real data, not a hole: mke2fs keeps holes.
	if _, err := f.Write(bytes.Repeat([]byte{1}, 24<<20)); err != nil {
		t.Fatal(err)
	}
	f.Close()
	small := t.TempDir()
	mustWrite(t, filepath.Join(small, "f"), "x")
	existing := filepath.Join(t.TempDir(), "exists.ext4")
	mustWrite(t, existing, "keep me")

	tests := []struct {
		name       string
		opts       ext4.Options
		wantErr    string
		invalidArg bool
	}{
		{name: "too small", opts: ext4.Options{Dir: big, SizeBytes: 16 << 20},
			wantErr: "too small", invalidArg: true},
		{name: "newline in fixup path", opts: ext4.Options{Dir: small, SizeBytes: 16 << 20,
			Fixups: []ext4.Fixup{{Path: "/a\nb", UID: u32(1)}}}, wantErr: "newline", invalidArg: true},
		{name: "relative fixup path", opts: ext4.Options{Dir: small, SizeBytes: 16 << 20,
			Fixups: []ext4.Fixup{{Path: "f", UID: u32(1)}}}, wantErr: "absolute", invalidArg: true},
		{name: "fixup path too long for debugfs", opts: ext4.Options{Dir: small, SizeBytes: 16 << 20,
			Fixups: []ext4.Fixup{{Path: strings.Repeat("/"+strings.Repeat("c", 250), 40), UID: u32(1)}}},
			wantErr: "line limit", invalidArg: true},
		{name: "fixup for a missing path", opts: ext4.Options{Dir: small, SizeBytes: 16 << 20,
			Fixups: []ext4.Fixup{{Path: "/missing", UID: u32(1)}}}, wantErr: "File not found"},
		{name: "no dir", opts: ext4.Options{Dir: filepath.Join(small, "nope")}, wantErr: "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out.ext4")
			tt.opts.Output = out
			err := ext4.Build(ctx, tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Build() error = %v, want %q", err, tt.wantErr)
			}
			if tt.invalidArg && !errdefs.IsInvalidArgument(err) {
				t.Errorf("Build() error %v is not InvalidArgument", err)
			}
			if _, err := os.Lstat(out); !os.IsNotExist(err) {
				t.Errorf("output left behind after error: %v", err)
			}
		})
	}

	t.Run("output exists", func(t *testing.T) {
		err := ext4.Build(ctx, ext4.Options{Dir: small, Output: existing, SizeBytes: 16 << 20})
		if err == nil {
			t.Fatal("Build() over an existing file succeeded")
		}
		if b, _ := os.ReadFile(existing); string(b) != "keep me" {
			t.Errorf("existing file changed to %q", b)
		}
	})

	t.Run("cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(ctx)
		cancel()
		out := filepath.Join(t.TempDir(), "out.ext4")
		if err := ext4.Build(ctx, ext4.Options{Dir: small, Output: out, SizeBytes: 16 << 20}); err == nil {
			t.Fatal("Build() with a cancelled context succeeded")
		}
		if _, err := os.Lstat(out); !os.IsNotExist(err) {
			t.Errorf("output left behind after cancel: %v", err)
		}
	})
}

func mustWrite(t *testing.T, p, s string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}
