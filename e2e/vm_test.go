package e2e

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/bangervm/banger/internal/engine/enginetest"
	"github.com/bangervm/banger/internal/testutil"
)

// vmEnv is one banger home with Debian's cloud kernel imported and a
// busybox image pulled from the in-process registry, shared by the VM
// tests (each uses its own VM names).
type vmEnv struct {
	*env
	image  string
	rootfs string
}

var (
	vmOnce   sync.Once
	vmShared *vmEnv
	vmErr    string
)

func sharedVMEnv(t *testing.T) *vmEnv {
	t.Helper()
	testutil.RequireTool(t, "qemu-system-x86_64", "qemu-system-x86")
	vmOnce.Do(func() {
		deb := enginetest.DebianCloudDeb(t)
		home, err := os.MkdirTemp("", "bh-vm-")
		if err != nil {
			vmErr = err.Error()
			return
		}
		e := &env{t: t, home: home}
		reg := testutil.NewRegistry(t)
		ref := reg.Push(t, testutil.BusyboxImage(t), "test/busybox:1")
		for _, args := range [][]string{
			{"kernel", "import", "--deb", deb, "--name", "debian-cloud"},
			{"image", "pull", ref, "--name", "bb", "--kernel", "debian-cloud"},
		} {
			if r := e.run(args...); r.code != 0 {
				vmErr = fmt.Sprintf("banger %v: %s %s", args, r.out, r.err)
				return
			}
		}
		out := e.ok("image", "show", "bb", "--json")
		vmShared = &vmEnv{env: e, image: "bb", rootfs: jsonField(t, out, "rootfs")}
	})
	if vmShared == nil {
		t.Fatalf("VM test setup: %s", vmErr)
	}
	// Each test reports through its own t.
	e := *vmShared.env
	e.t = t
	return &vmEnv{env: &e, image: vmShared.image, rootfs: vmShared.rootfs}
}

// newVMEnvWith returns a banger home of its own whose config.toml is
// toml, written before its daemon starts (with extra environment), holding
// the shared env's kernel as debian-cloud and its busybox image as bb.
func newVMEnvWith(t *testing.T, toml string, extra ...string) *env {
	t.Helper()
	shared := sharedVMEnv(t)
	e := newEnv(t)
	e.writeConfig(toml)
	e.extra = append(e.extra, extra...)
	var k struct{ Vmlinux, Initrd string }
	testutilJSON(t, shared.ok("kernel", "show", "debian-cloud", "--json"), &k)
	e.ok("kernel", "import", k.Vmlinux, "--initrd", k.Initrd, "--name", "debian-cloud")
	e.ok("image", "register", "--name", "bb", "--rootfs", shared.rootfs, "--kernel", "debian-cloud")
	return e
}

func sha(t *testing.T, path string) string {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	io.Copy(h, f)
	return hex.EncodeToString(h.Sum(nil))
}

func TestVMRunCommands(t *testing.T) {
	e := sharedVMEnv(t)
	baseSum := sha(t, e.rootfs)

	r := e.run("vm", "run", "--rm", "--image", e.image, "--", "sh", "-c", "echo hi; echo err >&2; exit 7")
	if r.code != 7 || r.out != "hi\n" || !strings.Contains(r.err, "err") {
		t.Errorf("exit 7: code %d out %q err %q", r.code, r.out, r.err)
	}
	if r := e.run("vm", "run", "--rm", "--image", e.image, "--", "true"); r.code != 0 {
		t.Errorf("true: %+v", r)
	}
	if r := e.run("vm", "run", "--rm", "--image", e.image, "--", "sh", "-c", "kill -9 $$"); r.code != 128+9 {
		t.Errorf("killed by SIGKILL: exit %d, want 137", r.code)
	}
	// Env and working dir come from the image config.
	r = e.run("vm", "run", "--rm", "--image", e.image, "--", "sh", "-c", "echo $GREETING; pwd; cat marker")
	if r.code != 0 || r.out != "hello-from-image\n/srv\nfrom the image\n" {
		t.Errorf("image config: %+v", r)
	}
	if out := e.ok("vm", "list", "--json"); strings.TrimSpace(out) != "[]" {
		t.Errorf("--rm left VMs: %s", out)
	}
	if entries, _ := os.ReadDir(filepath.Join(e.home, "state", "vms")); len(entries) != 0 {
		t.Errorf("--rm left %d VM dirs", len(entries))
	}
	if got := sha(t, e.rootfs); got != baseSum {
		t.Error("base image changed")
	}
}

