package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bangervm/banger/internal/agentproto"
	"github.com/bangervm/banger/internal/initrd"
	"github.com/bangervm/banger/internal/kernel"
	"github.com/bangervm/banger/internal/testutil"
)

// requireOr skips the test, or fails it under CI=true, where a missing
// prerequisite is a broken setup rather than a reason to skip.
func requireOr(t *testing.T, format string, args ...any) {
	t.Helper()
	testutil.Missing(t, format, args...)
}

func debianCloudDeb(t *testing.T) string {
	return testutil.DebianCloudDeb(t, kernel.AptDownload)
}

func run(t *testing.T, name string, args ...string) []byte {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

// tscKHz is the host TSC rate for tsc_early_khz: without it TCG guests hang
// at random in TSC calibration. cpu MHz is the TSC rate on VM hosts.
func tscKHz(t *testing.T) string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "cpu MHz" {
			var mhz float64
			if _, err := fmt.Sscan(strings.TrimSpace(v), &mhz); err == nil {
				return fmt.Sprint(int(mhz * 1000))
			}
		}
	}
	t.Fatal("no cpu MHz in /proc/cpuinfo")
	return ""
}

// guest is a booted QEMU microVM with the agent as init.
type guest struct {
	dir     string
	base    string
	disk    string
	sock    string
	console string
	qemu    *exec.Cmd
	exited  chan struct{} // closed when QEMU has exited
	exitErr error
}

// bootGuest builds everything a guest needs (agent, kernel, busybox image,
// per-VM disk) and starts QEMU.
func bootGuest(t *testing.T) *guest {
	t.Helper()
	for _, tool := range []string{"qemu-system-x86_64", "mke2fs", "debugfs", "go"} {
		if _, err := exec.LookPath(tool); err != nil {
			requireOr(t, "%s not installed", tool)
		}
	}
	if _, err := os.Stat("/bin/busybox"); err != nil {
		requireOr(t, "busybox-static not installed: %v", err)
	}
	deb := debianCloudDeb(t)
	g := &guest{dir: t.TempDir(), exited: make(chan struct{})}
	ctx := context.Background()

	start := time.Now()
	agentBin := filepath.Join(g.dir, "banger-agent")
	cmd := exec.Command("go", "build", "-o", agentBin, "github.com/bangervm/banger/cmd/banger-agent")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build agent: %v\n%s", err, out)
	}
	stage := filepath.Join(g.dir, "kernel")
	if _, err := kernel.ImportDeb(ctx, stage, deb); err != nil {
		t.Fatal(err)
	}

	// The image: a busybox root.
	root := filepath.Join(g.dir, "rootfs")
	for _, d := range []string{"bin", "sbin", "usr/bin", "usr/sbin", "etc", "dev", "proc", "sys", "tmp", "root", "run"} {
		os.MkdirAll(filepath.Join(root, d), 0o755)
	}
	run(t, "cp", "/bin/busybox", filepath.Join(root, "bin/busybox"))
	for _, a := range strings.Fields(string(run(t, "/bin/busybox", "--list"))) {
		if a != "busybox" {
			os.Symlink("busybox", filepath.Join(root, "bin", a))
		}
	}
	os.WriteFile(filepath.Join(root, "etc/passwd"), []byte("root:x:0:0:root:/root:/bin/sh\n"), 0o644)
	os.WriteFile(filepath.Join(root, "etc/group"), []byte("root:x:0:\n"), 0o644)
	g.base = filepath.Join(g.dir, "base.ext4")
	run(t, "mke2fs", "-q", "-F", "-t", "ext4", "-d", root, g.base, "64M")
	g.disk = filepath.Join(g.dir, "disk.ext4")
	run(t, "truncate", "-s", "1G", g.disk)
	run(t, "mke2fs", "-q", "-F", "-t", "ext4", "-E", "lazy_itable_init=1,lazy_journal_init=1", g.disk)

	// The initrd: the kernel's modules archive, then the agent's.
	initrdPath := filepath.Join(g.dir, "initrd")
	kinitrd, err := os.ReadFile(filepath.Join(stage, kernel.InitrdFile))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	buf.Write(kinitrd)
	cfg := agentproto.BootConfig{
		Hostname: "agent-test",
		Env:      []string{"PATH=/bin:/sbin:/usr/bin:/usr/sbin", "IMAGE_ENV=1"},
		Root:     &agentproto.RootConfig{Image: "/dev/vda", Disk: "/dev/vdb"},
	}
	if err := initrd.WriteInitramfs(&buf, agentBin, cfg); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(initrdPath, buf.Bytes(), 0o644)
	t.Logf("prepared in %s", time.Since(start).Round(time.Millisecond))

	// Short socket path: unix sockets are limited to 108 bytes.
	sockDir, err := os.MkdirTemp("", "bga")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	g.sock = filepath.Join(sockDir, "agent.sock")
	g.console = filepath.Join(g.dir, "console.log")
	g.qemu = exec.Command("qemu-system-x86_64",
		"-accel", "tcg", "-M", "microvm,x-option-roms=off", "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
		"-m", "256M", "-kernel", filepath.Join(stage, kernel.VmlinuxFile), "-initrd", initrdPath,
		"-serial", "file:"+g.console,
		"-drive", "id=img,file="+g.base+",format=raw,if=none,readonly=on", "-device", "virtio-blk-device,drive=img",
		"-drive", "id=rw,file="+g.disk+",format=raw,if=none", "-device", "virtio-blk-device,drive=rw",
		"-device", "virtio-serial-device",
		"-chardev", "socket,path="+g.sock+",server=on,wait=off,id=agent",
		"-device", "virtserialport,chardev=agent,name="+agentproto.DefaultPortName,
		"-append", "console=ttyS0 quiet panic=-1 tsc_early_khz="+tscKHz(t))
	var qout bytes.Buffer
	g.qemu.Stdout, g.qemu.Stderr = &qout, &qout
	if err := g.qemu.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { g.exitErr = g.qemu.Wait(); close(g.exited) }()
	t.Cleanup(func() {
		select {
		case <-g.exited:
		default:
			_ = g.qemu.Process.Kill()
			<-g.exited
		}
		if t.Failed() {
			c, _ := os.ReadFile(g.console)
			t.Logf("qemu: %s\nconsole:\n%s", qout.String(), c)
		}
	})
	return g
}

