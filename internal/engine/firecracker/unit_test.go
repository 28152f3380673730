package firecracker

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bangervm/banger/internal/engine"
	"github.com/bangervm/banger/internal/engine/proc"
)

func TestJailerArgs(t *testing.T) {
	tests := []struct {
		name string
		c    JailerConfig
		want string
	}{
		{"minimal", JailerConfig{ID: "vm-1", ExecFile: "/usr/bin/firecracker", UID: 123, GID: 100},
			"--id vm-1 --exec-file /usr/bin/firecracker --uid 123 --gid 100"},
		{"full", JailerConfig{ID: "vm-1", ExecFile: "/usr/bin/firecracker", UID: 123, GID: 100, ChrootBase: "/srv/jailer",
			CgroupVersion: 2, Cgroups: []string{"cpu.max=50000 100000", "memory.max=1G"}, ParentCgroup: "banger",
			NetNS: "/var/run/netns/vm1", ResourceLimits: []string{"no-file=1024"},
			FirecrackerArgs: []string{"--api-sock", "/fc.sock"}},
			"--id vm-1 --exec-file /usr/bin/firecracker --uid 123 --gid 100 --cgroup-version 2 --cgroup cpu.max=50000 100000 --cgroup memory.max=1G --parent-cgroup banger --chroot-base-dir /srv/jailer --netns /var/run/netns/vm1 --resource-limit no-file=1024 -- --api-sock /fc.sock"},
	}
	for _, tt := range tests {
		got := JailerArgs(tt.c)
		if strings.Join(got, " ") != tt.want {
			t.Errorf("%s:\n got %q\nwant %q", tt.name, strings.Join(got, " "), tt.want)
		}
		for _, a := range got {
			if a == "--daemonize" || a == "--new-pid-ns" {
				t.Errorf("%s: %s would change the pid or lose the console", tt.name, a)
			}
		}
	}
	// Flags JailerArgs emits must be the ones jailer.md documents.
	doc, err := os.ReadFile("testdata/jailer.md")
	if err != nil {
		t.Fatalf("jailer.md, copied from Firecracker's docs: %v", err)
	}
	for _, a := range JailerArgs(tests[1].c) {
		if strings.HasPrefix(a, "--") && a != "--" && !strings.HasPrefix(a, "--api-sock") && !strings.Contains(string(doc), "`"+a+"`") {
			t.Errorf("flag %s not documented in jailer.md", a)
		}
	}
}

func TestJailID(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"vm-1", "vm-1"},
		{"01HXYZ", "01HXYZ"},
	} {
		if got := JailID(tt.in); got != tt.want {
			t.Errorf("JailID(%q) = %q", tt.in, got)
		}
	}
	for _, in := range []string{"a_b", strings.Repeat("x", 80), "vm/../1"} {
		got := JailID(in)
		if len(got) > 64 || strings.ContainsFunc(got, func(r rune) bool {
			return !(r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z')
		}) || got == JailID(in+"x") {
			t.Errorf("JailID(%q) = %q", in, got)
		}
	}
}

func TestJailedPlan(t *testing.T) {
	bin, _ := fakeBinary(t)
	spec := testSpec(t)
	base := t.TempDir()
	e := New(Config{Firecracker: bin, UseJailer: true, Jailer: bin, ChrootBase: base, UID: 1000, GID: 1000})
	st, err := e.plan(context.Background(), &spec, startMode{})
	if err != nil {
		t.Fatal(err)
	}
	wantChroot := filepath.Join(base, "firecracker", "vm1", "root")
	if st.ChrootDir != wantChroot || st.APISocket != wantChroot+"/fc.sock" || st.APISockArg != "/fc.sock" {
		t.Errorf("plan: %+v", st)
	}
	if !slices.Contains(st.Argv, "--chroot-base-dir") || st.Argv[len(st.Argv)-1] != "/fc.sock" {
		t.Errorf("argv %q", st.Argv)
	}
	// After exec the jailer's argv is firecracker's.
	if !st.ours([]string{"/firecracker", "--id=vm1", "--start-time-us=1", "--api-sock", "/fc.sock"}) ||
		st.ours([]string{"/firecracker", "--id=vm2", "--api-sock", "/fc.sock"}) {
		t.Error("ours() does not tell jailed VMs apart")
	}
	pipes, err := makePipes(spec.Dir, os.Getuid(), os.Getgid())
	if err != nil {
		t.Fatal(err)
	}
	defer closeAll(pipes)
	p, err := stageJail(st, spec, os.Getuid(), os.Getgid())
	if err != nil {
		t.Fatal(err)
	}
	if p.kernel != "/vmlinux" || p.initrd != "/initrd" || !slices.Equal(p.disks, []string{"/vda", "/vdb"}) {
		t.Errorf("api paths %+v", p)
	}
	a, _ := os.Stat(spec.Disks[1].Path)
	b, _ := os.Stat(filepath.Join(wantChroot, "vdb"))
	if !os.SameFile(a, b) {
		t.Error("writable disk not hard-linked")
	}
}