func TestVMExecAndPersistence(t *testing.T) {
	e := sharedVMEnv(t)
	baseSum := sha(t, e.rootfs)
	e.ok("vm", "run", "-d", "--name", "box", "--image", e.image)
	e.ok("vm", "run", "-d", "--name", "box2", "--image", e.image)
	defer e.run("vm", "delete", "-f", "box", "box2")

	// stdin is piped.
	cmd := e.cmd(t.Context(), "vm", "exec", "box", "--", "tr", "a-z", "A-Z")
	cmd.Stdin = strings.NewReader("piped input\n")
	out, err := cmd.Output()
	if err != nil || string(out) != "PIPED INPUT\n" {
		t.Errorf("stdin: %q %v", out, err)
	}
	// A PTY.
	if out := e.ok("vm", "exec", "-t", "box", "--", "tty"); !strings.HasPrefix(out, "/dev/pts/") {
		t.Errorf("tty: %q", out)
	}
	if r := e.run("vm", "exec", "box", "--", "sh", "-c", "exit 3"); r.code != 3 {
		t.Errorf("exec exit status: %d", r.code)
	}

	// Writes to / land on the VM's own disk, invisible to the other VM.
	e.ok("vm", "exec", "box", "--", "sh", "-c", "echo mine > /etc/box-only && echo x > /root/keep")
	if r := e.run("vm", "exec", "box2", "--", "cat", "/etc/box-only"); r.code == 0 {
		t.Errorf("box2 sees box's write: %q", r.out)
	}
	// Stop (synced) and start keep the file.
	if out := e.ok("vm", "stop", "box"); !strings.Contains(out, "synced") {
		t.Errorf("stop: %q", out)
	}
	if out := e.ok("vm", "show", "box", "--json"); !strings.Contains(out, `"state": "stopped"`) {
		t.Errorf("after stop: %s", out)
	}
	e.ok("vm", "start", "box")
	if out := e.ok("vm", "exec", "box", "--", "cat", "/etc/box-only", "/root/keep"); out != "mine\nx\n" {
		t.Errorf("after restart: %q", out)
	}
	// stats and logs.
	type stats struct {
		SampledAt    time.Time
		HostRssBytes uint64
		Guest        *struct{ MemTotalBytes, DiskReadBytes, DiskWriteBytes uint64 }
	}
	var st stats
	json.Unmarshal([]byte(e.ok("vm", "stats", "box", "--json")), &st)
	// The guest read its image and wrote its disk while booting.
	if st.HostRssBytes == 0 || st.Guest == nil || st.Guest.MemTotalBytes == 0 || st.Guest.DiskReadBytes == 0 || st.Guest.DiskWriteBytes == 0 {
		t.Errorf("stats: %+v", st)
	}
	// Followed: one JSON sample per line until the command is stopped.
	ctx, cancel := context.WithCancel(context.Background())
	follow := e.cmd(ctx, "vm", "stats", "box", "--stream", "--json", "--interval", "200ms")
	pipe, _ := follow.StdoutPipe()
	if err := follow.Start(); err != nil {
		t.Fatal(err)
	}
	var samples []stats
	sc := bufio.NewScanner(pipe)
	for len(samples) < 3 && sc.Scan() {
		var s stats
		if err := json.Unmarshal(sc.Bytes(), &s); err != nil {
			t.Errorf("stats --stream --json line %q: %v", sc.Text(), err)
		}
		samples = append(samples, s)
	}
	cancel()
	follow.Wait()
	if len(samples) != 3 || !samples[2].SampledAt.After(samples[0].SampledAt) {
		t.Errorf("followed stats: %+v", samples)
	}
	if out := e.ok("vm", "logs", "box"); !strings.Contains(out, "banger-agent") {
		t.Errorf("logs lack the agent's lines: %q", out[max(0, len(out)-300):])
	}
	// ps lists running VMs.
	if out := e.ok("ps"); !strings.Contains(out, "box") || !strings.Contains(out, "running") {
		t.Errorf("ps: %s", out)
	}
	// vm set only while stopped.
	if r := e.run("vm", "set", "box", "--memory", "300"); r.code != 1 || !strings.Contains(r.err, "running") {
		t.Errorf("set while running: %+v", r)
	}
	e.ok("vm", "kill", "box2")
	if out := e.ok("vm", "set", "box2", "--memory", "300"); !strings.Contains(out, "300 MiB") {
		t.Errorf("set: %s", out)
	}
	if got := sha(t, e.rootfs); got != baseSum {
		t.Error("base image changed after VMs wrote to /")
	}
	// Image in use cannot be deleted.
	if r := e.run("image", "delete", e.image); r.code != 1 || !strings.Contains(r.err, "used by vm") {
		t.Errorf("delete image in use: %+v", r)
	}
}

