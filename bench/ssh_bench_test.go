package bench

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/bangervm/banger/internal/network/nettest"
	"github.com/bangervm/banger/internal/testutil"
)

// BenchmarkSSHVsExec compares `ssh web.vm true` (plain OpenSSH through
// banger's ssh_config, to the agent's SSH server over the bridge) with
// `banger vm exec web -- true` (through the daemon and the agent's
// virtio-serial channel) on one running VM, alternating. It runs inside a
// network namespace it creates, with its own daemon there.
func BenchmarkSSHVsExec(b *testing.B) {
	nettest.Require(b)
	testutil.RequireTool(b, "ssh", "openssh-client")
	shared := sharedVMBench(b)
	ns := nettest.NewNS(b)
	home, err := os.MkdirTemp("", "bs-")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(home)
	run := func(args ...string) (string, error) {
		cmd := exec.Command("ip", append([]string{"netns", "exec", ns, filepath.Join(shared.bin, "banger")}, args...)...)
		cmd.Env = append(os.Environ(), "BANGER_HOME="+home, "BANGERD="+filepath.Join(shared.bin, "bangerd"), "BANGER_NETWORK=on", "HOME="+home)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		if err := cmd.Run(); err != nil {
			return "", fmt.Errorf("banger %v: %v: %s", args, err, errb.String())
		}
		return out.String(), nil
	}
	must := func(args ...string) string {
		out, err := run(args...)
		if err != nil {
			b.Fatal(err)
		}
		return out
	}
	defer func() {
		run("vm", "delete", "-f", "web")
		run("daemon", "stop")
	}()
	var k struct{ Vmlinux, Initrd string }
	json.Unmarshal([]byte(shared.ok(b, "kernel", "show", "debian-cloud", "--json")), &k)
	var img struct{ RootFS string }
	json.Unmarshal([]byte(shared.ok(b, "image", "show", "bb", "--json")), &img)
	must("kernel", "import", k.Vmlinux, "--initrd", k.Initrd, "--name", "debian-cloud")
	must("image", "register", "--name", "bb", "--rootfs", img.RootFS, "--kernel", "debian-cloud")
	must("vm", "run", "-d", "--name", "web", "--image", "bb")
	cfg := strings.TrimSpace(must("ssh-config"))
	ssh := func() error {
		cmd := exec.Command("ip", "netns", "exec", ns, "ssh", "-F", cfg, "-o", "BatchMode=yes", "web.vm", "true")
		cmd.Env = append(os.Environ(), "HOME="+home, "BANGER_HOME="+home)
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("ssh: %v: %s", err, out)
		}
		return nil
	}
	for i := 0; ssh() != nil; i++ { // the agent's sshd starts with the guest
		if i > 40 {
			b.Fatal(ssh())
		}
		time.Sleep(250 * time.Millisecond)
	}
	rounds := vmRounds(b) * 2
	var tSSH, tExec []time.Duration
	for i := 0; i < rounds; i++ {
		t0 := time.Now()
		if err := ssh(); err != nil {
			b.Fatal(err)
		}
		tSSH = append(tSSH, time.Since(t0))
		t0 = time.Now()
		must("vm", "exec", "web", "--", "true")
		tExec = append(tExec, time.Since(t0))
	}
	med := func(d []time.Duration) time.Duration {
		sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
		return d[len(d)/2]
	}
	ms, me := med(tSSH), med(tExec)
	fmt.Printf("ssh web.vm true: median %v; banger vm exec web -- true: median %v; ratio ssh/exec %.2f (%d rounds each, alternating)\n",
		ms.Round(time.Millisecond), me.Round(time.Millisecond), float64(ms)/float64(me), rounds)
	b.ReportMetric(float64(ms.Milliseconds()), "ssh-ms")
	b.ReportMetric(float64(me.Milliseconds()), "exec-ms")
	b.ReportMetric(float64(ms)/float64(me), "ratio")
}
