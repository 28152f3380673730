package agent

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/agentproto"
	"github.com/bangervm/banger/internal/testutil"
)

// newEd25519 returns an ed25519 private key as OpenSSH PEM and its public
// key.
func newEd25519(t *testing.T) (string, ssh.PublicKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	blk, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(blk)), sp
}

func authorizedLine(k ssh.PublicKey) string {
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k)))
}

func TestImageHasSSHD(t *testing.T) {
	root := t.TempDir()
	if imageHasSSHD(root) {
		t.Fatal("empty root has sshd")
	}
	os.MkdirAll(filepath.Join(root, "usr/sbin/sshd"), 0o755) // a directory is not sshd
	if imageHasSSHD(root) {
		t.Fatal("directory counted as sshd")
	}
	os.Remove(filepath.Join(root, "usr/sbin/sshd"))
	os.WriteFile(filepath.Join(root, "usr/sbin/sshd"), nil, 0o755)
	if !imageHasSSHD(root) {
		t.Fatal("sshd not found")
	}
}

func TestSSHConfig(t *testing.T) {
	hostKey, _ := newEd25519(t)
	_, k1 := newEd25519(t)
	_, k2 := newEd25519(t)
	_, k3 := newEd25519(t)
	tests := []struct {
		name string
		cfg  agentproto.SSHConfig
		keys []ssh.PublicKey // authorized, when valid
	}{
		{"one key", agentproto.SSHConfig{HostKey: hostKey, AuthorizedKeys: []string{authorizedLine(k1)}}, []ssh.PublicKey{k1}},
		{"comments, several per entry", agentproto.SSHConfig{Port: 2222, HostKey: hostKey, AuthorizedKeys: []string{
			"# banger\n" + authorizedLine(k1) + " me@host\n\n" + authorizedLine(k2),
			authorizedLine(k3) + "\n# trailing comment\n",
		}}, []ssh.PublicKey{k1, k2, k3}},
		{"bad port", agentproto.SSHConfig{Port: 70000, HostKey: hostKey, AuthorizedKeys: []string{authorizedLine(k1)}}, nil},
		{"no host key", agentproto.SSHConfig{AuthorizedKeys: []string{authorizedLine(k1)}}, nil},
		{"bad host key", agentproto.SSHConfig{HostKey: "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n", AuthorizedKeys: []string{authorizedLine(k1)}}, nil},
		{"no authorized keys", agentproto.SSHConfig{HostKey: hostKey, AuthorizedKeys: []string{"# none", ""}}, nil},
		{"key options", agentproto.SSHConfig{HostKey: hostKey, AuthorizedKeys: []string{`from="10.0.0.1" ` + authorizedLine(k1)}}, nil},
		{"bad authorized key", agentproto.SSHConfig{HostKey: hostKey, AuthorizedKeys: []string{"ssh-ed25519 not-base64"}}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := newSSHServer(slog.New(slog.DiscardHandler), tt.cfg, NewHandler(HandlerConfig{}))
			if tt.keys == nil {
				if !errors.Is(err, errdefs.ErrInvalidArgument) {
					t.Fatalf("err = %v, want InvalidArgument", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, k := range tt.keys {
				if _, err := s.cfg.PublicKeyCallback(connMeta("root"), k); err != nil {
					t.Errorf("key %s refused: %v", ssh.FingerprintSHA256(k), err)
				}
				if _, err := s.cfg.PublicKeyCallback(connMeta("bob"), k); err == nil || !strings.Contains(err.Error(), "only root") {
					t.Errorf("bob: err = %v", err)
				}
			}
			_, other := newEd25519(t)
			if _, err := s.cfg.PublicKeyCallback(connMeta("root"), other); err == nil {
				t.Error("unknown key accepted")
			}
		})
	}
	if p := sshPort(agentproto.SSHConfig{}); p != 22 {
		t.Errorf("default port %d", p)
	}
}

type connMeta string

func (c connMeta) User() string        { return string(c) }
func (connMeta) SessionID() []byte     { return nil }
func (connMeta) ClientVersion() []byte { return nil }
func (connMeta) ServerVersion() []byte { return nil }
func (connMeta) RemoteAddr() net.Addr  { return &net.TCPAddr{} }
func (connMeta) LocalAddr() net.Addr   { return &net.TCPAddr{} }

func TestBootConfigSSHJSON(t *testing.T) {
	in := agentproto.BootConfig{SSH: &agentproto.SSHConfig{Port: 22, HostKey: "k", AuthorizedKeys: []string{"a"}}}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte(`"ssh":{"port":22,"hostKey":"k","authorizedKeys":["a"]}`)) {
		t.Fatalf("json %s", b)
	}
	var out agentproto.BootConfig
	if err := json.Unmarshal(b, &out); err != nil || out.SSH == nil || out.SSH.Port != 22 || out.SSH.AuthorizedKeys[0] != "a" {
		t.Fatalf("round trip: %+v %v", out.SSH, err)
	}
	if b, _ := json.Marshal(agentproto.BootConfig{}); bytes.Contains(b, []byte("ssh")) {
		t.Fatalf("nil SSH marshalled: %s", b)
	}
}

// sshFixture is the agent's SSH server on 127.0.0.1 with a fake guest
// whose root home is home, and what the OpenSSH client needs to reach it.
type sshFixture struct {
	port       string
	home       string
	dir        string // for client files
	key        string // client private key file
	knownHosts string
}

func newSSHFixture(t *testing.T) *sshFixture {
	t.Helper()
	for _, tool := range []string{"ssh", "scp", "sftp"} {
		testutil.RequireTool(t, tool, "openssh-client")
	}
	// The server hangs up a session with SIGHUP, as sshd does. A test
	// binary started with SIGHUP ignored (under nohup, as some CI runners
	// start jobs) passes that on to the programs it starts, and none would
	// hang up; the agent in a guest never ignores it. While the signal is
	// handled here, programs start with its default action.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	t.Cleanup(func() { signal.Stop(hup) })
	tmp := t.TempDir()
	f := &sshFixture{dir: filepath.Join(tmp, "client"), home: filepath.Join(tmp, "root")}
	etc := filepath.Join(tmp, "etc")
	for _, d := range []string{f.dir, f.home, etc} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	passwd := "root:x:0:0:root:" + f.home + ":/bin/sh\nbob:x:1000:1000::/home/bob:/bin/sh\n"
	if err := os.WriteFile(filepath.Join(etc, "passwd"), []byte(passwd), 0o644); err != nil {
		t.Fatal(err)
	}
	hostKey, hostPub := newEd25519(t)
	clientKey, clientPub := newEd25519(t)
	f.key = filepath.Join(f.dir, "id_ed25519")
	f.knownHosts = filepath.Join(f.dir, "known_hosts")
	if err := os.WriteFile(f.key, []byte(clientKey), 0o600); err != nil {
		t.Fatal(err)
	}

	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	h := NewHandler(HandlerConfig{Logger: log, EtcDir: etc, Env: []string{"PATH=" + DefaultPath, "IMAGE_VAR=from-image"}})
	s, err := newSSHServer(log, agentproto.SSHConfig{HostKey: hostKey, AuthorizedKeys: []string{authorizedLine(clientPub)}}, h)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	_, f.port, _ = net.SplitHostPort(ln.Addr().String())
	f.pinHostKey(t, hostPub)
	return f
}

func (f *sshFixture) pinHostKey(t *testing.T, k ssh.PublicKey) {
	t.Helper()
	line := knownHostsLine(f.port, k)
	if err := os.WriteFile(f.knownHosts, []byte(line), 0o600); err != nil {
		t.Fatal(err)
	}
}

func knownHostsLine(port string, k ssh.PublicKey) string {
	return fmt.Sprintf("[127.0.0.1]:%s %s\n", port, authorizedLine(k))
}

// opts are the client options shared by ssh, scp and sftp.
func (f *sshFixture) opts() []string { return clientOpts(f.key, f.knownHosts) }

func clientOpts(key, knownHosts string) []string {
	return []string{
		"-F", "/dev/null", "-i", key,
		"-o", "StrictHostKeyChecking=yes",
		"-o", "UserKnownHostsFile=" + knownHosts,
		"-o", "GlobalKnownHostsFile=/dev/null",
		"-o", "BatchMode=yes",
		"-o", "IdentitiesOnly=yes",
		"-o", "IdentityAgent=none",
		"-o", "ConnectTimeout=10",
	}
}

func (f *sshFixture) ssh(args ...string) *exec.Cmd {
	return f.cmd("ssh", append(append(f.opts(), "-p", f.port), args...)...)
}

func (f *sshFixture) cmd(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.Dir = f.dir
	return cmd
}

// result runs cmd with stdin and returns its stdout, stderr and exit code.
func result(t *testing.T, cmd *exec.Cmd, stdin string) (string, string, int) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = strings.NewReader(stdin), &stdout, &stderr
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stop := context.AfterFunc(ctx, func() { cmd.Process.Kill() })
	defer stop()
	err := cmd.Wait()
	code := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("%v: %v", cmd.Args, err)
	}
	return stdout.String(), stderr.String(), code
}

