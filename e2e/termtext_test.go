package e2e

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
	"golang.org/x/term"
)

// openPTY returns a pseudo-terminal pair, the replica in raw mode so that
// what banger writes arrives unchanged.
func openPTY(t *testing.T) (ptm, pts *os.File) {
	t.Helper()
	ptm, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ptm.Close() })
	if err := unix.IoctlSetPointerInt(int(ptm.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatalf("unlock pty: %v", err)
	}
	n, err := unix.IoctlGetInt(int(ptm.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("pty number: %v", err)
	}
	pts, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := term.MakeRaw(int(pts.Fd())); err != nil {
		t.Fatal(err)
	}
	return ptm, pts
}

// onTerminal runs banger with its stdout on a terminal and returns what
// reached the terminal.
func (e *env) onTerminal(args ...string) string {
	e.t.Helper()
	ptm, pts := openPTY(e.t)
	cmd := e.cmd(e.t.Context(), args...)
	var errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = pts, &errb
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(ptm) // ends with EIO once no one holds the replica
		got <- b
	}()
	err := cmd.Run()
	pts.Close()
	out := <-got
	if err != nil {
		e.t.Fatalf("banger %s: %v\nstderr: %s", strings.Join(args, " "), err, errb.String())
	}
	return string(out)
}

// TestVMLogsOnTerminal: what a guest writes to its console reaches the
// user's terminal through vm logs as visible escapes, unless --raw.
func TestVMLogsOnTerminal(t *testing.T) {
	e := sharedVMEnv(t)
	e.ok("vm", "run", "-d", "--name", "esc", "--image", e.image)
	defer e.run("vm", "delete", "-f", "esc")
	e.ok("vm", "exec", "esc", "--", "sh", "-c", `printf 'hostile\033]0;pwned\007\033[2Jend\n' > /dev/console`)

	out := e.onTerminal("vm", "logs", "esc")
	if !strings.Contains(out, `hostile\x1b]0;pwned\x07\x1b[2Jend`) {
		t.Errorf("vm logs on a terminal lacks the escaped sequence: %q", out[max(0, len(out)-400):])
	}
	if i := strings.IndexFunc(out, func(r rune) bool { return r == 0x1b || r == 0x07 }); i >= 0 {
		t.Errorf("vm logs sent a control character to the terminal: %q", out[max(0, i-100):min(len(out), i+100)])
	}
	if raw := e.onTerminal("vm", "logs", "--raw", "esc"); !strings.Contains(raw, "hostile\x1b]0;pwned\x07\x1b[2Jend") {
		t.Errorf("vm logs --raw changed the console: %q", raw[max(0, len(raw)-400):])
	}
}
