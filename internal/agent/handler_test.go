package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/agentproto"
	"github.com/bangervm/banger/internal/testutil"
)

// newClient serves a real Handler in-process over a pipe and returns a
// connected host client.
func newClient(t *testing.T, cfg HandlerConfig) *agentproto.Client {
	t.Helper()
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	host, guest := net.Pipe()
	srv := &agentproto.Server{Handler: NewHandler(cfg), AgentVersion: "test", Logger: cfg.Logger}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.ServeConn(ctx, guest) }()
	cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
	defer ccancel()
	c, err := agentproto.Connect(cctx, host, agentproto.ClientConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); cancel(); <-done })
	return c
}

func TestExec(t *testing.T) {
	c := newClient(t, HandlerConfig{Env: []string{"IMAGE=yes"}})
	dir := t.TempDir()
	tests := []struct {
		name           string
		req            agentproto.ExecRequest
		stdin          string
		stdout, stderr string
		status         agentproto.ExitStatus
	}{
		{"stdout and stderr", agentproto.ExecRequest{Argv: []string{"sh", "-c", "echo out; echo err >&2"}}, "", "out\n", "err\n", agentproto.ExitStatus{}},
		{"exit 7", agentproto.ExecRequest{Argv: []string{"sh", "-c", "echo hi; exit 7"}}, "", "hi\n", "", agentproto.ExitStatus{Code: 7}},
		{"killed by a signal", agentproto.ExecRequest{Argv: []string{"sh", "-c", "kill -9 $$"}}, "", "", "", agentproto.ExitStatus{Code: 137, Signal: 9}},
		{"env and dir", agentproto.ExecRequest{Argv: []string{"sh", "-c", "echo $IMAGE $FOO; pwd"}, Env: []string{"FOO=bar"}, Dir: dir}, "", "yes bar\n" + dir + "\n", "", agentproto.ExitStatus{}},
		{"env overrides the image", agentproto.ExecRequest{Argv: []string{"sh", "-c", "echo $IMAGE"}, Env: []string{"IMAGE=no"}}, "", "no\n", "", agentproto.ExitStatus{}},
		{"stdin", agentproto.ExecRequest{Argv: []string{"tr", "a-z", "A-Z"}}, "hello\n", "HELLO\n", "", agentproto.ExitStatus{}},
		{"absolute path", agentproto.ExecRequest{Argv: []string{"/bin/sh", "-c", "exit 3"}}, "", "", "", agentproto.ExitStatus{Code: 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr testutil.LockedBuffer
			st, err := c.Exec(context.Background(), tt.req, agentproto.ExecIO{Stdin: strings.NewReader(tt.stdin), Stdout: &stdout, Stderr: &stderr})
			if err != nil {
				t.Fatal(err)
			}
			if st != tt.status || stdout.String() != tt.stdout || stderr.String() != tt.stderr {
				t.Errorf("got %+v stdout %q stderr %q, want %+v %q %q", st, stdout.String(), stderr.String(), tt.status, tt.stdout, tt.stderr)
			}
		})
	}
}

func TestExecErrors(t *testing.T) {
	c := newClient(t, HandlerConfig{})
	tests := []struct {
		name string
		req  agentproto.ExecRequest
		is   func(error) bool
	}{
		{"missing program", agentproto.ExecRequest{Argv: []string{"no-such-program-banger"}}, errdefs.IsNotFound},
		{"missing path", agentproto.ExecRequest{Argv: []string{"/no/such/program"}}, errdefs.IsNotFound},
		{"missing dir", agentproto.ExecRequest{Argv: []string{"true"}, Dir: "/no/such/dir"}, errdefs.IsNotFound},
		{"missing user", agentproto.ExecRequest{Argv: []string{"true"}, User: "no-such-user-banger"}, errdefs.IsNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.Exec(context.Background(), tt.req, agentproto.ExecIO{})
			if !tt.is(err) {
				t.Fatalf("err = %v", err)
			}
		})
	}
}

func TestExecStdinMiB(t *testing.T) {
	c := newClient(t, HandlerConfig{})
	in := make([]byte, 1<<20)
	_, _ = rand.Read(in)
	var out testutil.LockedBuffer
	st, err := c.Exec(context.Background(), agentproto.ExecRequest{Argv: []string{"cat"}}, agentproto.ExecIO{Stdin: bytes.NewReader(in), Stdout: &out})
	if err != nil || st.Code != 0 {
		t.Fatalf("%+v %v", st, err)
	}
	if !bytes.Equal([]byte(out.String()), in) {
		t.Fatalf("cat returned %d bytes that differ from the %d sent", len(out.String()), len(in))
	}
}

