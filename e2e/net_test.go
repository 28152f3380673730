package e2e

import (
	"context"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bangervm/banger/internal/network/nettest"
	"github.com/bangervm/banger/internal/testutil"
)

// serveIn starts an HTTP server on addr inside namespace ns, answering
// with its own name; it lives as long as the test.
func serveIn(t *testing.T, ns, addr, name string) {
	t.Helper()
	var ln net.Listener
	var err error
	nettest.Do(t, ns, func() { ln, err = net.Listen("tcp", addr) })
	if err != nil {
		t.Fatalf("listen %s in %s: %v", addr, ns, err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s saw %s\n", name, r.RemoteAddr)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
}

// netEnv is a banger home whose daemon runs as root inside a network
// namespace the test made (banger's "host"), with an uplink namespace
// holding an "internet" server (203.0.113.10, the default route) and a
// "lan" namespace holding a server on the host's other network
// (10.77.0.10). Nothing touches the real host's network.
type netEnv struct {
	*env
	host string
}

func newNetEnv(t *testing.T) *netEnv { return newNetEnvAs(t, false, nil) }

// netConfig, when set, is written to the env's config.toml before the
// daemon first starts, with env as extra environment.
type netConfig struct {
	toml string
	env  []string
	// helperArgs, given the daemon's BANGER_HOME, are more arguments for
	// the root helper of an unprivileged env.
	helperArgs func(home string) []string
}

// newNetEnvAs makes the topology; with unprivileged, the daemon (and the
// CLI) run as uid 65534 and a root helper, started in the namespace,
// performs the network operations.
func newNetEnvAs(t *testing.T, unprivileged bool, beforeDaemon func(host string), cfg ...netConfig) *netEnv {
	nettest.Require(t)
	testutil.RequireTool(t, "qemu-system-x86_64", "qemu-system-x86")
	shared := sharedVMEnv(t)
	host, inet, lan := nettest.NewNS(t), nettest.NewNS(t), nettest.NewNS(t)
	nettest.MustIP(t, host, "link", "add", "up0", "type", "veth", "peer", "name", "up0p", "netns", inet)
	nettest.MustIP(t, host, "link", "add", "lan0", "type", "veth", "peer", "name", "lan0p", "netns", lan)
	// The "internet" is a router at the end of the uplink; its server
	// is not on any network the host is connected to.
	nettest.Script(t, host, `
		addr add 198.51.100.1/24 dev up0
		link set up0 up
		addr add 10.77.0.1/24 dev lan0
		link set lan0 up
		route add default via 198.51.100.2`)
	nettest.Script(t, inet, `
		addr add 198.51.100.2/24 dev up0p
		link set up0p up
		addr add 203.0.113.10/32 dev lo
		route add 172.16.0.0/12 via 198.51.100.1`)
	nettest.Script(t, lan, `
		addr add 10.77.0.10/24 dev lan0p
		link set lan0p up
		route add default via 10.77.0.1`)
	serveIn(t, inet, "203.0.113.10:8080", "internet")
	serveIn(t, lan, "10.77.0.10:8080", "lan")
	serveIn(t, host, "10.77.0.1:8081", "host")
	if beforeDaemon != nil {
		beforeDaemon(host)
	}

	e := newEnv(t)
	e.wrap = []string{"ip", "netns", "exec", host}
	e.extra = []string{"BANGER_NETWORK=on"}
	for _, c := range cfg {
		e.writeConfig(c.toml)
		e.extra = append(e.extra, c.env...)
	}
	var k struct{ Vmlinux, Initrd string }
	testutilJSON(t, shared.ok("kernel", "show", "debian-cloud", "--json"), &k)
	vmlinux, initrd, rootfs := k.Vmlinux, k.Initrd, shared.rootfs
	if unprivileged {
		const nobody = 65534
		// Inputs the unprivileged daemon can read, a home it owns, and
		// the binaries it runs.
		pub, err := os.MkdirTemp("", "bh-pub-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(pub) })
		os.Chmod(pub, 0o755)
		os.Chmod(binDir, 0o755)
		for _, f := range []*string{&vmlinux, &initrd, &rootfs} {
			dst := filepath.Join(pub, filepath.Base(*f))
			if out, err := exec.Command("cp", *f, dst).CombinedOutput(); err != nil {
				t.Fatalf("cp: %v %s", err, out)
			}
			os.Chmod(dst, 0o644)
			*f = dst
		}
		// The home, with the config written above, is the daemon's.
		filepath.WalkDir(e.home, func(p string, _ fs.DirEntry, err error) error {
			if err == nil {
				err = os.Chown(p, nobody, nobody)
			}
			return err
		})
		helperDir, err := os.MkdirTemp("", "bh-helper-")
		if err != nil {
			t.Fatal(err)
		}
		os.Chmod(helperDir, 0o755)
		sock := filepath.Join(helperDir, "root.sock")
		args := []string{"netns", "exec", host, filepath.Join(binDir, "bangerd"), "--root-helper", "--socket", sock, "--owner", "65534"}
		for _, c := range cfg {
			if c.helperArgs != nil {
				args = append(args, c.helperArgs(e.home)...)
			}
		}
		helper := exec.Command("ip", args...)
		var helperLog strings.Builder
		helper.Stdout, helper.Stderr = &helperLog, &helperLog
		if err := helper.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			helper.Process.Signal(syscall.SIGTERM)
			helper.Wait()
			os.RemoveAll(helperDir)
		})
		for i := 0; i < 100; i++ {
			if _, err := os.Stat(sock); err == nil {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		e.wrap = append(e.wrap, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")
		e.extra = append(e.extra, "BANGER_ROOT_HELPER="+sock, "HOME="+e.home)
	}
	e.ok("kernel", "import", vmlinux, "--initrd", initrd, "--name", "debian-cloud")
	e.ok("image", "register", "--name", "bb", "--rootfs", rootfs, "--kernel", "debian-cloud")
	t.Cleanup(func() { e.run("vm", "prune", "-f"); e.run("vm", "delete", "-f", "web", "other", "fullvm") })
	return &netEnv{env: e, host: host}
}

// fetch makes an HTTP request from the VM with busybox nc (busybox-static
// wget crashes resolving names without NSS) and returns the body, or "".
func (n *netEnv) fetch(vm, hostPort string) string {
	host, port, _ := strings.Cut(hostPort, ":")
	r := n.run("vm", "exec", vm, "--", "sh", "-c", `printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 3 "$0" "$1"`, host, port)
	if r.code != 0 {
		return ""
	}
	if _, body, ok := strings.Cut(r.out, "\r\n\r\n"); ok {
		return body
	}
	return ""
}

func TestNetworkModes(t *testing.T) {
	n := newNetEnv(t)
	n.ok("vm", "list") // the daemon is up: its bridge and chains exist
	rulesBefore, _ := nettest.Exec(n.host, "iptables-save")
	nftBefore, _ := nettest.Exec(n.host, "nft", "list", "ruleset")
	linksBefore := nettest.MustIP(t, n.host, "-o", "link")
	n.ok("vm", "run", "-d", "--name", "web", "--image", "bb")
	n.ok("vm", "run", "-d", "--name", "other", "--image", "bb")
	var web, other struct{ IP, Net string }
	testutilJSON(t, n.ok("vm", "show", "web", "--json"), &web)
	testutilJSON(t, n.ok("vm", "show", "other", "--json"), &other)
	if web.Net != "public" || web.IP == "" {
		t.Fatalf("default network: %+v", web)
	}
	// Public: the internet, masqueraded; not the LAN, not the host, not
	// another VM.
	if got := n.fetch("web", "203.0.113.10:8080"); !strings.HasPrefix(got, "internet saw 198.51.100.1:") {
		t.Errorf("public VM to the internet: %q (want it masqueraded as the host's uplink address)", got)
	}
	if got := n.fetch("web", "10.77.0.10:8080"); got != "" {
		t.Errorf("public VM reached the LAN: %q", got)
	}
	if got := n.fetch("web", "10.77.0.1:8081"); got != "" {
		t.Errorf("public VM reached the host's other address: %q", got)
	}
	serveGuest := n.cmd(context.Background(), "vm", "exec", "other", "--", "sh", "-c", "mkdir -p /tmp/w; echo vm-other > /tmp/w/index.html; httpd -f -p 8082 -h /tmp/w")
	serveGuest.Start()
	defer func() { serveGuest.Process.Kill(); serveGuest.Wait() }()
	// The guest server works (the host side reaches it: replies to
	// connections from the bridge side are allowed back)...
	got := ""
	for i := 0; i < 20 && !strings.Contains(got, "vm-other"); i++ {
		time.Sleep(250 * time.Millisecond)
		got = n.fetch("other", "127.0.0.1:8082")
	}
	if !strings.Contains(got, "vm-other") {
		t.Errorf("guest server not up: %q", got)
	}
	// ...but the other VM cannot reach it.
	if got := n.fetch("web", other.IP+":8082"); got != "" {
		t.Errorf("public VM reached another VM: %q", got)
	}
	// DNS for <vm>.vm on the daemon's loopback, inside the namespace.
	if out, _ := nettest.Exec(n.host, "dig", "@127.0.0.1", "-p", "42069", "+short", "web.vm"); strings.TrimSpace(out) != web.IP {
		t.Errorf("dig web.vm: %q, want %s", out, web.IP)
	}
	if out, _ := nettest.Exec(n.host, "dig", "@127.0.0.1", "-p", "42069", "nope.vm"); !strings.Contains(out, "NXDOMAIN") {
		t.Errorf("dig nope.vm: %s", out)
	}

	// Full: plain NAT, the LAN too.
	n.ok("vm", "run", "-d", "--net", "full", "--name", "fullvm", "--image", "bb")
	if got := n.fetch("fullvm", "10.77.0.10:8080"); !strings.HasPrefix(got, "lan saw") {
		t.Errorf("full VM to the LAN: %q", got)
	}
	if got := n.fetch("fullvm", "203.0.113.10:8080"); !strings.HasPrefix(got, "internet saw") {
		t.Errorf("full VM to the internet: %q", got)
	}
	// None: no NIC.
	if r := n.run("vm", "run", "--rm", "--net", "none", "--image", "bb", "--", "ls", "/sys/class/net"); r.code != 0 || strings.TrimSpace(r.out) != "lo" {
		t.Errorf("none: interfaces %q", r.out)
	}

	// Rules and taps go with the VMs: after delete, exactly as before.
	n.ok("vm", "delete", "-f", "web", "other", "fullvm")
	rulesAfter, _ := nettest.Exec(n.host, "iptables-save")
	if strip(rulesAfter) != strip(rulesBefore) {
		t.Errorf("ruleset changed:\nbefore:\n%s\nafter:\n%s", rulesBefore, rulesAfter)
	}
	// nftables too: the guard's per-VM set elements are gone.
	nftAfter, _ := nettest.Exec(n.host, "nft", "list", "ruleset")
	if stripNFT(nftAfter) != stripNFT(nftBefore) || !strings.Contains(nftBefore, "table bridge banger") {
		t.Errorf("nftables ruleset changed (or has no guard):\nbefore:\n%s\nafter:\n%s", nftBefore, nftAfter)
	}
	if links := nettest.MustIP(t, n.host, "-o", "link"); stripLinks(links) != stripLinks(linksBefore) {
		t.Errorf("links changed:\nbefore:\n%s\nafter:\n%s", linksBefore, links)
	}
}

// strip drops iptables-save's comments and counters, which change with time.
func strip(s string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, "#") {
			continue
		}
		if i := strings.Index(l, " ["); strings.HasPrefix(l, ":") && i > 0 {
			l = l[:i]
		}
		out = append(out, l)
	}
	return strings.Join(out, "\n")
}

// stripNFT drops nft's packet counters.
func stripNFT(s string) string {
	return regexp.MustCompile(`counter packets \d+ bytes \d+`).ReplaceAllString(s, "counter")
}

// stripLinks keeps each link's name, dropping flags and state the kernel
// changes by itself (a bridge's carrier follows its ports).
func stripLinks(s string) string {
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		f := strings.Fields(l)
		if len(f) >= 3 {
			out = append(out, f[1])
		}
	}
	return strings.Join(out, "\n")
}

// TestSSH: plain OpenSSH reaches a VM whose image has no sshd, through
// banger's ssh_config (no resolver set-up), with the host key pinned at
// creation; a re-keyed VM is refused.
// ssh runs ssh with banger's ssh-config cfg from the host namespace, as a
// user whose home is home.
func (n *netEnv) ssh(home, cfg string, args ...string) result {
	cmd := exec.Command("ip", append([]string{"netns", "exec", n.host, "ssh", "-F", cfg, "-o", "BatchMode=yes", "-o", "ConnectTimeout=10"}, args...)...)
	cmd.Env = append(os.Environ(), "HOME="+home)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	}
	return result{out: out.String(), err: errb.String(), code: code}
}