// TestVMStopDataSafety writes and stops at once, 20 times; every write must
// survive.
func TestVMStopDataSafety(t *testing.T) {
	e := sharedVMEnv(t)
	e.ok("vm", "run", "-d", "--name", "safe", "--image", e.image)
	defer e.run("vm", "delete", "-f", "safe")
	for i := 0; i < 20; i++ {
		e.ok("vm", "exec", "safe", "--", "sh", "-c", fmt.Sprintf("echo round-%d >> /root/log; dd if=/dev/urandom of=/root/blob-%d bs=64k count=4 2>/dev/null", i, i))
		if out := e.ok("vm", "stop", "safe"); !strings.Contains(out, "synced") {
			t.Fatalf("round %d: stop did not sync: %q", i, out)
		}
		e.ok("vm", "start", "safe")
		out := e.ok("vm", "exec", "safe", "--", "sh", "-c", "wc -l < /root/log; ls /root | grep -c blob")
		if want := fmt.Sprintf("%d\n%d\n", i+1, i+1); out != want {
			t.Fatalf("round %d: lost data: got %q want %q", i, out, want)
		}
	}
}

// TestVMSurvivesDaemonKill: kill -9 the daemon while a VM runs; the next
// CLI call starts a new daemon that re-attaches, and the VM still works.
// A VM whose engine died meanwhile is marked stopped.
func TestVMSurvivesDaemonKill(t *testing.T) {
	e := sharedVMEnv(t)
	e.ok("vm", "run", "-d", "--name", "survivor", "--image", e.image)
	e.ok("vm", "run", "-d", "--name", "victim", "--image", e.image)
	defer e.run("vm", "delete", "-f", "survivor", "victim")
	var victim struct{ PID int }
	json.Unmarshal([]byte(e.ok("vm", "show", "victim", "--json")), &victim)
	e.ok("vm", "exec", "survivor", "--", "sh", "-c", "echo before > /root/f")

	pid := e.daemonPID()
	syscall.Kill(pid, syscall.SIGKILL)
	for processAlive(pid) {
		time.Sleep(10 * time.Millisecond)
	}
	syscall.Kill(victim.PID, syscall.SIGKILL)
	for processAlive(victim.PID) {
		time.Sleep(10 * time.Millisecond)
	}

	if out := e.ok("vm", "exec", "survivor", "--", "cat", "/root/f"); out != "before\n" {
		t.Errorf("after daemon restart: %q", out)
	}
	if e.daemonPID() == pid {
		t.Fatal("daemon was not restarted")
	}
	if out := e.ok("vm", "show", "victim", "--json"); !strings.Contains(out, `"state": "stopped"`) {
		t.Errorf("victim: %s", out)
	}
	if out := e.ok("vm", "stop", "survivor"); !strings.Contains(out, "synced") {
		t.Errorf("stop after reattach: %q", out)
	}
}

func TestVMBadInput(t *testing.T) {
	e := sharedVMEnv(t)
	before := e.vmLeftovers()
	e.ok("vm", "create", "--name", "taken", "--image", e.image, "--no-start")
	defer e.run("vm", "delete", "-f", "taken")
	// The cloud kernel without its initramfs has no virtio drivers: the
	// guest cannot find its disks, and its init gives up, which panics
	// the kernel.
	var k struct{ Vmlinux string }
	json.Unmarshal([]byte(e.ok("kernel", "show", "debian-cloud", "--json")), &k)
	e.ok("kernel", "import", k.Vmlinux, "--name", "panicky")
	defer e.run("kernel", "rm", "panicky")

	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"unknown image", []string{"vm", "run", "--rm", "--image", "nope", "--", "true"}, 125, `image "nope" not found`},
		{"unknown kernel", []string{"vm", "run", "--rm", "--image", e.image, "--kernel", "nope", "--", "true"}, 125, `kernel "nope" not found`},
		{"name taken", []string{"vm", "create", "--name", "taken", "--image", e.image}, 1, "exists"},
		{"invalid name", []string{"vm", "create", "--name", "Not_A Name", "--image", e.image}, 1, "vm name"},
		{"memory above host RAM", []string{"vm", "run", "--rm", "--image", e.image, "--memory", "10000000", "--", "true"}, 125, "host's"},
		{"kernel panic at boot", []string{"vm", "run", "--rm", "--image", e.image, "--kernel", "panicky", "--", "true"}, 125, "did not boot"},
		{"-d with --rm", []string{"vm", "run", "-d", "--rm"}, 2, "cannot be combined"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.run(tc.args...)
			if r.code != tc.code || !strings.Contains(r.err, tc.want) {
				t.Errorf("exit %d stderr %q; want exit %d mentioning %q", r.code, r.err, tc.code, tc.want)
			}
			if got := e.vmLeftovers(); got != before+1 {
				t.Errorf("leftovers after failure: %d, want %d (only 'taken')", got, before+1)
			}
		})
	}
}

