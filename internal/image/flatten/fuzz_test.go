package flatten

import (
	"archive/tar"
	"bytes"
	"context"
	"testing"
)

// FuzzApply feeds arbitrary bytes to Apply, twice so that the second pass
// meets the first as a lower layer. Apply may fail but must not panic or
// write anything outside the root.
func FuzzApply(f *testing.F) {
	for _, l := range imageLayers(f) {
		f.Add(l)
	}
	for _, ents := range [][]ent{
		{file("../x", "x")},
		{file("a/../../x", "x")},
		{file("/abs", "x")},
		{symlink("evil", "../outside"), file("evil/pwned", "x")},
		{symlink("up", ".."), file("up/outside/pwned", "x")},
		{symlink("abs", "/tmp"), dir("abs/d")},
		{hardlink("pw", "../../etc/passwd")},
		{symlink("evil", "../outside"), hardlink("h", "evil/x")},
		{dir("d"), file("d/f", "f"), whiteout("d/.wh..wh..opq"), whiteout(".wh.d"), hardlink("d/g", "d/f")},
		{ent{name: "dir", typ: tar.TypeDir, zero: true}, file("dir/f", "f"), ent{name: "f", body: "x", zero: true}},
	} {
		f.Add(layerTar(f, ents...))
	}
	f.Fuzz(func(t *testing.T, data []byte) { applyTwice(t, data, "") })
}

// FuzzApplyDiscard is FuzzApply with a discard directory: what the second
// pass replaces is renamed there, and nothing else may appear outside the
// root.
func FuzzApplyDiscard(f *testing.F) {
	for _, l := range imageLayers(f) {
		f.Add(l)
	}
	f.Add(layerTar(f, dir("d"), file("d/f", "f"), whiteout("d/.wh..wh..opq"), whiteout(".wh.d"), hardlink("d/g", "d/f")))
	f.Fuzz(func(t *testing.T, data []byte) { applyTwice(t, data, t.TempDir()) })
}

// applyTwice applies data as two layers, with a discard directory unless
// discard is empty, and checks that nothing was written outside the root
// (or the discard directory).
func applyTwice(t *testing.T, data []byte, discard string) {
	s := newSandbox(t)
	tr, err := New(s.root)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	if discard != "" {
		if err := tr.Discard(discard); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		if err := tr.Apply(context.Background(), bytes.NewReader(data)); err != nil {
			break
		}
	}
	_ = tr.Fixups()
	_ = tr.ContentSize()
	s.checkContained(t)
}
