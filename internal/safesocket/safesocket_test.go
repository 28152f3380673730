package safesocket

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/testutil"
)

const envListen = "BANGER_SAFESOCKET_TEST_LISTEN"

// TestHelperProcess is not a test: it is the child the peer test starts
// as another user. It listens on $BANGER_SAFESOCKET_TEST_LISTEN, says
// "ready", and reports the bytes each connection sent.
func TestHelperProcess(t *testing.T) {
	path := os.Getenv(envListen)
	if path == "" {
		testutil.NotApplicable(t, "the child process of TestDialRefusesOtherPeer")
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		fmt.Println("listen:", err)
		os.Exit(1)
	}
	fmt.Println("ready")
	for {
		c, err := ln.Accept()
		if err != nil {
			os.Exit(1)
		}
		n, _ := c.Read(make([]byte, 4096))
		fmt.Printf("got %d bytes\n", n)
		c.Close()
	}
}

func wantRefusal(t *testing.T, err error, class error, words ...string) {
	t.Helper()
	if !errors.Is(err, class) {
		t.Fatalf("got %v, want a %v refusal", err, class)
	}
	for _, w := range words {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not mention %q", err, w)
		}
	}
}

func mode(t *testing.T, path string) fs.FileMode {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode()
}

func TestEnsureDirCreates(t *testing.T) {
	base := t.TempDir()
	dir := filepath.Join(base, "a", "b", "run")
	if err := EnsureDir(dir, os.Geteuid(), 0o700); err != nil {
		t.Fatal(err)
	}
	if m := mode(t, dir); !m.IsDir() || m.Perm() != 0o700 {
		t.Errorf("mode %v", m)
	}
	if m := mode(t, filepath.Join(base, "a")); m.Perm() != 0o700 {
		t.Errorf("parent mode %v", m)
	}
	// An existing own directory is brought to the mode asked for.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := EnsureDir(dir, os.Geteuid(), 0o700); err != nil {
		t.Fatal(err)
	}
	if m := mode(t, dir); m.Perm() != 0o700 {
		t.Errorf("mode %v after EnsureDir on a 0755 dir", m)
	}
	if err := CheckDir(dir, os.Geteuid()); err != nil {
		t.Error(err)
	}
	if err := CheckDir(filepath.Join(base, "missing"), os.Geteuid()); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing dir: %v", err)
	}
}

func TestEnsureDirRefusesPlanted(t *testing.T) {
	uid := os.Geteuid()
	for _, tc := range []struct {
		name  string
		plant func(t *testing.T, dir string) // plants dir
		class error
		words []string
	}{
		{"symlink", func(t *testing.T, dir string) {
			if err := os.Symlink(t.TempDir(), dir); err != nil {
				t.Fatal(err)
			}
		}, errdefs.ErrFailedPrecondition, []string{"symlink"}},
		{"file", func(t *testing.T, dir string) {
			if err := os.WriteFile(dir, nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}, errdefs.ErrFailedPrecondition, []string{"not a directory"}},
		{"loose mode", func(t *testing.T, dir string) {
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(dir, 0o777); err != nil {
				t.Fatal(err)
			}
		}, errdefs.ErrFailedPrecondition, []string{"writable by others", "0777"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "run")
			tc.plant(t, dir)
			before := mode(t, dir)
			for name, err := range map[string]error{"EnsureDir": EnsureDir(dir, uid, 0o700), "CheckDir": CheckDir(dir, uid)} {
				t.Run(name, func(t *testing.T) { wantRefusal(t, err, tc.class, append(tc.words, dir)...) })
			}
			if after := mode(t, dir); after != before {
				t.Errorf("mode changed from %v to %v", before, after)
			}
		})
	}
}

// TestEnsureDirOtherUser plants directories as the user nobody.
func TestEnsureDirOtherUser(t *testing.T) {
	testutil.RequireRoot(t)
	uid := os.Geteuid()
	t.Run("dir", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "run")
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Lchown(dir, testutil.Nobody, testutil.Nobody); err != nil {
			t.Fatal(err)
		}
		wantRefusal(t, EnsureDir(dir, uid, 0o700), errdefs.ErrPermissionDenied, dir, "uid 65534")
		if m := mode(t, dir); m.Perm() != 0o700 {
			t.Errorf("someone else's dir changed to %v", m)
		}
	})
	t.Run("parent", func(t *testing.T) {
		parent := filepath.Join(t.TempDir(), "p")
		if err := os.Mkdir(parent, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Lchown(parent, testutil.Nobody, testutil.Nobody); err != nil {
			t.Fatal(err)
		}
		dir := filepath.Join(parent, "run")
		wantRefusal(t, EnsureDir(dir, uid, 0o700), errdefs.ErrPermissionDenied, parent, "uid 65534")
		if _, err := os.Lstat(dir); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("created %s in someone else's dir: %v", dir, err)
		}
	})
	t.Run("symlink parent", func(t *testing.T) {
		base := t.TempDir()
		link := filepath.Join(base, "link")
		if err := os.Symlink(t.TempDir(), link); err != nil {
			t.Fatal(err)
		}
		if err := os.Lchown(link, testutil.Nobody, testutil.Nobody); err != nil {
			t.Fatal(err)
		}
		wantRefusal(t, EnsureDir(filepath.Join(link, "run"), uid, 0o700), errdefs.ErrPermissionDenied, link)
	})
}

