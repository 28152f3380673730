package sshconf

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestClientKeyAndPins(t *testing.T) {
	d := &Dir{Path: filepath.Join(t.TempDir(), "ssh")}
	pub, err := d.ClientKey()
	if err != nil || !strings.HasPrefix(pub, "ssh-ed25519 ") {
		t.Fatalf("ClientKey = %q, %v", pub, err)
	}
	again, _ := d.ClientKey()
	if again != pub {
		t.Error("key regenerated on second use")
	}
	if st, _ := os.Stat(filepath.Join(d.Path, KeyFile)); st.Mode().Perm() != 0o600 {
		t.Errorf("private key mode %v", st.Mode().Perm())
	}
	_, h1, _ := NewKey("")
	_, h2, _ := NewKey("")
	d.Pin([]string{"web.vm", "172.30.0.2"}, h1)
	d.Pin([]string{"db.vm", "172.30.0.3"}, h2)
	d.Pin([]string{"web.vm", "172.30.0.2"}, h2) // re-pinned: replaces
	b, _ := os.ReadFile(filepath.Join(d.Path, KnownHostsFile))
	if strings.Count(string(b), "web.vm") != 1 || strings.Count(string(b), "\n") != 2 {
		t.Errorf("known_hosts:\n%s", b)
	}
	d.Unpin([]string{"web.vm", "172.30.0.2"})
	b, _ = os.ReadFile(filepath.Join(d.Path, KnownHostsFile))
	if strings.Contains(string(b), "web.vm") || !strings.Contains(string(b), "db.vm") {
		t.Errorf("after unpin:\n%s", b)
	}
}

func TestInstallUninstall(t *testing.T) {
	dir := t.TempDir()
	user := filepath.Join(dir, ".ssh", "config")
	os.MkdirAll(filepath.Dir(user), 0o700)
	orig := "Host example\n  User me\n"
	os.WriteFile(user, []byte(orig), 0o640)
	for i := 0; i < 2; i++ {
		changed, err := Install(user, "/x/banger/ssh/config")
		if err != nil || changed != (i == 0) {
			t.Fatalf("Install #%d: %v %v", i, changed, err)
		}
	}
	b, _ := os.ReadFile(user)
	if !strings.HasPrefix(string(b), fenceBegin+"\nInclude /x/banger/ssh/config\n") || !strings.HasSuffix(string(b), orig) {
		t.Errorf("installed:\n%s", b)
	}
	if st, _ := os.Stat(user); st.Mode().Perm() != 0o640 {
		t.Errorf("mode changed to %v", st.Mode().Perm())
	}
	if inc, err := Included(user); inc != "/x/banger/ssh/config" || err != nil {
		t.Errorf("Included = %q, %v", inc, err)
	}
	if changed, err := Uninstall(user); !changed || err != nil {
		t.Fatal(changed, err)
	}
	if inc, err := Included(user); inc != "" || err != nil {
		t.Errorf("Included after uninstall = %q, %v", inc, err)
	}
	if b, _ := os.ReadFile(user); string(b) != orig {
		t.Errorf("uninstall left %q, want the original", b)
	}
	// A missing file is created by install and untouched by uninstall.
	other := filepath.Join(dir, "none", "config")
	if changed, _ := Uninstall(other); changed {
		t.Error("uninstall of a missing file changed something")
	}
	if inc, err := Included(other); inc != "" || err != nil {
		t.Errorf("Included of a missing file = %q, %v", inc, err)
	}
	if _, err := Install(other, "/a dir/inc"); err != nil {
		t.Fatal(err)
	}
	if inc, _ := Included(other); inc != "/a dir/inc" {
		t.Errorf("Included of a quoted path = %q", inc)
	}
}

func TestWriteConfig(t *testing.T) {
	d := &Dir{Path: filepath.Join(t.TempDir(), "with space", "ssh")}
	if err := d.WriteConfig("/usr/bin/banger ssh-proxy"); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(d.Config())
	for _, want := range []string{"Host *.vm", "User root", `IdentityFile "`, "StrictHostKeyChecking yes", "ProxyCommand /usr/bin/banger ssh-proxy %h %p"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("config lacks %q:\n%s", want, b)
		}
	}
}
