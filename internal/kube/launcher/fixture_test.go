package launcher

import (
	"bytes"
	"context"
	"net"
	"path/filepath"
	"testing"

	bapi "github.com/bangervm/banger/api"
	"github.com/bangervm/banger/client"
	"github.com/bangervm/banger/internal/kube/kubetest"
	"github.com/bangervm/banger/internal/testutil"
)

// fixture is what a launcher needs on this machine: static builds of
// banger-launcher, banger-agent and banger-controller, and Debian's cloud
// kernel staged as banger imports it (vmlinux, initrd.img).
type fixture struct {
	bin       string // holds the three programs
	kernelDir string
}

func newFixture(t *testing.T) fixture {
	t.Helper()
	testutil.SkipShort(t, "boots real guests")
	return fixture{kernelDir: kubetest.Kernel(t), bin: kubetest.Binaries(t)}
}

func (f fixture) path(name string) string { return filepath.Join(f.bin, name) }

// execIn runs argv in the VM through c and returns its stdout and status.
func execIn(t *testing.T, ctx context.Context, c *client.Client, vm string, argv ...string) (string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	st, err := c.Exec(ctx, vm, bapi.ExecRequest{Argv: argv}, client.ExecIO{Stdout: &out, Stderr: &errb})
	if err != nil {
		t.Fatalf("exec %v: %v (stderr %q)", argv, err, errb.String())
	}
	return out.String(), st.Code
}

// checkExec runs a succeeding and a failing command in the VM.
func checkExec(t *testing.T, ctx context.Context, c *client.Client, vm string) {
	t.Helper()
	if out, code := execIn(t, ctx, c, vm, "echo", "hello"); out != "hello\n" || code != 0 {
		t.Errorf("echo hello: %q, exit %d", out, code)
	}
	if _, code := execIn(t, ctx, c, vm, "sh", "-c", "exit 3"); code != 3 {
		t.Errorf("exit 3: exit %d", code)
	}
}

// pipeDial is a dial for client.NewWithDial that carries each connection
// through API, as `banger-launcher api` does over a Pod exec.
func pipeDial(socket string) func(ctx context.Context) (net.Conn, error) {
	return func(ctx context.Context) (net.Conn, error) {
		a, b := net.Pipe()
		go func() {
			API(context.Background(), socket, b, b)
			b.Close()
		}()
		return a, nil
	}
}