func TestParentModes(t *testing.T) {
	uid := os.Geteuid()
	parent := t.TempDir()
	dir := filepath.Join(parent, "run")
	if err := os.Chmod(parent, 0o777); err != nil {
		t.Fatal(err)
	}
	wantRefusal(t, EnsureDir(dir, uid, 0o700), errdefs.ErrFailedPrecondition, parent, "not sticky")
	// Sticky, like /tmp: nobody can replace what another user made.
	if err := os.Chmod(parent, 0o777|fs.ModeSticky); err != nil {
		t.Fatal(err)
	}
	if err := EnsureDir(dir, uid, 0o700); err != nil {
		t.Fatal(err)
	}
}

func TestListen(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run")
	if err := EnsureDir(dir, os.Geteuid(), 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "s.sock")
	ln, err := Listen(path, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if m := mode(t, path); m.Type() != fs.ModeSocket || m.Perm() != 0o600 {
		t.Errorf("socket mode %v", m)
	}
	if _, err := Listen(path, 0o600); !errdefs.IsAlreadyExists(err) {
		t.Errorf("second listener: %v", err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	ln, err = Listen(path, 0o600)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	ln.Close()
	if err := os.Symlink("/etc/passwd", path); err != nil {
		t.Fatal(err)
	}
	wantRefusal(t, func() error { _, err := Listen(path, 0o600); return err }(), errdefs.ErrFailedPrecondition, "not a socket")
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	os.Remove(path)
	wantRefusal(t, func() error { _, err := Listen(path, 0o600); return err }(), errdefs.ErrFailedPrecondition, dir)
}

func serve(t *testing.T, path string) {
	t.Helper()
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
}

func TestDial(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "s.sock")
	if _, err := Dial(ctx, path); !errors.As(err, new(*net.OpError)) {
		t.Errorf("nothing listening: %T %v, want *net.OpError", err, err)
	}
	serve(t, path)
	c, err := Dial(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	link := filepath.Join(dir, "link.sock")
	if err := os.Symlink(path, link); err != nil {
		t.Fatal(err)
	}
	_, err = Dial(ctx, link)
	wantRefusal(t, err, errdefs.ErrFailedPrecondition, link, "not a socket")
}

// TestDialRefusesOtherUser: a socket owned by another user, and one that
// another user's process answers on, are refused before anything is sent.
func TestDialRefusesOtherUser(t *testing.T) {
	testutil.RequireRoot(t)
	ctx := context.Background()
	t.Run("socket owner", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "s.sock")
		serve(t, path)
		if err := os.Lchown(path, testutil.Nobody, testutil.Nobody); err != nil {
			t.Fatal(err)
		}
		_, err := Dial(ctx, path, 4242)
		wantRefusal(t, err, errdefs.ErrPermissionDenied, path, "owned by uid 65534", "uid 4242 or root")
	})
	t.Run("root socket", func(t *testing.T) {
		// Root may hand its socket to another user; its directory says
		// who could have put it there.
		dir := filepath.Join(t.TempDir(), "run")
		if err := EnsureDir(dir, 0, 0o755); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, "root.sock")
		serve(t, path)
		if err := os.Lchown(path, testutil.Nobody, testutil.Nobody); err != nil {
			t.Fatal(err)
		}
		c, err := DialRoot(ctx, path)
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
		if err := os.Lchown(dir, testutil.Nobody, testutil.Nobody); err != nil {
			t.Fatal(err)
		}
		_, err = DialRoot(ctx, path)
		wantRefusal(t, err, errdefs.ErrPermissionDenied, dir, "uid 65534")
	})
	t.Run("peer", func(t *testing.T) {
		bin := testutil.SharedTestBinary(t)
		dir, err := os.MkdirTemp("", "banger-safesocket-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		if err := os.Chmod(dir, 0o777); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, "s.sock")
		cmd := testutil.AsUser(exec.Command(bin, "-test.run=^TestHelperProcess$"), testutil.Nobody, testutil.Nobody)
		cmd.Env = append(os.Environ(), envListen+"="+path)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		lines := bufio.NewScanner(out)
		if !lines.Scan() || lines.Text() != "ready" {
			t.Fatalf("child: %q %v", lines.Text(), lines.Err())
		}
		// The file passes; only the process behind it gives it away.
		if err := os.Lchown(path, os.Geteuid(), os.Getegid()); err != nil {
			t.Fatal(err)
		}
		_, err = Dial(ctx, path)
		wantRefusal(t, err, errdefs.ErrPermissionDenied, path, fmt.Sprintf("pid %d running as uid 65534", cmd.Process.Pid))
		_, err = DialRoot(ctx, path)
		wantRefusal(t, err, errdefs.ErrFailedPrecondition, dir, "writable by others")
		if !lines.Scan() || lines.Text() != "got 0 bytes" {
			t.Errorf("the other user's process: %q, want got 0 bytes", lines.Text())
		}
	})
}
