package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/bangervm/banger/internal/testutil"
)

// TestVMCp copies files and directories both ways with any image (the
// busybox one here), keeping modes and symlinks.
func TestVMCp(t *testing.T) {
	e := sharedVMEnv(t)
	e.ok("vm", "run", "-d", "--name", "cpbox", "--image", e.image)
	defer e.run("vm", "delete", "-f", "cpbox")
	src := filepath.Join(t.TempDir(), "tree")
	os.MkdirAll(filepath.Join(src, "sub dir"), 0o755)
	os.WriteFile(filepath.Join(src, "run.sh"), []byte("#!/bin/sh\necho ran\n"), 0o750)
	os.WriteFile(filepath.Join(src, "sub dir", "data.txt"), []byte("data\n"), 0o600)
	os.Symlink("run.sh", filepath.Join(src, "link"))
	local := filepath.Join(t.TempDir(), "local.txt")
	os.WriteFile(local, []byte("single\n"), 0o644)

	e.ok("vm", "cp", src, "cpbox:/tmp/")
	e.ok("vm", "cp", local, "cpbox:/tmp/renamed.txt")
	out := e.ok("vm", "exec", "cpbox", "--", "sh", "-c", `cd /tmp && stat -c '%a %n' tree/run.sh "tree/sub dir/data.txt"; readlink tree/link; cat renamed.txt; tree/run.sh`)
	if out != "750 tree/run.sh\n600 tree/sub dir/data.txt\nrun.sh\nsingle\nran\n" {
		t.Errorf("after copying in: %q", out)
	}
	back := t.TempDir()
	e.ok("vm", "cp", "cpbox:/tmp/tree", back)
	e.ok("vm", "cp", "cpbox:/srv/marker", filepath.Join(back, "marker.txt"))
	if st, err := os.Stat(filepath.Join(back, "tree", "run.sh")); err != nil || st.Mode().Perm() != 0o750 {
		t.Errorf("copied back: %v %v", st, err)
	}
	if l, _ := os.Readlink(filepath.Join(back, "tree", "link")); l != "run.sh" {
		t.Errorf("symlink copied back as %q", l)
	}
	if b, _ := os.ReadFile(filepath.Join(back, "marker.txt")); string(b) != "from the image\n" {
		t.Errorf("file copied back: %q", b)
	}
	t.Run("from a hostile guest", func(t *testing.T) {
		// As root, the CLI could create what the guest sends: a device
		// node, a FIFO, a setuid program owned by anyone.
		testutil.RequireRoot(t)
		e := *e.env
		e.t = t
		e.ok("vm", "exec", "cpbox", "--", "sh", "-c", `set -e; mkdir /tmp/bad; cd /tmp/bad
mknod sda b 8 0; chmod 666 sda; mknod mem c 1 1; mkfifo fifo
echo '#!/bin/sh' > suid; chown 1234:1234 suid; chmod 4755 suid; echo ok > ok`)
		dst := t.TempDir()
		r := e.run("vm", "cp", "cpbox:/tmp/bad", dst)
		if r.code != 1 {
			t.Errorf("vm cp: exit %d, want 1; stderr %q", r.code, r.err)
		}
		for _, name := range []string{"bad/sda: block device", "bad/mem: character device", "bad/fifo: FIFO"} {
			if !strings.Contains(r.err, "not copied: "+name) {
				t.Errorf("stderr lacks %q: %q", name, r.err)
			}
		}
		ents, _ := os.ReadDir(filepath.Join(dst, "bad"))
		var names []string
		for _, ent := range ents {
			names = append(names, ent.Name())
		}
		if strings.Join(names, " ") != "ok suid" {
			t.Errorf("copied %v, want ok and suid", names)
		}
		checkOwner := func(p string, uid uint32) {
			t.Helper()
			fi, err := os.Lstat(p)
			if err != nil {
				t.Fatal(err)
			}
			if st := fi.Sys().(*syscall.Stat_t); fi.Mode() != 0o755 || st.Uid != uid {
				t.Errorf("%s: mode %v owner %d, want -rwxr-xr-x and %d", p, fi.Mode(), st.Uid, uid)
			}
		}
		checkOwner(filepath.Join(dst, "bad", "suid"), 0)
		// -a keeps the owner, never the setuid bit.
		e.ok("vm", "cp", "-a", "cpbox:/tmp/bad/suid", filepath.Join(dst, "kept"))
		checkOwner(filepath.Join(dst, "kept"), 1234)
	})
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"vm", "cp", "cpbox:/nope", back}, 1, "/nope"},
		{[]string{"vm", "cp", filepath.Join(back, "missing"), "cpbox:/tmp/"}, 1, "missing"},
		{[]string{"vm", "cp", "a", "b"}, 2, "VM:PATH"},
	} {
		r := e.run(tc.args...)
		if r.code != tc.code || !strings.Contains(r.err, tc.want) {
			t.Errorf("banger %v: exit %d stderr %q; want %d mentioning %q", tc.args, r.code, r.err, tc.code, tc.want)
		}
	}
}
