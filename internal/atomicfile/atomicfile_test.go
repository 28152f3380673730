package atomicfile

import (
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
)

func entries(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, de := range des {
		names = append(names, de.Name())
	}
	return names
}

func write(t *testing.T, target, content string) error {
	t.Helper()
	f, err := Create(target, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.WriteString(content); err != nil {
		t.Fatal(err)
	}
	return f.Commit()
}

func TestCreateCommit(t *testing.T) {
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	dir := t.TempDir()
	target := filepath.Join(dir, "out.patch")
	if err := write(t, target, "one\n"); err != nil {
		t.Fatal(err)
	}
	if err := write(t, target, "two\n"); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(target)
	if err != nil || string(b) != "two\n" {
		t.Fatalf("target = %q, %v", b, err)
	}
	if st, _ := os.Stat(target); st.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644", st.Mode().Perm())
	}
	if got := entries(t, dir); !slices.Equal(got, []string{"out.patch"}) {
		t.Errorf("directory holds %q, want only the target", got)
	}
}

// A symlink planted at the target is replaced, not written through.
func TestPlantedSymlinkReplaced(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(t.TempDir(), "victim")
	if err := os.WriteFile(victim, []byte("keep\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(dir, "out.patch")
	if err := os.Symlink(victim, target); err != nil {
		t.Fatal(err)
	}
	if err := write(t, target, "new\n"); err != nil {
		t.Fatal(err)
	}
	st, err := os.Lstat(target)
	if err != nil || !st.Mode().IsRegular() {
		t.Fatalf("target: %v %v, want a regular file", st, err)
	}
	if b, _ := os.ReadFile(victim); string(b) != "keep\n" {
		t.Errorf("victim = %q: written through the symlink", b)
	}
	if b, _ := os.ReadFile(target); string(b) != "new\n" {
		t.Errorf("target = %q", b)
	}
	// A dangling symlink, e.g. to a file another user would create.
	dangling := filepath.Join(dir, "dangling")
	if err := os.Symlink(filepath.Join(dir, "nowhere"), dangling); err != nil {
		t.Fatal(err)
	}
	if err := write(t, dangling, "x"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "nowhere")); !os.IsNotExist(err) {
		t.Errorf("the dangling symlink's target was created: %v", err)
	}
}

// Close without Commit, and a Commit that fails, leave the old file and
// no temporary file.
func TestFailureLeavesOld(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "out.patch")
	if err := os.WriteFile(target, []byte("old\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := Create(target, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("half")
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Commit(); err == nil {
		t.Error("Commit after Close succeeded")
	}
	if b, _ := os.ReadFile(target); string(b) != "old\n" {
		t.Errorf("target = %q after an abandoned write", b)
	}
	if got := entries(t, dir); !slices.Equal(got, []string{"out.patch"}) {
		t.Errorf("directory holds %q after an abandoned write", got)
	}

	// The rename fails: the target is a non-empty directory.
	sub := filepath.Join(dir, "sub")
	if err := os.MkdirAll(filepath.Join(sub, "keep"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := write(t, sub, "x"); err == nil {
		t.Error("replacing a directory succeeded")
	}
	if got := entries(t, dir); !slices.Equal(got, []string{"out.patch", "sub"}) {
		t.Errorf("directory holds %q after a failed commit", got)
	}
	if got := entries(t, sub); !slices.Equal(got, []string{"keep"}) {
		t.Errorf("the directory holds %q after a failed commit", got)
	}

	if _, err := Create(filepath.Join(dir, "missing", "x"), 0o644); err == nil {
		t.Error("Create in a missing directory succeeded")
	}
}
