package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bangervm/banger/internal/agentproto"
	"github.com/bangervm/banger/internal/initrd"
	"github.com/bangervm/banger/internal/kernel"
	"github.com/bangervm/banger/internal/kernel/cpio"
	"github.com/bangervm/banger/internal/testutil"
)

// syncBuffer collects a child's output for the failure log.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// stagedKernel imports Debian's cloud kernel once into the test cache and
// returns its directory (vmlinux, initrd.img).
func stagedKernel(t *testing.T) string {
	t.Helper()
	deb := testutil.DebianCloudDeb(t, kernel.AptDownload)
	dir := filepath.Join(testutil.CacheDir(t), "fcdouble", strings.TrimSuffix(filepath.Base(deb), ".deb"))
	if _, err := os.Stat(filepath.Join(dir, kernel.VmlinuxFile)); err == nil {
		return dir
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		t.Fatal(err)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), ".stage-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := kernel.ImportDeb(ctx, tmp, deb); err != nil {
		testutil.Require(t, false, "import Debian's cloud kernel: "+err.Error())
	}
	if err := os.Rename(tmp, dir); err != nil {
		if _, serr := os.Stat(filepath.Join(dir, kernel.VmlinuxFile)); serr != nil {
			t.Fatal(err) // not a lost race with another run
		}
	}
	return dir
}

func pad(b *bytes.Buffer) {
	if r := b.Len() % 512; r != 0 {
		b.Write(make([]byte, 512-r))
	}
}

// writeGuestInitrd concatenates, as banger's VM manager does, the kernel's
// initramfs, the agent archive, a busybox archive (so the kernel-only guest
// has an echo) and the boot configuration, each 512-byte aligned.
func writeGuestInitrd(t *testing.T, path, kernelInitrd, agentBin string) {
	t.Helper()
	var buf bytes.Buffer
	k, err := os.ReadFile(kernelInitrd)
	if err != nil {
		t.Fatal(err)
	}
	buf.Write(k)
	pad(&buf)
	if err := initrd.WriteAgentArchive(&buf, agentBin); err != nil {
		t.Fatal(err)
	}
	pad(&buf)
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatal(err)
	}
	cw := cpio.NewWriter(&buf)
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(cw.WriteHeader(&cpio.Header{Name: "bin", Mode: cpio.TypeDir | 0o755}))
	must(cw.WriteHeader(&cpio.Header{Name: "bin/busybox", Mode: cpio.TypeReg | 0o755, Size: int64(len(bb))}))
	_, err = cw.Write(bb)
	must(err)
	for _, l := range []string{"echo", "sh"} {
		must(cw.WriteHeader(&cpio.Header{Name: "bin/" + l, Mode: cpio.TypeSymlink | 0o777, Linkname: "busybox"}))
	}
	must(cw.Close())
	pad(&buf)
	must(initrd.WriteBootConfigArchive(&buf, agentproto.BootConfig{Hostname: "fcdouble"}))
	must(os.WriteFile(path, buf.Bytes(), 0o644))
}

// double is a running fcdouble with a booted guest.
type double struct {
	cmd            *exec.Cmd
	exited         chan struct{} // closed once the double has exited
	waitErr        error
	stdout, stderr syncBuffer
	apiSock, uds   string
	api            *apiClient
	begin          time.Time
}

// bootDouble builds the double and the agent, starts the double, and
// configures and starts a guest through the API as banger configures
// Firecracker.
func bootDouble(t *testing.T) *double {
	testutil.RequireTool(t, "qemu-system-x86_64", "qemu-system-x86")
	testutil.RequireTool(t, "go", "golang")
	if b, err := os.ReadFile("/bin/busybox"); err != nil || !bytes.HasPrefix(b, []byte("\x7fELF")) {
		testutil.Require(t, false, "busybox-static at /bin/busybox")
	}
	kdir := stagedKernel(t)
	d := &double{begin: time.Now(), exited: make(chan struct{})}

	work := t.TempDir()
	build := exec.Command("go", "build", "-o", work+"/",
		"github.com/bangervm/banger/cmd/banger-agent",
		"github.com/bangervm/banger/internal/engine/firecracker/fcdouble")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	initrd := filepath.Join(work, "initrd.img")
	writeGuestInitrd(t, initrd, filepath.Join(kdir, kernel.InitrdFile), filepath.Join(work, "banger-agent"))
	disk := filepath.Join(work, "scratch.img")
	if err := os.WriteFile(disk, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("built and prepared in %s", time.Since(d.begin).Round(time.Millisecond))

	sdir := shortDir(t)
	d.apiSock, d.uds = filepath.Join(sdir, "fc.sock"), filepath.Join(sdir, "v.sock")
	d.cmd = exec.Command(filepath.Join(work, "fcdouble"), "--api-sock", d.apiSock, "--id", "fcdouble-test", "--level", "Debug", "--seccomp-level", "0")
	d.cmd.Stdout, d.cmd.Stderr = &d.stdout, &d.stderr
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.waitErr = d.cmd.Wait(); close(d.exited) }()
	t.Cleanup(func() {
		select {
		case <-d.exited:
		default:
			d.cmd.Process.Kill()
			<-d.exited
		}
		if t.Failed() {
			t.Logf("double stderr:\n%s\nconsole:\n%s", d.stderr.String(), d.stdout.String())
		}
	})

	d.api = &apiClient{t: t, c: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", d.apiSock)
		},
	}}}
	for i := 0; ; i++ {
		if _, err := os.Stat(d.apiSock); err == nil {
			break
		}
		if i > 250 {
			t.Fatal("the double did not create its API socket")
		}
		time.Sleep(20 * time.Millisecond)
	}
	a := d.api
	a.put("/machine-config", `{"vcpu_count": 1, "mem_size_mib": 256}`)
	a.put("/boot-source", fmt.Sprintf(`{"kernel_image_path": %q, "initrd_path": %q, "boot_args": "console=ttyS0 reboot=k panic=1 pci=off"}`,
		filepath.Join(kdir, kernel.VmlinuxFile), initrd))
	a.put("/drives/scratch", fmt.Sprintf(`{"drive_id": "scratch", "path_on_host": %q, "is_root_device": false, "is_read_only": true}`, disk))
	a.put("/vsock", fmt.Sprintf(`{"guest_cid": 3, "uds_path": %q}`, d.uds))
	a.put("/actions", `{"action_type": "InstanceStart"}`)
	var info map[string]string
	a.getJSON("/", &info)
	if info["state"] != "Running" {
		t.Fatalf("state %q after InstanceStart", info["state"])
	}
	return d
}

