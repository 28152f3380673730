package e2e

import (
	"bufio"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/bangervm/banger/internal/testutil"
)

// envFakeDaemon makes the test binary a fake bangerd of another user,
// planted in the directory it names.
const envFakeDaemon = "BANGER_E2E_FAKE_DAEMON"

// fakeDaemon is what another local user runs to catch a banger CLI: it
// creates dir (the CLI's predictable runtime directory) before the CLI's
// user does, answers on bangerd.sock there like a daemon would, and
// reports every request it receives on stdout.
func fakeDaemon(dir string) int {
	if err := os.Mkdir(dir, 0o777); err != nil {
		fmt.Println("mkdir:", err)
		return 1
	}
	os.Chmod(dir, 0o777)
	sock := filepath.Join(dir, "bangerd.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		fmt.Println("listen:", err)
		return 1
	}
	os.Chmod(sock, 0o666)
	fmt.Println("ready")
	for {
		c, err := ln.Accept()
		if err != nil {
			return 1
		}
		req, err := http.ReadRequest(bufio.NewReader(c))
		if err != nil {
			fmt.Println("connection, nothing sent:", err)
			c.Close()
			continue
		}
		fmt.Println("request", req.Method, req.URL.Path)
		body := `{"message":"planted daemon answered","class":"unavailable"}`
		fmt.Fprintf(c, "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(body), body)
		c.Close()
	}
}

// TestPlantedRuntimeDirCLI: with XDG_RUNTIME_DIR unset (as under sudo or
// su), a user's runtime directory falls back to TMPDIR/banger-UID, a name
// anyone can predict in a directory anyone can write to. Another user
// (nobody) creates it first and answers on a fake socket there. The CLI
// must refuse, naming the directory, before sending anything.
func TestPlantedRuntimeDirCLI(t *testing.T) {
	testutil.RequireRoot(t)
	const victim = 4242
	if _, err := os.Stat(fmt.Sprintf("/run/user/%d", victim)); err == nil {
		testutil.NotApplicable(t, "uid %d has a /run/user directory here, so its runtime dir does not fall back to TMPDIR", victim)
	}
	// Like /tmp: anyone may create entries, nobody may replace another's.
	tmp, err := os.MkdirTemp("", "bt-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(tmp) })
	if err := os.Chmod(tmp, 0o777|fs.ModeSticky); err != nil {
		t.Fatal(err)
	}
	home := filepath.Join(tmp, "home")
	if err := os.Mkdir(home, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(home, victim, victim); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(tmp, "bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	banger := testutil.CopyExecutable(t, filepath.Join(binDir, "banger"), bin)
	bangerd := testutil.CopyExecutable(t, filepath.Join(binDir, "bangerd"), bin)

	rt := filepath.Join(tmp, "banger-"+strconv.Itoa(victim))
	fake := testutil.AsUser(exec.Command(testutil.SharedTestBinary(t)), testutil.Nobody, testutil.Nobody)
	fake.Env = []string{envFakeDaemon + "=" + rt}
	out, err := fake.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := fake.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fake.Process.Kill(); fake.Wait() })
	lines := bufio.NewScanner(out)
	if !lines.Scan() || lines.Text() != "ready" {
		t.Fatalf("fake daemon: %q %v", lines.Text(), lines.Err())
	}

	cli := testutil.AsUser(exec.Command(banger, "image", "list"), victim, victim)
	cli.Env = []string{"HOME=" + home, "TMPDIR=" + tmp, "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "BANGERD=" + bangerd, "BANGER_NETWORK=off"}
	r := runCmd(t, cli)
	t.Logf("banger image list as uid %d: exit %d\n%s%s", victim, r.code, r.out, r.err)
	fake.Process.Kill()
	var heard []string
	for lines.Scan() { // to EOF: Wait would close the pipe
		heard = append(heard, lines.Text())
	}
	fake.Wait()
	for _, l := range heard {
		if strings.HasPrefix(l, "request") {
			t.Errorf("the CLI sent the planted daemon a %s", l)
		}
	}
	if r.code != 1 || !strings.Contains(r.err, rt) || !strings.Contains(r.err, "owned by uid 65534") || !strings.Contains(r.err, "XDG_RUNTIME_DIR") {
		t.Errorf("exit %d, stderr %q: want a refusal naming %s, its owner and the fix", r.code, r.err, rt)
	}
}
