package update

import (
	"archive/tar"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/bangervm/banger/internal/release"
)

// FuzzUnpack: whatever the tarball, Unpack never panics and leaves in its
// directory nothing but the three binaries (all three when it succeeds).
func FuzzUnpack(f *testing.F) {
	files := build{version: "v0.2.0"}.files()
	f.Add(build{version: "v0.2.0"}.tarball(f))
	f.Add(tarGz(f, regular("banger", files["banger"]), tar.Header{Name: "bangerd", Typeflag: tar.TypeSymlink, Linkname: "/etc"}))
	f.Fuzz(func(t *testing.T, b []byte) {
		dir := t.TempDir()
		tb := filepath.Join(dir, "t.tar.gz")
		if err := os.WriteFile(tb, b, 0o600); err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(dir, "out")
		if err := os.Mkdir(out, 0o755); err != nil {
			t.Fatal(err)
		}
		err := Unpack(tb, out)
		entries, _ := os.ReadDir(out)
		for _, e := range entries {
			if !slices.Contains(release.Binaries, e.Name()) || !e.Type().IsRegular() {
				t.Fatalf("left %s (%v)", e.Name(), e.Type())
			}
		}
		if err == nil && len(entries) != len(release.Binaries) {
			t.Fatalf("succeeded with %d files", len(entries))
		}
		if left, _ := os.ReadDir(dir); len(left) != 2 {
			t.Fatalf("wrote beside its directory: %v", left)
		}
	})
}