func TestSSH(t *testing.T) {
	testutil.RequireTool(t, "ssh", "openssh-client")
	n := newNetEnv(t)
	home := t.TempDir()
	n.extra = append(n.extra, "HOME="+home)
	n.ok("vm", "run", "-d", "--name", "web", "--image", "bb")
	cfg := strings.TrimSpace(n.ok("ssh-config"))
	ssh := func(args ...string) result { return n.ssh(home, cfg, args...) }
	// The agent's SSH server needs a moment after boot to listen.
	var r result
	for i := 0; i < 20; i++ {
		if r = ssh("web.vm", "echo hi; exit 3"); r.code == 3 {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if r.code != 3 || r.out != "hi\n" {
		t.Fatalf("ssh web.vm: %+v", r)
	}
	// scp and sftp (OpenSSH's scp speaks sftp).
	local := filepath.Join(t.TempDir(), "up.txt")
	os.WriteFile(local, []byte("uploaded\n"), 0o640)
	scp := func(args ...string) (string, error) {
		cmd := exec.Command("ip", append([]string{"netns", "exec", n.host, "scp", "-F", cfg, "-o", "BatchMode=yes"}, args...)...)
		cmd.Env = append(os.Environ(), "HOME="+home)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := scp(local, "web.vm:/tmp/up.txt"); err != nil {
		t.Fatalf("scp up: %v %s", err, out)
	}
	if r := ssh("web.vm", "cat /tmp/up.txt; stat -c %a /tmp/up.txt"); r.out != "uploaded\n640\n" {
		t.Errorf("uploaded file: %+v", r)
	}
	back := filepath.Join(t.TempDir(), "down.txt")
	if out, err := scp("web.vm:/tmp/up.txt", back); err != nil {
		t.Fatalf("scp down: %v %s", err, out)
	}
	if b, _ := os.ReadFile(back); string(b) != "uploaded\n" {
		t.Errorf("downloaded %q", b)
	}
	batch := filepath.Join(t.TempDir(), "batch")
	os.WriteFile(batch, []byte("mkdir /tmp/sftpdir\nput "+local+" /tmp/sftpdir/x\nls /tmp/sftpdir\n"), 0o644)
	sftp := exec.Command("ip", "netns", "exec", n.host, "sftp", "-F", cfg, "-o", "BatchMode=yes", "-b", batch, "web.vm")
	sftp.Env = append(os.Environ(), "HOME="+home)
	if out, err := sftp.CombinedOutput(); err != nil || !strings.Contains(string(out), "/tmp/sftpdir/x") {
		t.Errorf("sftp: %v %s", err, out)
	}

	// --install adds one fenced Include to ~/.ssh/config; --uninstall
	// restores the file exactly.
	os.MkdirAll(filepath.Join(home, ".ssh"), 0o700)
	userCfg := filepath.Join(home, ".ssh", "config")
	os.WriteFile(userCfg, []byte("Host other\n  User me\n"), 0o600)
	n.ok("ssh-config", "--install")
	if b, _ := os.ReadFile(userCfg); !strings.Contains(string(b), "Include "+cfg) || !strings.HasSuffix(string(b), "Host other\n  User me\n") {
		t.Errorf("after --install:\n%s", b)
	}
	n.ok("ssh-config", "--uninstall")
	if b, _ := os.ReadFile(userCfg); string(b) != "Host other\n  User me\n" {
		t.Errorf("after --uninstall: %q", b)
	}

	// A VM whose host key changed is refused, loudly.
	var v struct{ Dir string }
	testutilJSON(t, n.ok("vm", "show", "web", "--json"), &v)
	n.ok("vm", "stop", "web")
	newKey, _ := filepath.Glob(filepath.Join(v.Dir, "ssh_host_ed25519_key"))
	if len(newKey) != 1 {
		t.Fatalf("no host key in %s", v.Dir)
	}
	os.Remove(newKey[0])
	regen := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", newKey[0])
	if out, err := regen.CombinedOutput(); err != nil {
		t.Fatalf("re-key: %v %s", err, out)
	}
	n.ok("vm", "start", "web")
	for i := 0; i < 20; i++ {
		if r = ssh("web.vm", "true"); strings.Contains(r.err, "REMOTE HOST IDENTIFICATION HAS CHANGED") || strings.Contains(r.err, "Host key verification failed") {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if r.code == 0 || !strings.Contains(r.err, "Host key verification failed") {
		t.Errorf("re-keyed VM: %+v, want a host key verification failure", r)
	}
	// Delete removes the pin.
	n.ok("vm", "delete", "-f", "web")
	kh, _ := os.ReadFile(filepath.Join(n.home, "state", "ssh", "known_hosts"))
	if strings.Contains(string(kh), "web.vm") {
		t.Errorf("known_hosts still pins web.vm: %s", kh)
	}
}

// TestPortsAndForward: vm ports lists guest listeners; vm forward relays a
// host port on 127.0.0.1 to the guest, is shown in vm show, and goes with
// the VM.
func TestPortsAndForward(t *testing.T) {
	n := newNetEnv(t)
	n.ok("vm", "run", "-d", "--name", "web", "--image", "bb")
	srv := n.cmd(context.Background(), "vm", "exec", "web", "--", "sh", "-c", "mkdir -p /tmp/w; echo from-guest > /tmp/w/index.html; httpd -f -p 8082 -h /tmp/w")
	srv.Start()
	defer func() { srv.Process.Kill(); srv.Wait() }()
	var ports []struct {
		Port int
		URL  string
	}
	found := false
	for i := 0; i < 40 && !found; i++ {
		time.Sleep(250 * time.Millisecond)
		testutilJSON(t, n.ok("vm", "ports", "web", "--json"), &ports)
		for _, p := range ports {
			if p.Port == 8082 && p.URL == "web.vm:8082" {
				found = true
			}
		}
	}
	if !found {
		t.Errorf("vm ports: %+v, want 8082 with web.vm:8082", ports)
	}
	if out := n.ok("vm", "forward", "web", "18080:8082"); !strings.Contains(out, "127.0.0.1:18080") {
		t.Errorf("forward: %q", out)
	}
	get, _ := nettest.Exec(n.host, "sh", "-c", `printf 'GET / HTTP/1.0\r\n\r\n' | busybox nc -w 3 127.0.0.1 18080`)
	if !strings.Contains(get, "from-guest") {
		t.Errorf("through the forward: %q", get)
	}
	if out := n.ok("vm", "show", "web"); !strings.Contains(out, "127.0.0.1:18080 -> 8082") {
		t.Errorf("vm show lacks the forward: %s", out)
	}
	if r := n.run("vm", "forward", "web", "18080:80"); r.code != 1 || !strings.Contains(r.err, "already forwarded") {
		t.Errorf("duplicate forward: %+v", r)
	}
	n.ok("vm", "forward", "web", "--remove", "18080")
	if out := n.ok("vm", "forward", "web", "--list", "--json"); strings.TrimSpace(out) != "[]" {
		t.Errorf("after remove: %s", out)
	}
	n.ok("vm", "forward", "web", "18081:8082")
	n.ok("vm", "delete", "-f", "web")
	if out, err := nettest.Exec(n.host, "sh", "-c", "busybox nc -w 1 127.0.0.1 18081 </dev/null"); err == nil {
		t.Errorf("forward still listening after delete: %q", out)
	}
}

// TestNetworkReconcile: kill -9 the daemon while VMs run and kill one VM's
// engine meanwhile; the restarted daemon keeps the survivor's tap and rules
// (and its network works) and removes the dead VM's.
func TestNetworkReconcile(t *testing.T) {
	n := newNetEnv(t)
	n.ok("vm", "run", "-d", "--name", "web", "--image", "bb")
	n.ok("vm", "run", "-d", "--name", "other", "--image", "bb")
	var web, other struct {
		ID  string
		PID int
	}
	testutilJSON(t, n.ok("vm", "show", "web", "--json"), &web)
	testutilJSON(t, n.ok("vm", "show", "other", "--json"), &other)
	pid := n.daemonPID()
	syscall.Kill(pid, syscall.SIGKILL)
	for processAlive(pid) {
		time.Sleep(10 * time.Millisecond)
	}
	syscall.Kill(other.PID, syscall.SIGKILL)
	for processAlive(other.PID) {
		time.Sleep(10 * time.Millisecond)
	}
	if out := n.ok("vm", "show", "other", "--json"); !strings.Contains(out, `"state": "stopped"`) {
		t.Errorf("dead VM not marked stopped: %s", out)
	}
	rules, _ := nettest.Exec(n.host, "iptables-save")
	if !strings.Contains(rules, "banger:vm="+web.ID) || strings.Contains(rules, "banger:vm="+other.ID) {
		t.Errorf("rules after reconcile: want web's only:\n%s", rules)
	}
	links := nettest.MustIP(t, n.host, "-o", "link")
	if !strings.Contains(links, "bgr-"+web.ID) || strings.Contains(links, "bgr-"+other.ID) {
		t.Errorf("taps after reconcile:\n%s", links)
	}
	if got := n.fetch("web", "203.0.113.10:8080"); !strings.HasPrefix(got, "internet saw") {
		t.Errorf("survivor's network after reconcile: %q", got)
	}
}

// TestUnprivilegedDaemonWithRootHelper: the daemon and the engine run as an
// ordinary user; the root helper makes the tap (passing its fd) and the
// rules; the VM's network works as with a root daemon.
func TestUnprivilegedDaemonWithRootHelper(t *testing.T) {
	n := newNetEnvAs(t, true, nil)
	n.ok("vm", "run", "-d", "--name", "web", "--image", "bb")
	var web struct {
		IP, Net string
		PID     int
	}
	testutilJSON(t, n.ok("vm", "show", "web", "--json"), &web)
	if web.IP == "" || web.Net != "public" {
		t.Fatalf("vm: %+v", web)
	}
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", web.PID))
	if err != nil || !strings.Contains(string(st), "Uid:\t65534") {
		t.Errorf("engine should run as 65534: %v", err)
	}
	if got := n.fetch("web", "203.0.113.10:8080"); !strings.HasPrefix(got, "internet saw 198.51.100.1:") {
		t.Errorf("internet through the helper's NAT: %q", got)
	}
	if got := n.fetch("web", "10.77.0.10:8080"); got != "" {
		t.Errorf("public VM reached the LAN: %q", got)
	}
	n.ok("vm", "delete", "-f", "web")
	if rules, _ := nettest.Exec(n.host, "iptables-save"); strings.Contains(rules, "banger:vm=") {
		t.Errorf("rules left:\n%s", rules)
	}
}

// TestSubnetConflict: the subnet is chosen once, avoiding what the host
// has; when a conflicting network appears later, the daemon says so and
// names the fix instead of moving VMs silently.
func TestSubnetConflict(t *testing.T) {
	// Something already on the first candidate: banger picks another.
	n := newNetEnvAs(t, false, func(host string) {
		nettest.MustIP(t, host, "addr", "add", "172.30.0.1/24", "dev", "lan0")
	})
	n.ok("vm", "run", "-d", "--name", "web", "--image", "bb")
	var web struct{ IP string }
	testutilJSON(t, n.ok("vm", "show", "web", "--json"), &web)
	if strings.HasPrefix(web.IP, "172.30.0.") || web.IP == "" {
		t.Errorf("VM got %q, in a range already used on the host", web.IP)
	}
	n.ok("vm", "delete", "-f", "web")
	n.ok("daemon", "stop")
	// A VPN-like route over banger's subnet appears while it is down.
	sub := web.IP[:strings.LastIndex(web.IP, ".")] + ".0/24"
	nettest.MustIP(t, n.host, "route", "add", sub[:strings.Index(sub, ".")]+".0.0.0/8", "via", "10.77.0.10")
	r := n.run("vm", "run", "--rm", "--image", "bb", "--", "true")
	if r.code != 125 || !strings.Contains(r.err, "overlaps") || !strings.Contains(r.err, "set subnet") {
		t.Errorf("after a conflict appeared: %+v", r)
	}
	// --net none still works.
	if r := n.run("vm", "run", "--rm", "--net", "none", "--image", "bb", "--", "true"); r.code != 0 {
		t.Errorf("--net none with networking broken: %+v", r)
	}
}

// TestFirecrackerNetworking: a VM on the Firecracker engine (through the
// test double) gets its tap and public-mode rules like a QEMU VM.
func TestFirecrackerNetworking(t *testing.T) {
	n := newNetEnvAs(t, false, nil, netConfig{
		toml: "engine = \"firecracker\"\nfirecracker_bin = \"" + filepath.Join(binDir, "firecracker") + "\"\njailer = false\n",
		env:  []string{"BANGER_TEST_FIRECRACKER_DOUBLE=1"},
	})
	n.ok("vm", "run", "-d", "--name", "web", "--image", "bb")
	var web struct{ Engine, IP string }
	testutilJSON(t, n.ok("vm", "show", "web", "--json"), &web)
	if web.Engine != "firecracker" || web.IP == "" {
		t.Fatalf("vm: %+v", web)
	}
	if got := n.fetch("web", "203.0.113.10:8080"); !strings.HasPrefix(got, "internet saw 198.51.100.1:") {
		t.Errorf("firecracker VM to the internet: %q", got)
	}
	if got := n.fetch("web", "10.77.0.10:8080"); got != "" {
		t.Errorf("firecracker VM reached the LAN: %q", got)
	}
}
