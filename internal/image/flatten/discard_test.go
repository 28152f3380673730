package flatten

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/bangervm/banger/internal/ext4"
	"github.com/bangervm/banger/internal/ext4/ext4test"
)

// applyDiscard is apply (privileged) with a discard directory, which it
// returns.
func applyDiscard(t *testing.T, layers ...[]byte) (*Tree, sandbox, string) {
	t.Helper()
	s := newSandbox(t)
	discard := t.TempDir()
	tr, err := New(s.root)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	if err := tr.Discard(discard); err != nil {
		t.Fatal(err)
	}
	for i, l := range layers {
		if err := tr.Apply(context.Background(), bytes.NewReader(l)); err != nil {
			t.Fatalf("apply layer %d: %v", i, err)
		}
	}
	s.checkContained(t)
	return tr, s, discard
}

// TestDiscard builds the test image with a discard directory and checks
// that it is the image built without one, and that what the layers
// removed was set aside there rather than deleted.
func TestDiscard(t *testing.T) {
	ext4test.RequireTools(t)
	tr, s, discard := applyDiscard(t, imageLayers(t)...)
	set, err := os.ReadDir(discard)
	if err != nil {
		t.Fatal(err)
	}
	// Layer 1 removes del/file, del/dir, opq/old, opq/sub, links2/a,
	// typ/file2dir, typ/dir2file and x/trusted; layer 2 opq/after. An
	// overwritten file may be rewritten in place instead.
	if len(set) < 9 {
		t.Errorf("discard directory holds %d entries, want at least the 9 removed paths", len(set))
	}
	img := filepath.Join(t.TempDir(), "rootfs.ext4")
	if err := ext4.Build(context.Background(), ext4.Options{
		Dir: s.root, Output: img, ContentBytes: tr.ContentSize(), Inodes: tr.Inodes(),
		Label: "rootfs", Fixups: tr.Fixups(),
	}); err != nil {
		t.Fatal(err)
	}
	if err := ext4test.Fsck(context.Background(), img); err != nil {
		t.Fatal(err)
	}
	checkImage(t, img)
	got, want := dumpImage(t, img), dumpImage(t, buildImage(t, false))
	for p, w := range want {
		if got[p] != w {
			t.Errorf("%s differs:\nwith discard:    %s\nwithout discard: %s", p, got[p], w)
		}
	}
}

// TestOverwriteInPlace checks that a file a later layer overwrites is
// written again in place, not replaced, unless another path links to it:
// that path keeps the old content. The discard directory shows what was
// replaced (host inode numbers do not: a new file may reuse the old one's).
func TestOverwriteInPlace(t *testing.T) {
	l1 := layerTar(t,
		ent{name: "a", body: "old a", xattrs: map[string]string{"user.old": "1"}},
		file("b", "old b"), hardlink("c", "b"), ent{name: "ro", body: "old ro", mode: 0o444})
	l2 := layerTar(t,
		ent{name: "a", body: "new a", mode: 0o4755, xattrs: map[string]string{"user.new": "2"}},
		file("b", "new b"), ent{name: "ro", body: "new ro", mode: 0o400})
	tr, s, discard := applyDiscard(t, l1, l2)
	for p, want := range map[string]string{"a": "new a", "b": "new b", "c": "old b", "ro": "new ro"} {
		if got := readFile(t, filepath.Join(s.root, p)); got != want {
			t.Errorf("%s holds %q, want %q", p, got, want)
		}
	}
	set, err := os.ReadDir(discard)
	if err != nil {
		t.Fatal(err)
	}
	var replaced []string
	for _, e := range set {
		replaced = append(replaced, readFile(t, filepath.Join(discard, e.Name())))
	}
	// Without root, a read-only file cannot be opened for writing and
	// is replaced instead.
	want := []string{"old b"}
	if os.Geteuid() != 0 {
		want = append(want, "old ro")
	}
	slices.Sort(replaced)
	if !slices.Equal(replaced, want) {
		t.Errorf("discard directory holds %q, want %q", replaced, want)
	}
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(s.root, "a"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode&0o7777 != 0o4755 {
		t.Errorf("a has mode %o, want 4755", st.Mode&0o7777)
	}
	if _, err := unix.Getxattr(filepath.Join(s.root, "a"), "user.old", nil); err == nil {
		t.Errorf("a kept the xattr of the file it replaced")
	}
	if f, ok := fixupFor(tr, "/a"); ok && (f.hasMode || len(f.xattrs) > 0) {
		t.Errorf("a has fixup %+v, want none", f)
	}
	s.checkContained(t)
}
