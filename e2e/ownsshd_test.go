package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/crane"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/crypto/ssh"

	"github.com/bangervm/banger/internal/image"
	"github.com/bangervm/banger/internal/network/nettest"
	"github.com/bangervm/banger/internal/testutil"
)

// TestOwnSSHD: an image that runs its own init and ships OpenSSH (Debian
// bookworm with openssh-server, from debootstrap, under busybox init, which
// starts /usr/sbin/sshd) keeps its sshd, and plain ssh through banger's
// ssh_config reaches that sshd as root with banger's key, checked against
// the host key banger pinned for the VM; the image's own baked-in host key
// is not used and the shared image is not changed.
func TestOwnSSHD(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireTool(t, "debootstrap", "debootstrap")
	testutil.RequireTool(t, "ssh", "openssh-client")
	// The rootfs builds (about 35 s) while the network namespaces and the
	// daemon come up.
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	layer := make(chan debianLayer, 1)
	go func() { layer <- debianSSHDLayer(ctx, dir) }()
	received := false
	t.Cleanup(func() { // before dir goes
		cancel()
		if !received {
			<-layer
		}
	})
	n := newNetEnv(t)
	l := <-layer
	received = true
	if l.err != nil {
		t.Fatalf("debian rootfs with openssh-server: %v", l.err)
	}
	img := testutil.Image(t, v1.Config{
		Env:        []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
		Cmd:        []string{"/sbin/init"},
		WorkingDir: "/root",
	}, l.tar)
	ref := pushInNS(t, n.host, img, "test/debian-sshd:1")
	n.ok("image", "pull", ref, "--name", "debsshd", "--kernel", "debian-cloud")
	t.Cleanup(func() { n.run("vm", "delete", "-f", "ownsshd") })
	n.ok("vm", "run", "-d", "--name", "ownsshd", "--image", "debsshd")

	home := t.TempDir()
	n.extra = append(n.extra, "HOME="+home)
	cfg := strings.TrimSpace(n.ok("ssh-config"))
	run := func(tool string, args ...string) result {
		cmd := exec.Command("ip", append([]string{"netns", "exec", n.host, tool, "-F", cfg, "-o", "BatchMode=yes", "-o", "ConnectTimeout=10"}, args...)...)
		cmd.Env = append(os.Environ(), "HOME="+home)
		return runCmd(t, cmd)
	}
	// sshd starts after the image's init; give it time under emulation.
	waitSSH := func() result {
		var r result
		for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
			if r = run("ssh", "-v", "ownsshd.vm", "readlink /proc/$PPID/exe; id -u"); r.code == 0 {
				break
			}
		}
		return r
	}
	r := waitSSH()
	if r.code != 0 || r.out != "/usr/sbin/sshd\n0\n" {
		t.Fatalf("ssh ownsshd.vm (want the image's /usr/sbin/sshd, as root): %+v\nguest agent log:\n%s", r, n.run("vm", "exec", "ownsshd", "--", "cat", "/run/banger/agent.log").out)
	}
	if !strings.Contains(r.err, "remote software version OpenSSH_") {
		t.Errorf("server is not OpenSSH:\n%s", r.err)
	}
	t.Logf("ssh -v:\n%s\n%s", grepLines(r.err, "remote software version"), grepLines(r.err, "Server host key"))
	// The agent says what it did, and serves no SSH itself.
	agentLog := n.ok("vm", "exec", "ownsshd", "--", "cat", "/run/banger/agent.log")
	for _, want := range []string{"the VM's host key is in place", "banger's key is authorized", "the agent serves no SSH"} {
		if !strings.Contains(agentLog, want) {
			t.Errorf("agent log lacks %q:\n%s", want, agentLog)
		}
	}
	// The key sshd presented is the one banger made and pinned for this VM.
	var v struct{ Dir, Image string }
	testutilJSON(t, n.ok("vm", "show", "ownsshd", "--json"), &v)
	pinned := hostKeyFingerprint(t, filepath.Join(v.Dir, "ssh_host_ed25519_key"))
	if !strings.Contains(r.err, "Server host key: ssh-ed25519 "+pinned) {
		t.Errorf("server host key is not the pinned %s:\n%s", pinned, grepLines(r.err, "host key"))
	}
	// scp goes through the image's own sftp-server.
	local := filepath.Join(t.TempDir(), "up.txt")
	os.WriteFile(local, []byte("to the image's sshd\n"), 0o644)
	if r := run("scp", local, "ownsshd.vm:/tmp/up.txt"); r.code != 0 {
		t.Errorf("scp: %+v", r)
	}
	if r := run("ssh", "ownsshd.vm", "cat /tmp/up.txt"); r.out != "to the image's sshd\n" {
		t.Errorf("scp'd file: %+v", r)
	}

	// The shared image keeps its own (baked-in) host key and no
	// authorized_keys: only the VM's copy changed.
	var im struct{ RootFS string }
	testutilJSON(t, n.ok("image", "show", "debsshd", "--json"), &im)
	if im.RootFS == "" {
		t.Fatal("image show: no rootfs")
	}
	if o, _ := exec.Command("debugfs", "-R", "cat /etc/ssh/ssh_host_ed25519_key.pub", im.RootFS).Output(); !strings.HasPrefix(string(o), "ssh-ed25519 ") || pubFingerprint(t, o) == pinned {
		t.Errorf("image's own host key: %q (pinned %s)", o, pinned)
	}
	if o, _ := exec.Command("debugfs", "-R", "stat /root/.ssh/authorized_keys", im.RootFS).CombinedOutput(); !strings.Contains(string(o), "File not found") {
		t.Errorf("the image itself got an authorized_keys:\n%s", o)
	}

	// Next boot: the same key still matches, banger's key is there once.
	n.ok("vm", "stop", "ownsshd")
	n.ok("vm", "start", "ownsshd")
	if r := waitSSH(); r.code != 0 {
		t.Fatalf("ssh after restart: %+v", r)
	}
	if r := run("ssh", "ownsshd.vm", "grep -c . /root/.ssh/authorized_keys"); r.out != "1\n" {
		t.Errorf("authorized_keys after two boots: %+v", r)
	}
}