func TestExecSignal(t *testing.T) {
	c := newClient(t, HandlerConfig{})
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGKILL} {
		t.Run(sig.String(), func(t *testing.T) {
			var out testutil.LockedBuffer
			p, err := c.Start(context.Background(), agentproto.ExecRequest{Argv: []string{"sleep", "100"}}, agentproto.ExecIO{Stdout: &out})
			if err != nil {
				t.Fatal(err)
			}
			if err := p.Signal(sig); err != nil {
				t.Fatal(err)
			}
			st, err := p.Wait()
			if err != nil || st.Signal != int(sig) {
				t.Fatalf("%+v %v", st, err)
			}
		})
	}
}

// TestExecCancel: cancelling the context kills the guest process.
func TestExecCancel(t *testing.T) {
	c := newClient(t, HandlerConfig{})
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	p, err := c.Start(ctx, agentproto.ExecRequest{Argv: []string{"sh", "-c", "echo $$; exec sleep 100"}}, agentproto.ExecIO{Stdout: pw})
	if err != nil {
		t.Fatal(err)
	}
	line := make([]byte, 32)
	n, _ := pr.Read(line)
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	pid, err := strconv.Atoi(strings.TrimSpace(string(line[:n])))
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	if _, err := p.Wait(); err == nil {
		t.Fatal("Wait after cancel succeeded")
	}
	deadline := time.Now().Add(5 * time.Second)
	for syscall.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("process %d still alive after cancel", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestExecTTY(t *testing.T) {
	_, err := os.Stat("/dev/ptmx")
	testutil.Require(t, err == nil, "/dev/ptmx")
	c := newClient(t, HandlerConfig{})
	t.Run("tty", func(t *testing.T) {
		var out testutil.LockedBuffer
		st, err := c.Exec(context.Background(), agentproto.ExecRequest{Argv: []string{"tty"}, TTY: true, Rows: 24, Cols: 80}, agentproto.ExecIO{Stdout: &out})
		if err != nil || st.Code != 0 {
			t.Fatalf("%+v %v", st, err)
		}
		if !regexp.MustCompile(`^/dev/pts/\d+\r?\n$`).MatchString(out.String()) {
			t.Errorf("tty printed %q", out.String())
		}
	})
	t.Run("size and resize", func(t *testing.T) {
		var out testutil.LockedBuffer
		pr, pw := io.Pipe()
		defer pw.Close()
		p, err := c.Start(context.Background(), agentproto.ExecRequest{Argv: []string{"sh", "-c", "stty size; read x; stty size"}, TTY: true, Rows: 24, Cols: 80},
			agentproto.ExecIO{Stdin: pr, Stdout: &out})
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, func() bool { return strings.Contains(out.String(), "24 80") })
		if err := p.Resize(50, 132); err != nil {
			t.Fatal(err)
		}
		_, _ = pw.Write([]byte("\n"))
		st, err := p.Wait()
		if err != nil || st.Code != 0 {
			t.Fatalf("%+v %v", st, err)
		}
		if !strings.Contains(out.String(), "50 132") {
			t.Errorf("output %q lacks the new size", out.String())
		}
	})
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestExecUser(t *testing.T) {
	testutil.RequireRoot(t) // to change user
	etc := t.TempDir()
	os.WriteFile(filepath.Join(etc, "passwd"), []byte("root:x:0:0:root:/root:/bin/sh\nalice:x:1234:2345:Alice:/tmp:/bin/sh\n"), 0o644)
	os.WriteFile(filepath.Join(etc, "group"), []byte("root:x:0:\nalice:x:2345:\nextra:x:3456:alice,bob\n"), 0o644)
	c := newClient(t, HandlerConfig{EtcDir: etc})
	tests := []struct{ user, want string }{
		{"alice", "1234 2345 2345 3456 /tmp"},
		{"alice:0", "1234 0 0 3456 /tmp"},
		{"4321", "4321 0 0 /"},
		{"", "0 0 0 /root"},
	}
	for _, tt := range tests {
		t.Run(tt.user, func(t *testing.T) {
			var out testutil.LockedBuffer
			_, err := c.Exec(context.Background(), agentproto.ExecRequest{Argv: []string{"sh", "-c", `echo $(id -u) $(id -g) $(id -G) $HOME`}, User: tt.user, Dir: "/"}, agentproto.ExecIO{Stdout: &out})
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.TrimSpace(out.String()); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestFiles(t *testing.T) {
	c := newClient(t, HandlerConfig{})
	ctx := context.Background()
	dir := t.TempDir()
	data := make([]byte, 300<<10)
	_, _ = rand.Read(data)
	p := filepath.Join(dir, "f.bin")
	if err := c.WriteFile(ctx, p, 0o640, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o640 {
		t.Fatalf("stat: %v %v", fi, err)
	}
	rc, fi, err := c.ReadFile(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, data) || fi.Size != int64(len(data)) || fi.Mode.Perm() != 0o640 {
		t.Fatalf("read back %d bytes (%v), info %+v", len(got), err, fi)
	}
	// Overwrite keeps nothing of the old content.
	if err := c.WriteFile(ctx, p, 0o600, strings.NewReader("new")); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); string(b) != "new" {
		t.Fatalf("content %q", b)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("temporary files left: %v", ents)
	}

	errs := []struct {
		name string
		err  error
		is   func(error) bool
	}{
		{"read missing", func() error { _, _, err := c.ReadFile(ctx, filepath.Join(dir, "nope")); return err }(), errdefs.IsNotFound},
		{"read dir", func() error { _, _, err := c.ReadFile(ctx, dir); return err }(), errdefs.IsInvalidArgument},
		{"read relative", func() error { _, _, err := c.ReadFile(ctx, "rel"); return err }(), errdefs.IsInvalidArgument},
		{"write missing parent", c.WriteFile(ctx, filepath.Join(dir, "no", "f"), 0o644, strings.NewReader("x")), errdefs.IsNotFound},
		{"write onto dir", c.WriteFile(ctx, dir, 0o644, strings.NewReader("x")), errdefs.IsInvalidArgument},
	}
	for _, e := range errs {
		if !e.is(e.err) {
			t.Errorf("%s: err = %v", e.name, e.err)
		}
	}
}

func TestHealthStats(t *testing.T) {
	c := newClient(t, HandlerConfig{Version: "v-test", DiskPath: t.TempDir()})
	ctx := context.Background()
	info, err := c.Health(ctx)
	if err != nil || info.AgentVersion != "v-test" || info.Hostname == "" || info.Uptime <= 0 {
		t.Fatalf("%+v %v", info, err)
	}
	st, err := c.Stats(ctx)
	if err != nil || st.MemTotal == 0 || st.MemAvailable == 0 || st.MemAvailable > st.MemTotal || st.Root.Total == 0 || st.Disk == nil || st.Uptime <= 0 {
		t.Fatalf("%+v %v", st, err)
	}
}

func TestMergeEnv(t *testing.T) {
	tests := []struct {
		base, over, want []string
	}{
		{nil, nil, nil},
		{[]string{"A=1", "B=2"}, []string{"A=3"}, []string{"A=3", "B=2"}},
		{[]string{"A=1", "A=2"}, []string{"C"}, []string{"A=2", "C"}},
	}
	for _, tt := range tests {
		if got := mergeEnv(tt.base, tt.over); strings.Join(got, ",") != strings.Join(tt.want, ",") {
			t.Errorf("mergeEnv(%v, %v) = %v, want %v", tt.base, tt.over, got, tt.want)
		}
	}
}

func TestIOCounters(t *testing.T) {
	proc := t.TempDir()
	// As a guest with two virtio disks (one partitioned) and a NIC shows them.
	os.WriteFile(filepath.Join(proc, "diskstats"), []byte(`
 254       0 vda 1200 0 20480 300 0 0 0 0 0 400 300 0 0 0 0 0 0
 254       1 vda1 1000 0 16384 200 0 0 0 0 0 300 200 0 0 0 0 0 0
 254      16 vdb 50 1 800 10 70 5 1600 40 0 100 50 0 0 0 0 0 0
   7       0 loop0 9 0 72 1 0 0 0 0 0 1 1 0 0 0 0 0 0
`), 0o644)
	os.MkdirAll(filepath.Join(proc, "net"), 0o755)
	os.WriteFile(filepath.Join(proc, "net", "dev"), []byte(`Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     200       2    0    0    0     0          0         0      200       2    0    0    0     0       0          0
  eth0: 1048576     800    0    0    0     0          0         0    65536     300    0    0    0     0       0          0
`), 0o644)
	block, err := readDiskstats(filepath.Join(proc, "diskstats"))
	if err != nil {
		t.Fatal(err)
	}
	want := []agentproto.IOCounter{{Name: "vda", In: 20480 * 512}, {Name: "vdb", In: 800 * 512, Out: 1600 * 512}}
	if fmt.Sprint(block) != fmt.Sprint(want) {
		t.Errorf("block = %+v, want %+v", block, want)
	}
	net, err := readNetDev(filepath.Join(proc, "net", "dev"))
	if err != nil {
		t.Fatal(err)
	}
	if want := []agentproto.IOCounter{{Name: "eth0", In: 1048576, Out: 65536}}; fmt.Sprint(net) != fmt.Sprint(want) {
		t.Errorf("net = %+v, want %+v", net, want)
	}
	if _, err := readDiskstats(filepath.Join(proc, "missing")); err == nil {
		t.Error("missing diskstats: no error")
	}
}