func TestCheckKernelAndVersion(t *testing.T) {
	d := t.TempDir()
	k := filepath.Join(d, "k")
	os.WriteFile(k, elfKernel(), 0o644)
	if err := CheckKernel(k); err != nil {
		t.Error(err)
	}
	arm := elfKernel()
	arm[18] = 183
	os.WriteFile(k, arm, 0o644)
	if err := CheckKernel(k); err == nil || !strings.Contains(err.Error(), "x86-64") {
		t.Errorf("aarch64 ELF: %v", err)
	}
	os.WriteFile(k, []byte("garbage"), 0o644)
	if err := CheckKernel(k); err == nil {
		t.Error("garbage accepted")
	}
	for _, tt := range []struct {
		out string
		ok  bool
	}{
		{"Firecracker v1.10.1\n\n", true},
		{"Firecracker v1.8.0", true},
		{"Firecracker v1.7.3", false},
		{"Firecracker v0.25.0", false},
	} {
		v, err := ParseVersion(tt.out)
		if err != nil {
			t.Fatal(err)
		}
		if err := CheckVersion(v); (err == nil) != tt.ok {
			t.Errorf("%q: %v", tt.out, err)
		}
	}
	if _, err := ParseVersion("QEMU 8.2"); err == nil {
		t.Error("non-Firecracker version parsed")
	}
	// Supported takes what Version returns.
	if err := Supported("1.10.1"); err != nil {
		t.Error(err)
	}
	if err := Supported("1.7.3"); err == nil || !strings.Contains(err.Error(), "too old") {
		t.Errorf("1.7.3: %v", err)
	}
	if err := Supported("garbage"); err == nil {
		t.Error("garbage version supported")
	}
}

// TestDialAgentRetriesAndKeepsBytes: the first attempts are hung up on (no
// guest listener yet); bytes sent with the OK line reach the caller.
func TestDialAgentRetriesAndKeepsBytes(t *testing.T) {
	dir, _ := os.MkdirTemp("", "bfc")
	defer os.RemoveAll(dir)
	uds := filepath.Join(dir, VsockSocket)
	l, err := net.Listen("unix", uds)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var attempts atomic.Int32
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			line, _ := bufio.NewReader(c).ReadString('\n')
			if line != "CONNECT 1024\n" || attempts.Add(1) < 3 {
				c.Close()
				continue
			}
			c.Write([]byte("OK 1073741824\nhello from the guest"))
			c.Close()
		}
	}()
	inst := newInstance("vm1", state{VsockUDS: uds}, selfProcess(t), slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := inst.DialAgent(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	b, _ := io.ReadAll(c)
	if string(b) != "hello from the guest" || attempts.Load() != 3 {
		t.Errorf("got %q after %d attempts", b, attempts.Load())
	}

	// Nobody ever answers: bounded by ctx.
	l.Close()
	c.Close()
	ctx2, cancel2 := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel2()
	if _, err := inst.DialAgent(ctx2); err == nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("DialAgent without listener: %v", err)
	}
}

// TestFakeEnforcesFirecrackerRules checks the fake itself against the
// rules the engine tests rely on, through the engine's API client.
func TestFakeEnforcesFirecrackerRules(t *testing.T) {
	dir, _ := os.MkdirTemp("", "bfc")
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, APISocket)
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeFC{spec: mustSpec(t)}
	srv := &http.Server{Handler: f}
	go srv.Serve(l)
	defer srv.Close()
	c := newAPIClient(sock)
	ctx := context.Background()
	k := filepath.Join(dir, "vmlinux")
	os.WriteFile(k, elfKernel(), 0o644)

	wantFault := func(err error, msg string) {
		t.Helper()
		var ae *APIError
		if !errors.As(err, &ae) || ae.Status != 400 || !strings.Contains(ae.Fault, msg) {
			t.Errorf("got %v; want 400 %q", err, msg)
		}
	}
	wantFault(c.action(ctx, "InstanceStart"), "without kernel configuration")
	wantFault(c.action(ctx, "SendCtrlAltDel"), "before starting")
	wantFault(c.do(ctx, "PUT", "/drives/vda", map[string]any{"drive_id": "vda", "is_root_device": false, "path_on_host": k, "bogus": 1}, nil), "unknown field")
	drive := func(id string, root bool) error {
		return c.do(ctx, "PUT", "/drives/"+id, driveBody{DriveID: id, PathOnHost: k, IsRootDevice: root, IsReadOnly: true}, nil)
	}
	if err := drive("vda", true); err != nil {
		t.Fatal(err)
	}
	wantFault(drive("vdb", true), "root block device already exists")
	if err := c.do(ctx, "PUT", "/boot-source", bootSourceBody{KernelImagePath: k}, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.action(ctx, "InstanceStart"); err != nil {
		t.Fatal(err)
	}
	wantFault(c.action(ctx, "InstanceStart"), "not supported after starting")
	for _, r := range configRequests(engine.Spec{VCPU: 1, MemoryMiB: 128, Disks: []engine.Disk{{Path: k}}, Net: &engine.NetSpec{TapName: "t"}}, state{VsockCID: 3},
		apiPaths{kernel: k, disks: []string{k}, logFile: k, vsock: "/v"}) {
		if r.Path == "/actions" {
			continue
		}
		wantFault(c.do(ctx, r.Method, r.Path, r.Body, nil), "not supported after starting")
	}
	if ii, err := c.instanceInfo(ctx); err != nil || ii.State != "Running" {
		t.Errorf("GET / = %+v, %v", ii, err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, v := range f.violations {
		if !strings.Contains(v, "bogus") {
			t.Errorf("unexpected violation: %s", v)
		}
	}
}

// selfProcess is a live process handle for Instance tests that need one.
func selfProcess(t *testing.T) *proc.Process {
	p, err := proc.Open(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	return p
}
