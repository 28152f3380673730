package paths

import (
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"github.com/bangervm/banger/errdefs"
)

// dirOf makes a directory owned by uid (chown needs root unless uid is
// ours).
func dirOf(t *testing.T, uid int) string {
	t.Helper()
	d := t.TempDir()
	if err := os.Chown(d, uid, -1); err != nil {
		t.Fatal(err)
	}
	return d
}

func TestRuntimeDir(t *testing.T) {
	u := os.Geteuid()
	if u == 0 {
		u = 4242 // as root, act for an ordinary user
	}
	us := strconv.Itoa(u)
	tmp := t.TempDir()
	fallback := filepath.Join(tmp, "banger-"+us)
	mine := dirOf(t, u)
	noRunUser := t.TempDir()
	runUser := t.TempDir()
	if err := os.Mkdir(filepath.Join(runUser, us), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(filepath.Join(runUser, us), u, -1); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		uid     int
		xdg     string
		runUser string
		want    string
	}{
		{"own XDG_RUNTIME_DIR", u, mine, noRunUser, filepath.Join(mine, "banger")},
		// sudo keeps the invoking user's XDG_RUNTIME_DIR; it is not root's.
		{"root, another's XDG_RUNTIME_DIR", 0, mine, noRunUser, RootRuntime},
		{"root, own XDG_RUNTIME_DIR", 0, "/", noRunUser, "/banger"},
		{"root, none", 0, "", runUser, RootRuntime},
		{"relative XDG_RUNTIME_DIR", u, "run", noRunUser, fallback},
		{"root's XDG_RUNTIME_DIR", u, "/", noRunUser, fallback},
		{"login manager's /run/user/UID", u, "", runUser, filepath.Join(runUser, us, "banger")},
		{"no /run/user/UID", u, "", noRunUser, fallback},
		{"another's /run/user/UID", u + 1, "", runUser, filepath.Join(tmp, "banger-"+strconv.Itoa(u+1))},
	} {
		if got := runtimeDir(tc.uid, tc.xdg, tc.runUser, tmp); got != tc.want {
			t.Errorf("%s: runtimeDir = %s, want %s", tc.name, got, tc.want)
		}
	}
}

func TestOpenFile(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "target")
	link := filepath.Join(dir, "link")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenFile(link, os.O_CREATE|os.O_WRONLY, 0o600); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("symlink: %v", err)
	}
	if _, err := os.Lstat(target); err == nil {
		t.Error("created the symlink's target")
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenFile(fifo, os.O_RDWR, 0); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("fifo: %v", err)
	}
	f, err := OpenFile(filepath.Join(dir, "pid"), os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
}
