package rootfs

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/bangervm/banger/internal/testutil"
)

// got is one tar entry as read back.
type got struct {
	hdr  *tar.Header
	body string
}

func readTar(t *testing.T, b []byte) map[string]got {
	t.Helper()
	out := map[string]got{}
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(tr)
		out[hdr.Name] = got{hdr, string(body)}
	}
}

// tree makes an image's files: owners, modes, links, a device, a FIFO,
// an extended attribute, and content under dev/ that must not be copied.
func tree(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"etc", "bin", "home/user", "dev", "proc", "sys", "mnt", "srv"} {
		must(os.MkdirAll(filepath.Join(root, d), 0o755))
	}
	must(os.WriteFile(filepath.Join(root, "etc/hosts"), []byte("image's hosts\n"), 0o644))
	must(os.WriteFile(filepath.Join(root, "etc/os-release"), []byte("ID=img\n"), 0o644))
	must(os.WriteFile(filepath.Join(root, "bin/su"), []byte("setuid"), 0o755))
	must(unix.Chmod(filepath.Join(root, "bin/su"), 0o4755))
	must(os.Link(filepath.Join(root, "bin/su"), filepath.Join(root, "bin/su2")))
	must(os.Symlink("/bin/busybox", filepath.Join(root, "bin/sh")))
	must(os.WriteFile(filepath.Join(root, "home/user/secret"), []byte("mine"), 0o600))
	must(os.Chown(filepath.Join(root, "home/user/secret"), 1000, 1000))
	must(os.Chown(filepath.Join(root, "home/user"), 1000, 1000))
	must(os.WriteFile(filepath.Join(root, "dev/leftover"), []byte("x"), 0o644))
	must(unix.Mknod(filepath.Join(root, "srv/null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	must(unix.Mkfifo(filepath.Join(root, "srv/fifo"), 0o600))
	if err := unix.Setxattr(filepath.Join(root, "etc/os-release"), "user.banger", []byte("kept"), 0); err != nil {
		testutil.Missing(t, "user extended attributes on %s: %v", root, err)
	}
	return root
}

// What a container shows of its image reaches the tar as the image has
// it; what the runtime mounted over it (a volume, the kubelet's
// /etc/hosts, for which localhost's lines stand in) does not, whatever it
// holds; /dev, /proc and /sys are empty mount points. Mounts are made in a
// mount namespace of this test's own thread.
func TestWrite(t *testing.T) {
	testutil.RequireRoot(t)
	root := tree(t)
	hosts := filepath.Join(t.TempDir(), "hosts")
	if err := os.WriteFile(hosts, []byte("kubelet's hosts\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	type result struct {
		st  Stats
		tar []byte
		err error
	}
	done := make(chan result)
	go func() {
		// Never unlocked: the thread, with its mount namespace, ends
		// with the goroutine.
		runtime.LockOSThread()
		var r result
		defer func() { done <- r }()
		if r.err = unix.Unshare(unix.CLONE_NEWNS); r.err != nil {
			return
		}
		if r.err = unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); r.err != nil {
			return
		}
		if r.err = unix.Mount("tmpfs", filepath.Join(root, "mnt"), "tmpfs", 0, "size=1m"); r.err != nil {
			return
		}
		os.WriteFile(filepath.Join(root, "mnt/volume-file"), []byte("not the image's"), 0o644)
		if r.err = unix.Mount(hosts, filepath.Join(root, "etc/hosts"), "", unix.MS_BIND, ""); r.err != nil {
			return
		}
		var buf bytes.Buffer
		r.st, r.err = Write(context.Background(), root, &buf, Limits{Bytes: 1 << 20, Files: 100})
		r.tar = buf.Bytes()
	}()
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	ents := readTar(t, r.tar)
	if !slices.Equal(r.st.Skipped, []string{"etc/hosts", "mnt"}) {
		t.Errorf("skipped %v, want etc/hosts and mnt", r.st.Skipped)
	}
	if e := ents["etc/hosts"]; !strings.HasPrefix(e.body, "127.0.0.1\tlocalhost\n") {
		t.Errorf("etc/hosts: %q, want localhost's lines, neither the kubelet's nor the hidden image's", e.body)
	}
	for _, name := range []string{"mnt/", "mnt/volume-file", "dev/leftover"} {
		if _, ok := ents[name]; ok {
			t.Errorf("%s is in the tar: not the image's", name)
		}
	}
	for _, name := range []string{"./", "dev/", "proc/", "sys/"} {
		if e, ok := ents[name]; !ok || e.hdr.Typeflag != tar.TypeDir {
			t.Errorf("%s: %+v, want a directory", name, e.hdr)
		}
	}
	check := func(name string, ok bool, what string) {
		t.Helper()
		if !ok {
			t.Errorf("%s: %+v %q, want %s", name, ents[name].hdr, ents[name].body, what)
		}
	}
	e := ents["etc/os-release"]
	check("etc/os-release", e.body == "ID=img\n" && e.hdr.PAXRecords["SCHILY.xattr.user.banger"] == "kept", "content and xattr kept")
	e = ents["bin/su"]
	check("bin/su", e.hdr.Typeflag == tar.TypeReg && e.hdr.Mode == 0o4755 && e.body == "setuid", "setuid file")
	e = ents["bin/su2"]
	check("bin/su2", e.hdr.Typeflag == tar.TypeLink && e.hdr.Linkname == "bin/su", "a hard link to bin/su")
	e = ents["bin/sh"]
	check("bin/sh", e.hdr.Typeflag == tar.TypeSymlink && e.hdr.Linkname == "/bin/busybox", "a symlink, not followed")
	e = ents["home/user/secret"]
	check("home/user/secret", e.hdr.Uid == 1000 && e.hdr.Gid == 1000 && e.hdr.Mode == 0o600 && e.body == "mine", "owner 1000, 0600")
	e = ents["srv/null"]
	check("srv/null", e.hdr.Typeflag == tar.TypeChar && e.hdr.Devmajor == 1 && e.hdr.Devminor == 3, "char device 1:3")
	e = ents["srv/fifo"]
	check("srv/fifo", e.hdr.Typeflag == tar.TypeFifo, "a FIFO")
}

// An image past the limits fails with a reason, however it is made.
func TestWriteLimits(t *testing.T) {
	root := t.TempDir()
	os.WriteFile(filepath.Join(root, "big"), bytes.Repeat([]byte("x"), 4096), 0o644)
	for i := range 5 {
		os.WriteFile(filepath.Join(root, "f"+string(rune('a'+i))), nil, 0o644)
	}
	for _, tt := range []struct {
		limits Limits
		want   string
	}{
		{Limits{Bytes: 4095}, "more than 4095 bytes"},
		{Limits{Files: 5}, "more than 5 files"},
	} {
		_, err := Write(context.Background(), root, io.Discard, tt.limits)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("limits %+v: %v, want %q", tt.limits, err, tt.want)
		}
	}
	if _, err := Write(context.Background(), filepath.Join(root, "big"), io.Discard, Limits{}); err == nil {
		t.Error("a file as the root: want an error")
	}
	if _, err := Write(context.Background(), filepath.Join(root, "none"), io.Discard, Limits{}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a missing root: %v", err)
	}
}

func TestConfig(t *testing.T) {
	c := Config([]string{"PATH=/usr/bin", "HOSTNAME=box-vm", "KUBERNETES_SERVICE_HOST=10.0.0.1", "LANG=C.UTF-8"}, "/app")
	if !slices.Equal(c.Env, []string{"PATH=/usr/bin", "LANG=C.UTF-8"}) || c.WorkingDir != "/app" {
		t.Errorf("config %+v", c)
	}
}

func TestUnescapeMount(t *testing.T) {
	for in, want := range map[string]string{`/a\040b`: "/a b", `/plain`: "/plain", `/end\134`: `/end\`, `/short\04`: `/short\04`} {
		if got := unescapeMount(in); got != want {
			t.Errorf("unescapeMount(%q) = %q, want %q", in, got, want)
		}
	}
}
