package images

import (
	"archive/tar"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/bangervm/banger/internal/testutil"
)

// readTar returns the docker-save tar's manifest.json entries.
func manifest(t *testing.T, path string) []struct{ RepoTags []string } {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			t.Fatal("no manifest.json in the tar")
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Name == "manifest.json" {
			var m []struct{ RepoTags []string }
			if err := json.NewDecoder(tr).Decode(&m); err != nil {
				t.Fatal(err)
			}
			return m
		}
	}
}

// extract unpacks the image's only layer into dir and returns the
// entries' types by path.
func extract(t *testing.T, tarPath, ref, dir string) map[string]byte {
	t.Helper()
	types := map[string]byte{}
	err := Walk(tarPath, ref, func(h *tar.Header, r io.Reader) error {
		var err error
		p := "/" + strings.TrimSuffix(h.Name, "/")
		types[p] = h.Typeflag
		dst := filepath.Join(dir, p)
		switch h.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(dst, os.FileMode(h.Mode)&os.ModePerm)
		case tar.TypeSymlink:
			err = os.Symlink(h.Linkname, dst)
		case tar.TypeReg:
			var b []byte
			if b, err = io.ReadAll(r); err == nil {
				err = os.WriteFile(dst, b, os.FileMode(h.Mode)&os.ModePerm)
			}
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return types
}

// Both images land in one docker-save tar under their names; the launcher
// image holds QEMU with every library it loads, so QEMU runs in a root
// made of the image alone, and the kernel, agent and firmware are where
// the launcher looks for them.
func TestWriteTar(t *testing.T) {
	testutil.RequireTool(t, "qemu-system-x86_64", "qemu-system-x86")
	testutil.RequireTool(t, "mke2fs", "e2fsprogs")
	dir := t.TempDir()
	fake := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ctl, err := ControllerImage(fake("banger-controller", "controller"))
	if err != nil {
		t.Fatal(err)
	}
	l, err := LauncherImage(t.Context(), LauncherConfig{
		Launcher: fake("banger-launcher", "launcher"), Agent: fake("banger-agent", "agent"),
		Kernel: fake("vmlinux", "kernel"), Initrd: fake("initrd.img", "initrd"),
	})
	if err != nil {
		t.Fatal(err)
	}
	tarPath := filepath.Join(dir, "images.tar")
	if err := WriteTar(tarPath, map[string]v1.Image{Launcher: l, Controller: ctl}); err != nil {
		t.Fatal(err)
	}
	var tags []string
	for _, m := range manifest(t, tarPath) {
		tags = append(tags, m.RepoTags...)
	}
	if strings.Join(tags, " ") != "banger.dev/launcher:dev banger.dev/controller:dev" &&
		strings.Join(tags, " ") != "banger.dev/controller:dev banger.dev/launcher:dev" {
		t.Errorf("tags %q", tags)
	}
	st, _ := os.Stat(tarPath)
	t.Logf("images tar: %d MiB", st.Size()>>20)

	root := filepath.Join(dir, "launcher")
	files := extract(t, tarPath, Launcher, root)
	for _, p := range []string{LauncherBin, AgentBin, KernelDir + "/vmlinux", KernelDir + "/initrd.img",
		"/usr/bin/qemu-system-x86_64", "/usr/share/qemu/bios-microvm.bin", "/usr/share/qemu/qboot.rom", "/lib64/ld-linux-x86-64.so.2"} {
		if _, ok := files[p]; !ok {
			t.Errorf("launcher image lacks %s", p)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(root, AgentBin)); string(b) != "agent" {
		t.Errorf("agent: %q", b)
	}
	if os.Geteuid() == 0 {
		for _, argv := range [][]string{{"/usr/bin/qemu-system-x86_64", "-version"}, {"mke2fs", "-V"}, {"sh", "-c", "echo sh"},
			// Help output only: nothing here touches the namespace.
			{"ip", "-V"}, {"nft", "--version"}, {"iptables", "-m", "conntrack", "-m", "comment", "-j", "MASQUERADE", "-h"}} {
			cmd := exec.Command(argv[0], argv[1:]...)
			cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: root}
			cmd.Env = []string{"PATH=/usr/local/bin:/usr/bin:/usr/sbin:/bin:/sbin"}
			cmd.Dir = "/"
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("%v in the launcher image: %v: %s", argv, err, out)
			}
		}
	}

	cfiles := extract(t, tarPath, Controller, filepath.Join(dir, "controller"))
	if cfiles["/usr/local/bin/banger-controller"] != tar.TypeReg {
		t.Errorf("controller image: %v", cfiles)
	}
}

// The node agent's image is its static binary alone, run as root (the
// kubelet's device plugin directory is root's) with nothing else to run.
func TestNodeImage(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "banger-node")
	if err := os.WriteFile(bin, []byte("node"), 0o755); err != nil {
		t.Fatal(err)
	}
	img, err := NodeImage(bin)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.Config.User != "0:0" || strings.Join(cf.Config.Entrypoint, " ") != "/usr/local/bin/banger-node" {
		t.Errorf("node image config: user %q entrypoint %q", cf.Config.User, cf.Config.Entrypoint)
	}
	tarPath := filepath.Join(dir, "node.tar")
	if err := WriteTar(tarPath, map[string]v1.Image{Node: img}); err != nil {
		t.Fatal(err)
	}
	files := extract(t, tarPath, Node, filepath.Join(dir, "root"))
	var regular []string
	for p, typ := range files {
		if typ == tar.TypeReg {
			regular = append(regular, p)
		}
	}
	slices.Sort(regular)
	if strings.Join(regular, " ") != "/etc/passwd /usr/local/bin/banger-node" {
		t.Errorf("node image files %v, want its binary and /etc/passwd", regular)
	}
}