// vmLeftovers counts VM records, VM directories and QEMU processes of this
// home, which must all agree.
func (e *env) vmLeftovers() int {
	e.t.Helper()
	var vms []json.RawMessage
	json.Unmarshal([]byte(e.ok("vm", "list", "--json")), &vms)
	dirs, _ := os.ReadDir(filepath.Join(e.home, "state", "vms"))
	if len(dirs) != len(vms) {
		e.t.Errorf("%d VM records but %d VM dirs", len(vms), len(dirs))
	}
	return len(vms) + e.qemuProcesses()
}

// qemuProcesses counts the engine processes of VMs (their files are under
// state/vms), not of a template the daemon is making in the background
// (under cache/templates).
func (e *env) qemuProcesses() int {
	out, _ := exec.Command("pgrep", "-f", "qemu-system-x86_64.*"+filepath.Join(e.home, "state", "vms")).Output()
	return len(strings.Fields(string(out)))
}

// TestVMEngineMissing: with the engine binary missing, vm run fails with
// an error that names the fix, and leaves nothing behind.
func TestVMEngineMissing(t *testing.T) {
	e := newVMEnvWith(t, "qemu_bin = \"/nonexistent/qemu-system-x86_64\"\n")
	r := e.run("vm", "run", "--rm", "--image", "bb", "--", "true")
	if r.code != 125 || !strings.Contains(r.err, "qemu") || !strings.Contains(r.err, "qemu-system-x86") {
		t.Errorf("exit %d stderr %q; want an error naming QEMU and its package", r.code, r.err)
	}
	if n := e.vmLeftovers(); n != 0 {
		t.Errorf("%d leftovers", n)
	}
}

// TestVMImageWithInit: an image whose command is an init (busybox init
// here, systemd in real images) gets PID 1; the agent serves beside it,
// and stop still syncs.
func TestVMImageWithInit(t *testing.T) {
	e := sharedVMEnv(t)
	reg := testutil.NewRegistry(t)
	base := testutil.BusyboxImage(t)
	withInit := testutil.Image(t, v1.Config{Env: []string{"PATH=/bin:/sbin"}, Cmd: []string{"/sbin/init"}},
		mustTarOf(t, base),
		testutil.Tar(t,
			testutil.TarEntry{Name: "sbin/init", Type: '2', Linkname: "/bin/busybox"},
			testutil.TarEntry{Name: "etc/inittab", Body: "::sysinit:/bin/touch /run/init-ran\n"},
		))
	ref := reg.Push(t, withInit, "test/with-init:1")
	e.ok("image", "pull", ref, "--name", "bbinit", "--kernel", "debian-cloud")
	defer e.run("image", "delete", "bbinit")
	e.ok("vm", "run", "-d", "--name", "inity", "--image", "bbinit")
	defer e.run("vm", "delete", "-f", "inity")
	out := e.ok("vm", "exec", "inity", "--", "sh", "-c", "cat /proc/1/comm; sleep 0.5; ls /run/init-ran")
	if out != "init\n/run/init-ran\n" {
		t.Errorf("PID 1 and its sysinit: %q", out)
	}
	e.ok("vm", "exec", "inity", "--", "sh", "-c", "echo kept > /root/f")
	if out := e.ok("vm", "stop", "inity"); !strings.Contains(out, "synced") {
		t.Errorf("stop under the image's init: %q", out)
	}
	e.ok("vm", "start", "inity")
	if out := e.ok("vm", "exec", "inity", "--", "cat", "/root/f"); out != "kept\n" {
		t.Errorf("after restart: %q", out)
	}
}

// mustTarOf returns the uncompressed tar of an image's single layer.
func mustTarOf(t *testing.T, img v1.Image) []byte {
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers: %v %d", err, len(layers))
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