type debianLayer struct {
	tar []byte
	err error
}

// debianSSHDLayer builds Debian bookworm minbase with openssh-server and
// busybox-static from the host's mirror in dir, makes busybox init its
// init, starting sshd, and returns it as an uncompressed layer. Debian's
// package scripts give it host keys of its own, shared by every VM of the
// image, as a real image built this way would have.
func debianSSHDLayer(ctx context.Context, dir string) debianLayer {
	mirror, err := image.DebianMirror("/etc/apt")
	if err != nil {
		return debianLayer{err: err}
	}
	root := filepath.Join(dir, "root")
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "debootstrap", "--variant=minbase", "--include=openssh-server,busybox-static", "bookworm", root, mirror)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive", "LANG=C")
	if out, err := cmd.CombinedOutput(); err != nil {
		return debianLayer{err: fmt.Errorf("debootstrap: %v\n%s", err, tail(out, 2000))}
	}
	// Smaller and quicker to push: nothing a running sshd needs.
	for _, d := range []string{"var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man", "usr/share/locale", "dev"} {
		os.RemoveAll(filepath.Join(root, d))
	}
	os.MkdirAll(filepath.Join(root, "dev"), 0o755)
	// /sbin is a link into /usr on Debian: the init lands in /usr/sbin.
	if err := os.Symlink("/bin/busybox", filepath.Join(root, "sbin/init")); err != nil {
		return debianLayer{err: err}
	}
	inittab := "::sysinit:/bin/mkdir -p -m 0755 /run/sshd\n::respawn:/usr/sbin/sshd -D -e\n"
	if err := os.WriteFile(filepath.Join(root, "etc/inittab"), []byte(inittab), 0o644); err != nil {
		return debianLayer{err: err}
	}
	var out, errb bytes.Buffer
	tar := exec.Command("tar", "--numeric-owner", "-C", root, "-cf", "-", ".")
	tar.Stdout, tar.Stderr = &out, &errb
	if err := tar.Run(); err != nil {
		return debianLayer{err: fmt.Errorf("tar: %v %s", err, errb.String())}
	}
	return debianLayer{tar: out.Bytes()}
}

// pushInNS serves a registry on 127.0.0.1 inside namespace ns, where the
// daemon pulls from, and pushes img to it over connections made inside ns
// (the test itself runs outside); it returns the reference.
func pushInNS(t *testing.T, ns string, img v1.Image, repoTag string) string {
	t.Helper()
	var ln net.Listener
	var err error
	nettest.Do(t, ns, func() { ln, err = net.Listen("tcp", "127.0.0.1:0") })
	if err != nil {
		t.Fatalf("listen in %s: %v", ns, err)
	}
	srv := &http.Server{Handler: registry.New(registry.Logger(log.New(io.Discard, "", 0)))}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		var err error
		nettest.Do(t, ns, func() { c, err = (&net.Dialer{}).DialContext(ctx, network, addr) })
		return c, err
	}}
	defer tr.CloseIdleConnections()
	ref := ln.Addr().String() + "/" + repoTag
	if err := crane.Push(img, ref, crane.WithTransport(tr)); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	return ref
}

// hostKeyFingerprint returns the SHA256 fingerprint of a private key file.
func hostKeyFingerprint(t *testing.T, file string) string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.ParsePrivateKey(b)
	if err != nil {
		t.Fatal(err)
	}
	return ssh.FingerprintSHA256(s.PublicKey())
}

func pubFingerprint(t *testing.T, line []byte) string {
	t.Helper()
	k, _, _, _, err := ssh.ParseAuthorizedKey(line)
	if err != nil {
		t.Fatalf("public key %q: %v", line, err)
	}
	return ssh.FingerprintSHA256(k)
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
