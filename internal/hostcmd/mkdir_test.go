package hostcmd

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/bangervm/banger/internal/testutil"
)

// Created as the user, not as root: a symlink the user planted cannot
// make root create (or own) anything the user could not.
func TestMkdirAsRunsAsTheUser(t *testing.T) {
	testutil.RequireRoot(t)
	home := t.TempDir()
	// t.TempDir's parent is root's 0700; the user must reach its home.
	if err := os.Chmod(filepath.Dir(home), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(home, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	target := t.TempDir() // root's, 0700: nobody cannot write here
	if err := os.Symlink(target, filepath.Join(home, ".local")); err != nil {
		t.Fatal(err)
	}
	ok := filepath.Join(home, ".config", "banger")
	if err := MkdirAs(context.Background(), 65534, 65534, ok); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(ok)
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != 65534 || fi.Mode().Perm() != 0o700 {
		t.Fatalf("%s: uid %d mode %v, want 65534 and 0700", ok, st.Uid, fi.Mode().Perm())
	}
	if err := MkdirAs(context.Background(), 65534, 65534, filepath.Join(home, ".local", "state", "banger")); err == nil {
		t.Fatal("created a directory through a symlink into root's directory")
	}
	if _, err := os.Stat(filepath.Join(target, "state")); err == nil {
		t.Fatal("root's directory got a state/ through the user's symlink")
	}
}
