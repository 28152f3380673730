package roothelper

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/testutil"
)

// Environment of TestHelperProcess: the mode selects what the re-executed
// test binary does.
const (
	envHelper = "BANGER_ROOTHELPER_TEST_HELPER" // "client" or "serve"
	envSocket = "BANGER_ROOTHELPER_TEST_SOCKET"
)

const nobody = 65534

// TestHelperProcess is not a test: it is the body of the child processes
// the tests start. "client" makes a few calls and prints one line per call
// (the error class, or ok); "serve" runs Main on the socket.
func TestHelperProcess(t *testing.T) {
	mode := os.Getenv(envHelper)
	if mode == "" {
		testutil.NotApplicable(t, "the child process of the tests below")
	}
	sock := os.Getenv(envSocket)
	switch mode {
	case "client":
		os.Exit(helperClient(sock))
	case "serve":
		os.Exit(Main([]string{"--root-helper", "--socket", sock, "--owner", fmt.Sprint(nobody)}))
	}
	os.Exit(3)
}

func helperClient(sock string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c := New(sock)
	uid := os.Getuid()
	result := func(name string, err error) {
		class := "ok"
		if err != nil {
			class = "error"
			if k := errdefs.Class(err); k != nil {
				class = strings.ReplaceAll(k.Error(), " ", "-")
			}
		}
		fmt.Printf("%s %s\n", name, class)
	}
	result("ensureBridge", c.EnsureBridge(ctx, "banger0", netip.MustParsePrefix("172.30.4.1/24")))
	f, err := c.CreateTap(ctx, "bgr-p1", "banger0", uid)
	if f != nil {
		f.Close()
	}
	result("createTapSelf", err)
	_, err = c.CreateTap(ctx, "bgr-p1", "banger0", 0)
	result("createTapRoot", err)
	return 0
}

// TestPeerCredentials runs the server as root in this process and calls
// it from a child running as nobody.
func TestPeerCredentials(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireTool(t, "setpriv", "util-linux")
	dir, err := os.MkdirTemp("", "banger-roothelper-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	// Searchable by nobody, writable only by root: safesocket.Listen
	// refuses a socket directory others could write to.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := testutil.SharedTestBinary(t)

	for _, tc := range []struct {
		name  string
		owner int
		want  string
		calls []string
	}{
		{"other owner", 4242, "ensureBridge permission-denied\ncreateTapSelf permission-denied\ncreateTapRoot permission-denied\n", nil},
		{"root only", -1, "ensureBridge permission-denied\ncreateTapSelf permission-denied\ncreateTapRoot permission-denied\n", nil},
		{"owner", nobody, "ensureBridge ok\ncreateTapSelf ok\ncreateTapRoot permission-denied\n", []string{OpEnsureBridge, OpCreateTap}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sdir := filepath.Join(dir, fmt.Sprint(tc.owner))
			if err := os.Mkdir(sdir, 0o755); err != nil {
				t.Fatal(err)
			}
			ops := &fakeOps{}
			sock := startServer(t, sdir, tc.owner, ops)
			if err := os.Chmod(sock, 0o666); err != nil { // SO_PEERCRED alone decides
				t.Fatal(err)
			}
			cmd := exec.Command("setpriv", fmt.Sprintf("--reuid=%d", nobody), fmt.Sprintf("--regid=%d", nobody), "--clear-groups",
				bin, "-test.run=^TestHelperProcess$")
			cmd.Env = append(os.Environ(), envHelper+"=client", envSocket+"="+sock)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("child: %v\n%s", err, stderr.String())
			}
			if string(out) != tc.want {
				t.Errorf("child said:\n%s\nwant:\n%s", out, tc.want)
			}
			if got := ops.Calls(); fmt.Sprint(got) != fmt.Sprint(tc.calls) {
				t.Errorf("ops ran %v, want %v", got, tc.calls)
			}
		})
	}
}