func TestSSHServerOpenSSH(t *testing.T) {
	f := newSSHFixture(t)

	t.Run("exec status", func(t *testing.T) {
		out, errOut, code := result(t, f.ssh("root@127.0.0.1", "echo hi; echo err >&2; exit 3"), "")
		if out != "hi\n" || code != 3 || !strings.Contains(errOut, "err") {
			t.Fatalf("out %q err %q code %d", out, errOut, code)
		}
	})
	t.Run("stdin and environment", func(t *testing.T) {
		out, errOut, code := result(t, f.ssh("root@127.0.0.1", `cat; echo "$HOME|$USER|$SHELL|$IMAGE_VAR|$TERM|$(pwd)"`), "piped\nthrough\n")
		want := "piped\nthrough\n" + f.home + "|root|/bin/sh|from-image||" + f.home + "\n"
		if out != want || code != 0 {
			t.Fatalf("out %q want %q (err %q, code %d)", out, want, errOut, code)
		}
	})
	t.Run("exit signal", func(t *testing.T) {
		// A remote process killed by a signal is exit-signal, which ssh
		// turns into 255 (an exit-status would give 137).
		_, errOut, code := result(t, f.ssh("root@127.0.0.1", "kill -KILL $$"), "")
		if code != 255 {
			t.Fatalf("code %d, err %q", code, errOut)
		}
	})
	t.Run("pty", func(t *testing.T) {
		out, errOut, code := result(t, f.ssh("-tt", "root@127.0.0.1", "tty; echo TERM=$TERM; exit 4"), "")
		if !regexp.MustCompile(`(?m)^/dev/pts/\d+\r?$`).MatchString(out) || !strings.Contains(out, "TERM=") || code != 4 {
			t.Fatalf("out %q err %q code %d", out, errOut, code)
		}
	})
	t.Run("login shell", func(t *testing.T) {
		out, errOut, code := result(t, f.ssh("-tt", "root@127.0.0.1"), "echo \"zero=$0\"\nexit 7\n")
		if !strings.Contains(out, "zero=-sh") || code != 7 {
			t.Fatalf("out %q err %q code %d", out, errOut, code)
		}
	})
	t.Run("scp up and down", func(t *testing.T) {
		src := filepath.Join(f.dir, "up.bin")
		data := bytes.Repeat([]byte("banger\x00\xff"), 100_000)
		if err := os.WriteFile(src, data, 0o750); err != nil {
			t.Fatal(err)
		}
		os.Chmod(src, 0o750)
		scp := func(args ...string) {
			t.Helper()
			_, errOut, code := result(t, f.cmd("scp", append(append(f.opts(), "-P", f.port), args...)...), "")
			if code != 0 {
				t.Fatalf("scp %v: code %d: %s", args, code, errOut)
			}
		}
		scp(src, "root@127.0.0.1:") // to root's home
		checkFile(t, filepath.Join(f.home, "up.bin"), data, 0o750)

		remote := filepath.Join(f.home, "down.bin")
		if err := os.WriteFile(remote, data[:1000], 0o604); err != nil {
			t.Fatal(err)
		}
		os.Chmod(remote, 0o604)
		scp("root@127.0.0.1:"+remote, filepath.Join(f.dir, "down.bin"))
		checkFile(t, filepath.Join(f.dir, "down.bin"), data[:1000], 0o604)
	})
	t.Run("sftp batch", func(t *testing.T) {
		if err := os.WriteFile(filepath.Join(f.dir, "a.txt"), []byte("alpha"), 0o644); err != nil {
			t.Fatal(err)
		}
		batch := filepath.Join(f.dir, "batch")
		os.WriteFile(batch, []byte("mkdir sub\nput a.txt sub/b.txt\nls -l sub\nget sub/b.txt c.txt\n"), 0o644)
		out, errOut, code := result(t, f.cmd("sftp", append(f.opts(), "-P", f.port, "-b", batch, "root@127.0.0.1")...), "")
		if code != 0 || !strings.Contains(out, "b.txt") {
			t.Fatalf("out %q err %q code %d", out, errOut, code)
		}
		checkFile(t, filepath.Join(f.home, "sub", "b.txt"), []byte("alpha"), 0o644)
		checkFile(t, filepath.Join(f.dir, "c.txt"), []byte("alpha"), 0o644)
	})
	t.Run("local forward", func(t *testing.T) {
		echo := echoServer(t)
		lport := freePort(t)
		cmd := f.ssh("-N", "-o", "ExitOnForwardFailure=yes", "-L", "127.0.0.1:"+lport+":"+echo, "root@127.0.0.1")
		var errOut bytes.Buffer
		cmd.Stderr = &errOut
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { cmd.Process.Kill(); cmd.Wait() }()
		var c net.Conn
		deadline := time.Now().Add(20 * time.Second)
		for {
			var err error
			if c, err = net.Dial("tcp", "127.0.0.1:"+lport); err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("forward never listened: %v; ssh: %s", err, errOut.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(20 * time.Second))
		msg := "ping through the tunnel"
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		c.(*net.TCPConn).CloseWrite()
		got, err := io.ReadAll(c)
		if err != nil || string(got) != msg {
			t.Fatalf("echo %q, %v; ssh: %s", got, err, errOut.String())
		}
	})
	t.Run("client gone hangs up", func(t *testing.T) {
		pidFile := filepath.Join(f.dir, "sleep.pid")
		cmd := f.ssh("root@127.0.0.1", "echo $$ > "+pidFile+"; exec sleep 300")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var pid int
		for deadline := time.Now().Add(20 * time.Second); pid == 0; time.Sleep(20 * time.Millisecond) {
			if b, err := os.ReadFile(pidFile); err == nil && bytes.HasSuffix(b, []byte("\n")) {
				pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
			}
			if time.Now().After(deadline) {
				cmd.Process.Kill()
				t.Fatal("remote command never started")
			}
		}
		cmd.Process.Kill() // the client vanishes without closing the channel
		cmd.Wait()
		for deadline := time.Now().Add(20 * time.Second); syscall.Kill(pid, 0) == nil; time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				syscall.Kill(pid, syscall.SIGKILL)
				t.Fatal("remote process outlived its connection")
			}
		}
	})
	t.Run("wrong key", func(t *testing.T) {
		other, _ := newEd25519(t)
		key := filepath.Join(f.dir, "other")
		os.WriteFile(key, []byte(other), 0o600)
		args := append(clientOpts(key, f.knownHosts), "-p", f.port, "root@127.0.0.1", "true")
		_, errOut, code := result(t, f.cmd("ssh", args...), "")
		if code != 255 || !strings.Contains(errOut, "Permission denied") {
			t.Fatalf("code %d err %q", code, errOut)
		}
	})
	t.Run("not root", func(t *testing.T) {
		_, errOut, code := result(t, f.ssh("bob@127.0.0.1", "true"), "")
		if code != 255 || !strings.Contains(errOut, "Permission denied") || !strings.Contains(errOut, "only root") {
			t.Fatalf("code %d err %q", code, errOut)
		}
	})
	t.Run("host key mismatch", func(t *testing.T) {
		_, pub := newEd25519(t)
		kh := filepath.Join(f.dir, "known_hosts_other")
		os.WriteFile(kh, []byte(knownHostsLine(f.port, pub)), 0o600)
		args := append(clientOpts(f.key, kh), "-p", f.port, "root@127.0.0.1", "true")
		_, errOut, code := result(t, f.cmd("ssh", args...), "")
		if code != 255 || !strings.Contains(errOut, "Host key verification failed") {
			t.Fatalf("code %d err %q", code, errOut)
		}
	})
}

func checkFile(t *testing.T, path string, data []byte, mode os.FileMode) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Errorf("%s: %d bytes, want %d", path, len(got), len(data))
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != mode {
		t.Errorf("%s: mode %v, want %v", path, fi.Mode().Perm(), mode)
	}
}

// echoServer echoes each connection until its end of file and returns its
// address.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}
