package testutil

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// Nobody is the uid and gid of the second local user that tests act as:
// someone on the same host who does not own banger's files.
const Nobody = 65534

// AsUser makes cmd run as uid and gid with no supplementary groups. The
// test must run as root (RequireRoot).
func AsUser(cmd *exec.Cmd, uid, gid int) *exec.Cmd {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}
	return cmd
}

// SharedTestBinary copies the running test binary into a new directory
// that every user may read and search (go test keeps its own in a private
// one), so that a child running as another user can execute it. It returns
// the copy's path; the directory is removed when the test ends.
func SharedTestBinary(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "banger-test-bin-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return CopyExecutable(t, self, dir)
}

// CopyExecutable copies the program at src into dir with mode 0755 and
// returns the copy's path.
func CopyExecutable(t testing.TB, src, dir string) string {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	dst := filepath.Join(dir, filepath.Base(src))
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	return dst
}