// TestBootAgent drives the double as banger drives Firecracker: configure
// through the API, InstanceStart, reach the agent through the hybrid vsock
// socket, run a command, shut down; the double exits with the guest.
func TestBootAgent(t *testing.T) {
	d := bootDouble(t)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	conn, err := net.Dial("unix", d.uds)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(conn, "CONNECT 1024\n"); err != nil {
		t.Fatal(err)
	}
	// Read the reply byte by byte: what follows belongs to the agent.
	var line []byte
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for b := make([]byte, 1); len(line) < 64; {
		if _, err := conn.Read(b); err != nil {
			t.Fatalf("reading the CONNECT reply: %v (got %q)", err, line)
		}
		if b[0] == '\n' {
			break
		}
		line = append(line, b[0])
	}
	conn.SetReadDeadline(time.Time{})
	if !strings.HasPrefix(string(line), "OK ") {
		t.Fatalf("CONNECT 1024 reply %q", line)
	}
	client, err := agentproto.Connect(ctx, conn, agentproto.ClientConfig{})
	if err != nil {
		t.Fatalf("agent handshake over the vsock bridge: %v", err)
	}
	defer client.Close()
	t.Logf("agent %s answered %s after launch", client.AgentVersion(), time.Since(d.begin).Round(time.Millisecond))

	var out, errOut bytes.Buffer
	st, err := client.Exec(ctx, agentproto.ExecRequest{Argv: []string{"echo", "hi"}}, agentproto.ExecIO{Stdout: &out, Stderr: &errOut})
	if err != nil {
		t.Fatalf("exec: %v", err)
	}
	if st.Code != 0 || out.String() != "hi\n" {
		t.Fatalf("echo hi: status %+v, stdout %q, stderr %q", st, out.String(), errOut.String())
	}

	if err := client.Shutdown(ctx); err != nil {
		t.Fatalf("agent shutdown: %v", err)
	}
	select {
	case <-d.exited:
		if d.waitErr != nil {
			t.Fatalf("the double exited with %v after the guest powered off", d.waitErr)
		}
	case <-ctx.Done():
		t.Fatal("the double did not exit after the guest powered off")
	}
	if !strings.Contains(d.stdout.String(), "Linux version") {
		t.Errorf("the guest's serial console did not reach the double's stdout")
	}
	if _, err := os.Stat(d.apiSock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("API socket left behind: %v", err)
	}
	t.Logf("total %s", time.Since(d.begin).Round(time.Millisecond))
}

// TestKillTakesQEMU: QEMU must not outlive a killed double.
func TestKillTakesQEMU(t *testing.T) {
	d := bootDouble(t)
	var kids []string
	for _, task := range mustGlob(t, fmt.Sprintf("/proc/%d/task/*/children", d.cmd.Process.Pid)) {
		if c, err := os.ReadFile(task); err == nil {
			kids = append(kids, strings.Fields(string(c))...)
		}
	}
	if len(kids) != 1 {
		t.Fatalf("the double has children %v, want one QEMU", kids)
	}
	qemuPid := kids[0]
	d.cmd.Process.Kill()
	<-d.exited
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, err := os.ReadFile("/proc/" + qemuPid + "/stat")
		// Gone, or a zombie waiting for init to reap it.
		if err != nil || strings.Contains(string(st), ") Z ") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("QEMU (pid %s) still runs after the double was killed", qemuPid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func mustGlob(t *testing.T, pattern string) []string {
	t.Helper()
	m, err := filepath.Glob(pattern)
	if err != nil {
		t.Fatal(err)
	}
	return m
}
