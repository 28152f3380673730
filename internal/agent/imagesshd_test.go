package agent

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/bangervm/banger/internal/agentproto"
	"github.com/bangervm/banger/internal/testutil"
)

// imageRoot makes a minimal image tree: root in /etc/passwd, and sshd.
func imageRoot(t *testing.T, passwd string) string {
	t.Helper()
	root := t.TempDir()
	for name, body := range map[string]string{
		"etc/passwd":    passwd,
		"usr/sbin/sshd": "#!/bin/sh\n",
	} {
		os.MkdirAll(filepath.Join(root, filepath.Dir(name)), 0o755)
		if err := os.WriteFile(filepath.Join(root, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

const rootPasswd = "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1::/usr/sbin:/usr/sbin/nologin\n"

// sshdCfg returns a boot SSH config with a fresh host key and one client
// key (with a comment), and that client key.
func sshdCfg(t *testing.T) (agentproto.SSHConfig, ssh.PublicKey) {
	t.Helper()
	hostKey, _ := newEd25519(t)
	_, client := newEd25519(t)
	return agentproto.SSHConfig{HostKey: hostKey, AuthorizedKeys: []string{authorizedLine(client) + " banger@host\n"}}, client
}

// logBuffer returns a logger writing text into the returned buffer.
func logBuffer() (*slog.Logger, *bytes.Buffer) {
	var b bytes.Buffer
	return slog.New(slog.NewTextHandler(&b, nil)), &b
}

// checkOwnedFile checks path's content (unless want is nil), mode and owner,
// and that it is a regular file.
func checkOwnedFile(t *testing.T, path string, want []byte, mode os.FileMode, gid uint32) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if !fi.Mode().IsRegular() {
		t.Errorf("%s: %v, want a regular file", path, fi.Mode())
	}
	if fi.Mode().Perm() != mode {
		t.Errorf("%s: mode %v, want %v", path, fi.Mode().Perm(), mode)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if st.Uid != 0 || st.Gid != gid {
		t.Errorf("%s: owner %d:%d, want 0:%d", path, st.Uid, st.Gid, gid)
	}
	if want != nil {
		if b, _ := os.ReadFile(path); !bytes.Equal(b, want) {
			t.Errorf("%s:\n%s\nwant:\n%s", path, b, want)
		}
	}
}

func TestPrepareImageSSHDFresh(t *testing.T) {
	testutil.RequireRoot(t) // files are made root's
	root := imageRoot(t, rootPasswd)
	cfg, client := sshdCfg(t)
	log, logs := logBuffer()
	if err := prepareImageSSHD(log, root, cfg); err != nil {
		t.Fatal(err)
	}
	checkOwnedFile(t, filepath.Join(root, "etc/ssh/ssh_host_ed25519_key"), []byte(cfg.HostKey), 0o600, 0)
	// The public half is derived from the private key.
	signer, _ := ssh.ParsePrivateKey([]byte(cfg.HostKey))
	pub, _ := os.ReadFile(filepath.Join(root, "etc/ssh/ssh_host_ed25519_key.pub"))
	k, _, _, _, err := ssh.ParseAuthorizedKey(pub)
	if err != nil || !bytes.Equal(k.Marshal(), signer.PublicKey().Marshal()) {
		t.Errorf("public host key %q does not match the private one (%v)", pub, err)
	}
	checkOwnedFile(t, filepath.Join(root, "etc/ssh/ssh_host_ed25519_key.pub"), nil, 0o644, 0)
	fi, err := os.Stat(filepath.Join(root, "root/.ssh"))
	if err != nil || fi.Mode().Perm() != 0o700 || !fi.IsDir() {
		t.Errorf("/root/.ssh: %v %v", fi, err)
	}
	checkOwnedFile(t, filepath.Join(root, "root/.ssh/authorized_keys"), []byte(authorizedLine(client)+" banger@host\n"), 0o600, 0)
	if !strings.Contains(logs.String(), "host key is in place") || !strings.Contains(logs.String(), "added=1") {
		t.Errorf("log does not say what was done:\n%s", logs)
	}
	// No temporary files are left behind.
	for _, d := range []string{"etc/ssh", "root/.ssh"} {
		ents, _ := os.ReadDir(filepath.Join(root, d))
		for _, e := range ents {
			if strings.Contains(e.Name(), ".banger-") {
				t.Errorf("left over: %s/%s", d, e.Name())
			}
		}
	}
}

func TestPrepareImageSSHDKeepsKeysAndIsIdempotent(t *testing.T) {
	testutil.RequireRoot(t)
	// Root's home from /etc/passwd, and its group.
	root := imageRoot(t, "root:x:0:7:root:/var/roothome:/bin/sh\n")
	cfg, client := sshdCfg(t)
	_, other := newEd25519(t)
	old := "# keys of the image\n" + authorizedLine(other) + " someone@else\n" +
		`from="10.0.0.1" ` + authorizedLine(client) + "\n" + "ssh-ed25519 AAAAnotakey junk" // no final newline
	os.MkdirAll(filepath.Join(root, "var/roothome/.ssh"), 0o755)
	os.WriteFile(filepath.Join(root, "var/roothome/.ssh/authorized_keys"), []byte(old), 0o644)
	// The image's own host key, as a Debian image bakes in, is replaced.
	os.MkdirAll(filepath.Join(root, "etc/ssh"), 0o755)
	os.WriteFile(filepath.Join(root, "etc/ssh/ssh_host_ed25519_key"), []byte("baked\n"), 0o600)
	log, logs := logBuffer()
	if err := prepareImageSSHD(log, root, cfg); err != nil {
		t.Fatal(err)
	}
	ak := filepath.Join(root, "var/roothome/.ssh/authorized_keys")
	want := old + "\n" + authorizedLine(client) + " banger@host\n"
	checkOwnedFile(t, ak, []byte(want), 0o600, 7)
	if fi, _ := os.Stat(filepath.Join(root, "var/roothome/.ssh")); fi.Mode().Perm() != 0o700 {
		t.Errorf(".ssh mode %v", fi.Mode().Perm())
	}
	checkOwnedFile(t, filepath.Join(root, "etc/ssh/ssh_host_ed25519_key"), []byte(cfg.HostKey), 0o600, 0)
	if !strings.Contains(logs.String(), "with options") {
		t.Errorf("no warning about the key with options:\n%s", logs)
	}
	if _, err := os.Stat(filepath.Join(root, "root")); err == nil {
		t.Error("/root made although root's home is elsewhere")
	}

	// Again, as on the next boot: nothing changes, nothing is rewritten.
	inode := func(p string) uint64 {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Sys().(*syscall.Stat_t).Ino
	}
	hk := filepath.Join(root, "etc/ssh/ssh_host_ed25519_key")
	before := []uint64{inode(ak), inode(hk), inode(hk + ".pub")}
	logs.Reset()
	if err := prepareImageSSHD(log, root, cfg); err != nil {
		t.Fatal(err)
	}
	checkOwnedFile(t, ak, []byte(want), 0o600, 7)
	if after := []uint64{inode(ak), inode(hk), inode(hk + ".pub")}; !slices.Equal(before, after) {
		t.Errorf("files rewritten on a rerun: inodes %v then %v", before, after)
	}
	if !strings.Contains(logs.String(), "added=0") || !strings.Contains(logs.String(), "written=false") {
		t.Errorf("rerun log:\n%s", logs)
	}
	// Already authorized without options: not added again.
	os.WriteFile(ak, []byte(authorizedLine(client)+" other comment\n"), 0o600)
	if err := prepareImageSSHD(log, root, cfg); err != nil {
		t.Fatal(err)
	}
	checkOwnedFile(t, ak, []byte(authorizedLine(client)+" other comment\n"), 0o600, 7)
}

// TestPrepareImageSSHDSymlinks: links planted in the image lead nowhere:
// files at the names banger writes are replaced, their targets untouched;
// directories resolve inside the image only.
func TestPrepareImageSSHDSymlinks(t *testing.T) {
	testutil.RequireRoot(t)
	outside := t.TempDir() // stands for the host, or the guest's /proc
	victim := filepath.Join(outside, "victim")
	os.WriteFile(victim, []byte("precious\n"), 0o644)

	t.Run("files", func(t *testing.T) {
		root := imageRoot(t, rootPasswd)
		os.MkdirAll(filepath.Join(root, "etc/ssh"), 0o755)
		os.MkdirAll(filepath.Join(root, "root/.ssh"), 0o700)
		os.WriteFile(filepath.Join(root, "etc/shadow"), []byte("root:*:1::::::\n"), 0o600)
		os.Symlink(victim, filepath.Join(root, "etc/ssh/ssh_host_ed25519_key"))
		os.Symlink("../../etc/shadow", filepath.Join(root, "etc/ssh/ssh_host_ed25519_key.pub"))
		os.Symlink("/etc/shadow", filepath.Join(root, "root/.ssh/authorized_keys"))
		cfg, client := sshdCfg(t)
		log, logs := logBuffer()
		if err := prepareImageSSHD(log, root, cfg); err != nil {
			t.Fatal(err)
		}
		if b, _ := os.ReadFile(victim); string(b) != "precious\n" {
			t.Errorf("wrote through the host key link: victim now %q", b)
		}
		if b, _ := os.ReadFile(filepath.Join(root, "etc/shadow")); string(b) != "root:*:1::::::\n" {
			t.Errorf("wrote through a link: /etc/shadow now %q", b)
		}
		checkOwnedFile(t, filepath.Join(root, "etc/ssh/ssh_host_ed25519_key"), []byte(cfg.HostKey), 0o600, 0)
		checkOwnedFile(t, filepath.Join(root, "etc/ssh/ssh_host_ed25519_key.pub"), nil, 0o644, 0)
		// The link's target is not read either: only banger's key.
		checkOwnedFile(t, filepath.Join(root, "root/.ssh/authorized_keys"), []byte(authorizedLine(client)+" banger@host\n"), 0o600, 0)
		if strings.Count(logs.String(), "symbolic link") != 3 {
			t.Errorf("want a warning for each replaced link:\n%s", logs)
		}
	})

	t.Run("fifo", func(t *testing.T) {
		root := imageRoot(t, rootPasswd)
		os.MkdirAll(filepath.Join(root, "root/.ssh"), 0o700)
		if err := syscall.Mkfifo(filepath.Join(root, "root/.ssh/authorized_keys"), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, _ := sshdCfg(t)
		log, _ := logBuffer()
		if err := prepareImageSSHD(log, root, cfg); err != nil { // must not hang
			t.Fatal(err)
		}
		checkOwnedFile(t, filepath.Join(root, "root/.ssh/authorized_keys"), nil, 0o600, 0)
	})

	t.Run("directories", func(t *testing.T) {
		outDir := t.TempDir()
		for _, tc := range []struct{ name, link, target string }{
			{"absolute /etc/ssh", "etc/ssh", outDir},
			{"climbing /etc/ssh", "etc/ssh", "../../../../../../../../" + outDir},
			{"absolute ~/.ssh", "root/.ssh", outDir},
		} {
			root := imageRoot(t, rootPasswd)
			os.MkdirAll(filepath.Join(root, "root"), 0o700)
			os.Symlink(tc.target, filepath.Join(root, tc.link))
			cfg, _ := sshdCfg(t)
			log, _ := logBuffer()
			err := prepareImageSSHD(log, root, cfg)
			if err == nil {
				t.Errorf("%s: no error", tc.name)
			}
			if ents, _ := os.ReadDir(outDir); len(ents) != 0 {
				t.Fatalf("%s: wrote outside the image: %v", tc.name, ents)
			}
		}
		// A link to a directory inside the image is followed, as it would
		// be in the guest: /root -> /var/roothome.
		root := imageRoot(t, rootPasswd)
		os.MkdirAll(filepath.Join(root, "var/roothome"), 0o700)
		os.Symlink("/var/roothome", filepath.Join(root, "root"))
		cfg, client := sshdCfg(t)
		log, _ := logBuffer()
		if err := prepareImageSSHD(log, root, cfg); err != nil {
			t.Fatal(err)
		}
		checkOwnedFile(t, filepath.Join(root, "var/roothome/.ssh/authorized_keys"), []byte(authorizedLine(client)+" banger@host\n"), 0o600, 0)
	})

	t.Run("directory at a file's name", func(t *testing.T) {
		root := imageRoot(t, rootPasswd)
		os.MkdirAll(filepath.Join(root, "etc/ssh/ssh_host_ed25519_key"), 0o755)
		cfg, _ := sshdCfg(t)
		log, _ := logBuffer()
		if err := prepareImageSSHD(log, root, cfg); err == nil || !strings.Contains(err.Error(), "is a directory") {
			t.Errorf("err = %v", err)
		}
	})
}

func TestPrepareImageSSHDRefusesBadConfig(t *testing.T) {
	root := imageRoot(t, rootPasswd)
	cfg, _ := sshdCfg(t)
	log, _ := logBuffer()
	for _, c := range []agentproto.SSHConfig{
		{HostKey: "nope", AuthorizedKeys: cfg.AuthorizedKeys},
		{HostKey: cfg.HostKey},
		{HostKey: cfg.HostKey, AuthorizedKeys: []string{`command="x" ` + strings.TrimSpace(cfg.AuthorizedKeys[0])}},
	} {
		if err := prepareImageSSHD(log, root, c); err == nil {
			t.Errorf("%+v: no error", c)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "etc/ssh")); err == nil {
		t.Error("wrote files for a bad config")
	}
}

func TestSSHDConfigProblems(t *testing.T) {
	root := t.TempDir()
	write := func(name, body string) {
		os.MkdirAll(filepath.Join(root, filepath.Dir(name)), 0o755)
		os.WriteFile(filepath.Join(root, name), []byte(body), 0o644)
	}
	log, _ := logBuffer()
	r, err := openTree(root)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	problems := func() string {
		return strings.Join(sshdConfigProblems(r.sshdSettings(log), "/root", 22), "\n")
	}

	// Debian's default: nothing to say.
	write("etc/ssh/sshd_config", "Include /etc/ssh/sshd_config.d/*.conf\n#PermitRootLogin prohibit-password\nUsePAM yes\nSubsystem\tsftp\t/usr/lib/openssh/sftp-server\n")
	if p := problems(); p != "" {
		t.Errorf("default config: %s", p)
	}
	// An Include comes first, so its values win; the main file's later
	// values do not; Match blocks are conditional.
	write("etc/ssh/sshd_config.d/10-hard.conf", "PermitRootLogin=no\n  pubkeyauthentication   no # really\n")
	write("etc/ssh/sshd_config.d/20-late.conf", "PermitRootLogin yes\n")
	write("etc/ssh/sshd_config", "Include sshd_config.d/*.conf\nPermitRootLogin yes\nHostKey /etc/ssh/ssh_host_rsa_key\nAuthorizedKeysFile \"/etc/keys/%u\"\nPort 2222\nMatch User bob\n  PasswordAuthentication yes\nHostKey /etc/ssh/ssh_host_ed25519_key\n")
	p := problems()
	for _, want := range []string{"PermitRootLogin no", "PubkeyAuthentication no", "HostKey /etc/ssh/ssh_host_rsa_key", "AuthorizedKeysFile /etc/keys/%u", "Port 2222"} {
		if !strings.Contains(p, want) {
			t.Errorf("problems lack %q:\n%s", want, p)
		}
	}
	// What works: the default key, %h, a relative path, port 22 among others.
	write("etc/ssh/sshd_config.d/10-hard.conf", "")
	write("etc/ssh/sshd_config", "HostKey /etc/ssh/ssh_host_rsa_key\nHostKey /etc/ssh/ssh_host_ed25519_key\nAuthorizedKeysFile .ssh/authorized_keys2 %h/.ssh/authorized_keys\nPort 2222\nPort 22\nPermitRootLogin without-password\n")
	if p := problems(); p != "" {
		t.Errorf("working config: %s", p)
	}
}

func TestSSHDConfigLine(t *testing.T) {
	for _, tc := range []struct {
		in   string
		kw   string
		args []string
	}{
		{"  # comment", "", nil},
		{"PermitRootLogin no", "permitrootlogin", []string{"no"}},
		{"Port=22", "port", []string{"22"}},
		{"Port = 22 # x", "port", []string{"22"}},
		{"AuthorizedKeysFile\t\"/a b/%u\"  .ssh/k", "authorizedkeysfile", []string{"/a b/%u", ".ssh/k"}},
		{"UsePAM", "usepam", nil},
	} {
		kw, args := sshdConfigLine(tc.in)
		if kw != tc.kw || strings.Join(args, "|") != strings.Join(tc.args, "|") {
			t.Errorf("%q: %q %q, want %q %q", tc.in, kw, args, tc.kw, tc.args)
		}
	}
}

// TestTreeOpenNoLinks: the walk for kernels without openat2 opens plain
// paths and refuses every link on the way.
func TestTreeOpenNoLinks(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "etc/ssh"), 0o755)
	os.WriteFile(filepath.Join(root, "etc/ssh/f"), []byte("x"), 0o644)
	os.Symlink("etc", filepath.Join(root, "linkdir"))
	os.Symlink("f", filepath.Join(root, "etc/ssh/linkfile"))
	r, err := openTree(root)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	f, err := r.openNoLinks("/etc/ssh/f", os.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	for _, p := range []string{"/linkdir/ssh/f", "etc/ssh/linkfile", "/etc/ssh/nope"} {
		if f, err := r.openNoLinks(p, os.O_RDONLY); err == nil {
			f.Close()
			t.Errorf("%s: opened", p)
		}
	}
}
