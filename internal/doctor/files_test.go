package doctor

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bangervm/banger/internal/sshconf"
)

func installInclude(user, include string) error {
	_, err := sshconf.Install(user, include)
	return err
}

// TestSSHConfig works on a real ssh config file: the user's own lines
// stay as they were through the automatic fix.
func TestSSHConfig(t *testing.T) {
	env, _ := testEnv(t)
	mine := "Host example\n  User me\n"
	writeFile(t, env.SSHConfig, mine, 0o600)
	env.InstallSSH = func() error {
		writeFile(t, env.SSHInclude, "Host *.vm\n", 0o644)
		return installInclude(env.SSHConfig, env.SSHInclude)
	}
	r := one(t, env, "ssh-config")
	expect(t, r, Warn, "does not include banger's ssh config", "banger ssh-config --install")
	if r.autofix == nil {
		t.Fatal("no automatic fix")
	}
	if err := r.autofix(); err != nil {
		t.Fatal(err)
	}
	expect(t, one(t, env, "ssh-config"), Pass, env.SSHConfig+" includes "+env.SSHInclude, "")
	if b, _ := os.ReadFile(env.SSHConfig); !strings.HasSuffix(string(b), mine) {
		t.Errorf("the user's lines changed:\n%s", b)
	}

	// The Include is there but banger's file is gone: writing it again
	// is the fix.
	os.Remove(env.SSHInclude)
	r = one(t, env, "ssh-config")
	expect(t, r, Warn, "which is missing", "banger ssh-config --install")
	if r.autofix == nil {
		t.Error("no automatic fix for a missing include file")
	}

	// Another installation's Include is not rewritten automatically.
	other := filepath.Join(t.TempDir(), "config")
	writeFile(t, env.SSHConfig, mine, 0o600)
	installInclude(env.SSHConfig, other)
	r = one(t, env, "ssh-config")
	expect(t, r, Warn, "includes "+other+", not this installation's", "--uninstall && banger ssh-config --install")
	if r.autofix != nil {
		t.Error("offers to replace another installation's Include")
	}

	env.SSHConfig = ""
	expect(t, one(t, env, "ssh-config"), Skip, "no home directory", "")
}

func TestDisk(t *testing.T) {
	env, _ := testEnv(t)
	expect(t, one(t, env, "disk-space"), Pass, "state "+env.Layout.State+": 100.0 GiB free of 200.0 GiB; cache "+env.Layout.Cache+": same file system as state", "")

	space := map[string]Space{
		env.Layout.State: {Free: 3 * gib, Total: 50 * gib, Dev: 1},
		env.Layout.Cache: {Free: gib / 2, Total: 10 * gib, Dev: 2},
	}
	env.Statfs = func(p string) (Space, error) { return space[p], nil }
	expect(t, one(t, env, "disk-space"), Fail, "state "+env.Layout.State+": 3.0 GiB free of 50.0 GiB; cache "+env.Layout.Cache+": 0.5 GiB free of 10.0 GiB (under 1 GiB", "free space on the file system of "+env.Layout.State+" and "+env.Layout.Cache)

	space[env.Layout.Cache] = Space{Free: 20 * gib, Total: 40 * gib, Dev: 2}
	expect(t, one(t, env, "disk-space"), Warn, "3.0 GiB free of 50.0 GiB", "banger image cache prune")

	// A directory not made yet is measured where it will be made.
	os.RemoveAll(env.Layout.Cache)
	var asked []string
	env.Statfs = func(p string) (Space, error) {
		asked = append(asked, p)
		return Space{Free: 10 * gib, Total: 20 * gib, Dev: 1}, nil
	}
	one(t, env, "disk-space")
	if asked[1] != filepath.Dir(env.Layout.Cache) {
		t.Errorf("statfs of a missing cache dir asked %v", asked)
	}

	env.Statfs = func(string) (Space, error) { return Space{}, errors.New("statfs: permission denied") }
	expect(t, one(t, env, "disk-space"), Warn, "permission denied", "readable")
}