// dial connects to the agent, waiting for QEMU's socket and the guest boot.
func (g *guest) dial(t *testing.T) *agentproto.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var conn net.Conn
	for {
		var err error
		if conn, err = net.Dial("unix", g.sock); err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("dial %s: %v", g.sock, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	c, err := agentproto.Connect(ctx, conn, agentproto.ClientConfig{})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestRealGuest(t *testing.T) {
	testutil.SkipShort(t, "boots a VM")
	g := bootGuest(t)
	baseSum := sha256File(t, g.base)
	start := time.Now()
	ctx := context.Background()

	c := g.dial(t)
	info, err := c.Health(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("agent ready after %s: %+v", time.Since(start).Round(time.Millisecond), info)
	if info.PID != 1 || info.Hostname != "agent-test" {
		t.Errorf("info = %+v", info)
	}

	var out, errOut testutil.LockedBuffer
	st, err := c.Exec(ctx, agentproto.ExecRequest{Argv: []string{"sh", "-c", "echo hi; exit 7"}}, agentproto.ExecIO{Stdout: &out, Stderr: &errOut})
	if err != nil || st.Code != 7 || out.String() != "hi\n" {
		t.Fatalf("exec: %+v %v stdout %q stderr %q", st, err, out.String(), errOut.String())
	}

	// The host drops the connection; a new one (a restarted daemon) works.
	c.Close()
	c = g.dial(t)
	defer c.Close()

	const content = "written through the agent\n"
	if err := c.WriteFile(ctx, "/root/hello.txt", 0o600, strings.NewReader(content)); err != nil {
		t.Fatal(err)
	}
	out = testutil.LockedBuffer{}
	script := `cat /root/hello.txt; echo $IMAGE_ENV; grep VmRSS /proc/1/status; grep -c ' /.banger/' /proc/mounts; ls -d /dev/pts/ptmx /tmp`
	if _, err := c.Exec(ctx, agentproto.ExecRequest{Argv: []string{"sh", "-c", script}}, agentproto.ExecIO{Stdout: &out, Stderr: &out}); err != nil {
		t.Fatal(err)
	}
	t.Logf("guest:\n%s", out.String())
	if !strings.HasPrefix(out.String(), content+"1\n") {
		t.Errorf("guest output %q", out.String())
	}
	var tty testutil.LockedBuffer
	if st, err := c.Exec(ctx, agentproto.ExecRequest{Argv: []string{"tty"}, TTY: true, Rows: 30, Cols: 100}, agentproto.ExecIO{Stdout: &tty}); err != nil || st.Code != 0 || !strings.HasPrefix(tty.String(), "/dev/pts/") {
		t.Errorf("tty: %+v %v %q", st, err, tty.String())
	}
	stats, err := c.Stats(ctx)
	if err != nil || stats.Disk == nil || stats.MemTotal == 0 {
		t.Errorf("stats %+v %v", stats, err)
	}

	shutStart := time.Now()
	if err := c.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-g.exited:
		if g.exitErr != nil {
			t.Errorf("qemu: %v", g.exitErr)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the VM did not power off after Shutdown")
	}
	t.Logf("shutdown took %s", time.Since(shutStart).Round(time.Millisecond))

	if sha256File(t, g.base) != baseSum {
		t.Error("the base image changed")
	}
	got := run(t, "debugfs", "-R", "cat /upper/root/hello.txt", g.disk)
	if !strings.Contains(string(got), content) {
		t.Errorf("per-VM disk has %q", got)
	}
	// The disk was left consistent: no journal replay needed.
	if out, err := exec.Command("e2fsck", "-fn", g.disk).CombinedOutput(); err != nil {
		t.Errorf("e2fsck -fn: %v\n%s", err, out)
	}
	console, _ := os.ReadFile(g.console)
	if !strings.Contains(string(console), "banger-agent: ") {
		t.Error("no agent lines on the console")
	}
}

func sha256File(t *testing.T, path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", sha256.Sum256(b))
}
