package vmtemplate

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/bangervm/banger/errdefs"
)

func testKey(t *testing.T, dir string) Key {
	t.Helper()
	var k Key
	for name, p := range map[string]*FileID{"agent": &k.Agent, "image": &k.Image} {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(name), 0o600); err != nil {
			t.Fatal(err)
		}
		id, err := StatFile(path)
		if err != nil {
			t.Fatal(err)
		}
		*p = id
	}
	k.Engine, k.VCPU, k.MemoryMiB, k.Disks = "qemu", 1, 256, []int64{1 << 20, 1 << 30}
	return k
}

func make1(t *testing.T, s *Store, k Key) Template {
	t.Helper()
	p, err := s.Create(k)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(p.Dir, "state"), []byte("s"), 0o600)
	os.WriteFile(filepath.Join(p.Dir, "scratch"), []byte("x"), 0o600)
	tm, err := p.Commit("scratch")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(tm.Dir, "scratch")); err == nil {
		t.Errorf("Commit kept a file it was told to remove")
	}
	return tm
}

// TestKeyMatch: a template is found only by the key it was made for, and
// no longer once a file it names changes; the shape is part of the key.
func TestKeyMatch(t *testing.T) {
	dir := t.TempDir()
	s := New(filepath.Join(dir, "templates"), 0)
	k := testKey(t, dir)
	if _, err := s.Get(k); !errdefs.IsNotFound(err) {
		t.Fatalf("Get on an empty store: %v, want NotFound", err)
	}
	tm := make1(t, s, k)
	got, err := s.Get(k)
	if err != nil || got.ID != tm.ID || got.Dir != tm.Dir {
		t.Fatalf("Get = %+v, %v; want %s", got, err, tm.ID)
	}
	other := k
	other.MemoryMiB = 512
	if _, err := s.Get(other); !errdefs.IsNotFound(err) {
		t.Errorf("a template of 256 MiB matched a 512 MiB VM: %v", err)
	}
	nic := k
	nic.NIC = true
	if nic.ID() == k.ID() {
		t.Errorf("NIC is not part of the key")
	}
	if _, err := s.Create(k); !errdefs.IsAlreadyExists(err) {
		t.Errorf("second Create: %v, want AlreadyExists", err)
	}

	// A new agent build: the template is stale, and Prune removes it.
	future := time.Now().Add(time.Hour)
	os.Chtimes(k.Agent.Path, future, future)
	if _, err := s.Get(k); !errdefs.IsNotFound(err) {
		t.Errorf("Get after the agent changed: %v, want NotFound", err)
	}
	removed, err := s.Prune(nil)
	if err != nil || len(removed) != 1 || removed[0] != tm.ID {
		t.Errorf("Prune = %v, %v; want [%s]", removed, err, tm.ID)
	}
}

// TestListRemovePrune: list shows complete templates only; rm takes an id
// prefix and refuses paths; prune removes unfinished directories but not
// busy ones.
func TestListRemovePrune(t *testing.T) {
	dir := t.TempDir()
	s := New(filepath.Join(dir, "templates"), 0)
	k := testKey(t, dir)
	tm := make1(t, s, k)
	busy, err := s.Create(Key{Engine: "other"})
	if err != nil {
		t.Fatal(err)
	}
	stale, err := s.Create(Key{Engine: "crashed"})
	if err != nil {
		t.Fatal(err)
	}
	list, err := s.List()
	if err != nil || len(list) != 1 || list[0].ID != tm.ID || list[0].SizeBytes == 0 {
		t.Fatalf("List = %+v, %v", list, err)
	}
	if u := s.Unfinished(); len(u) != 2 {
		t.Errorf("Unfinished = %v, want the two being made", u)
	}
	removed, err := s.Prune(func(d string) bool { return d == busy.Dir })
	if err != nil || len(removed) != 1 || removed[0] != filepath.Base(stale.Dir) {
		t.Errorf("Prune = %v, %v; want only the unfinished %s", removed, err, stale.Dir)
	}
	if _, err := os.Stat(busy.Dir); err != nil {
		t.Errorf("Prune removed a template being made: %v", err)
	}
	for _, bad := range []string{"../..", "ab", ""} {
		if err := s.Remove(bad); err == nil {
			t.Errorf("Remove(%q) succeeded", bad)
		}
	}
	if err := s.Remove(tm.ID[:6]); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(k); !errdefs.IsNotFound(err) {
		t.Errorf("Get after Remove: %v", err)
	}
}

// TestTrimLeastRecentlyUsed: over its cap, the store removes the least
// recently used templates first (a template's use is Touch, else its
// making), until the rest fit; the template just made is kept even when
// it alone is over the cap; no cap removes nothing.
func TestTrimLeastRecentlyUsed(t *testing.T) {
	dir := t.TempDir()
	k := testKey(t, dir)
	s := New(filepath.Join(dir, "templates"), 0)
	mk := func(vcpu int) Template {
		kk := k
		kk.VCPU = vcpu
		p, err := s.Create(kk)
		if err != nil {
			t.Fatal(err)
		}
		mem := make([]byte, 256<<10)
		for i := range mem {
			mem[i] = byte(i) | 1
		}
		os.WriteFile(filepath.Join(p.Dir, "memory"), mem, 0o600)
		tm, err := p.Commit()
		if err != nil {
			t.Fatal(err)
		}
		return tm
	}
	a, b, c := mk(1), mk(2), mk(3)
	base := time.Now().Add(-10 * time.Hour)
	used := func(tm Template, at time.Time) {
		t.Helper()
		if err := s.Touch(tm.ID); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(filepath.Join(tm.Dir, UsedFile), at, at); err != nil {
			t.Fatal(err)
		}
	}
	// Made a, b, c; then c used, a used: least recently used first is b,
	// then c, then a.
	used(b, base)
	used(c, base.Add(time.Hour))
	used(a, base.Add(2*time.Hour))
	d := mk(4)

	if removed, err := s.Trim(d.ID); err != nil || len(removed) != 0 {
		t.Errorf("Trim with no cap = %v, %v; want nothing removed", removed, err)
	}
	// Room for d and one more: b then c go, a (most recently used) stays.
	s.max = d.SizeBytes + a.SizeBytes + a.SizeBytes/2
	removed, err := s.Trim(d.ID)
	if err != nil || len(removed) != 2 || removed[0] != b.ID || removed[1] != c.ID {
		t.Errorf("Trim = %v, %v; want [%s %s] (b, then c)", removed, err, b.ID, c.ID)
	}
	list, _ := s.List()
	if len(list) != 2 {
		t.Errorf("after Trim: %+v; want a and d", list)
	}
	// A cap below the new template alone: all others go, it stays.
	s.max = 1
	if removed, err := s.Trim(d.ID); err != nil || len(removed) != 1 || removed[0] != a.ID {
		t.Errorf("Trim under a tiny cap = %v, %v; want [%s]", removed, err, a.ID)
	}
	if list, _ := s.List(); len(list) != 1 || list[0].ID != d.ID {
		t.Errorf("after Trim under a tiny cap: %+v; want d alone", list)
	}
}
