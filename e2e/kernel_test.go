package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/bangervm/banger/internal/testutil"
)

// TestKernelCommands uses Debian's real cloud kernel: pulled through the
// host's apt, imported from the .deb, and re-imported as a bzImage and as
// an ELF vmlinux.
func TestKernelCommands(t *testing.T) {
	testutil.RequireTool(t, "apt-get", "apt")
	e := newEnv(t)
	r := e.run("kernel", "pull", "debian-cloud", "--json")
	testutil.Require(t, r.code == 0, "kernel pull debian-cloud (needs the Debian mirror): "+r.err)
	var k struct {
		Name, Version, Format, Vmlinux, BzImage, Initrd string
		PVH                                             bool
		Modules                                         []string
	}
	if err := json.Unmarshal([]byte(r.out), &k); err != nil {
		t.Fatalf("%v: %q", err, r.out)
	}
	if k.Name != "debian-cloud" || !k.PVH || k.Initrd == "" || !strings.HasSuffix(k.Version, "cloud-amd64") {
		t.Errorf("kernel %+v", k)
	}
	for _, m := range []string{"virtio_mmio", "virtio_blk", "virtio_net", "virtio_console", "overlay", "vmw_vsock_virtio_transport"} {
		if !contains(k.Modules, m) {
			t.Errorf("initramfs lacks %s: %v", m, k.Modules)
		}
	}
	if r := e.run("kernel", "pull", "debian-cloud"); r.code != 1 || !strings.Contains(r.err, "exists") {
		t.Errorf("second pull under the same name: %+v", r)
	}

	// The .deb itself, through `kernel import --deb`.
	dl := t.TempDir()
	cmd := exec.Command("apt-get", "download", strings.TrimSuffix("linux-image-"+k.Version, ""))
	cmd.Dir = dl
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("apt-get download: %v %s", err, out)
	}
	debs, _ := filepath.Glob(filepath.Join(dl, "*.deb"))
	if len(debs) != 1 {
		t.Fatalf("downloaded %v", debs)
	}
	if out := e.ok("kernel", "import", "--deb", debs[0], "--name", "from-deb"); !strings.Contains(out, "initramfs with") {
		t.Errorf("import --deb: %q", out)
	}
	// A bare bzImage with the initrd, and the extracted ELF.
	e.ok("kernel", "import", k.BzImage, "--initrd", k.Initrd, "--name", "bz")
	e.ok("kernel", "import", k.Vmlinux, "--name", "elf")
	out := e.ok("kernel", "list")
	for _, n := range []string{"debian-cloud", "from-deb", "bz", "elf"} {
		if !strings.Contains(out, n) {
			t.Errorf("list lacks %s: %s", n, out)
		}
	}
	if out := e.ok("kernel", "show", "bz"); !strings.Contains(out, "bzimage") || !strings.Contains(out, "initrd:") {
		t.Errorf("show bz: %s", out)
	}

	// Bad input: not a kernel, missing file, both --initrd and --modules.
	junk := filepath.Join(t.TempDir(), "junk")
	os.WriteFile(junk, []byte("not a kernel at all"), 0o644)
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"kernel", "import", junk, "--name", "junk"}, 1, "junk"},
		{[]string{"kernel", "import", "/nonexistent/vmlinux", "--name", "nope"}, 1, "not found"},
		{[]string{"kernel", "import", k.Vmlinux, "--initrd", k.Initrd, "--modules", "/lib/modules", "--name", "x"}, 2, "not both"},
		{[]string{"kernel", "import", k.Vmlinux, "--name", "Bad Name"}, 1, "kernel name"},
	} {
		r := e.run(tc.args...)
		if r.code != tc.code || !strings.Contains(r.err, tc.want) {
			t.Errorf("banger %v: exit %d stderr %q; want exit %d mentioning %q", tc.args, r.code, r.err, tc.code, tc.want)
		}
	}
	entries, _ := os.ReadDir(filepath.Join(e.home, "state", "kernels"))
	if len(entries) != 4 { // debian-cloud, from-deb, bz, elf
		t.Errorf("kernel dirs after failed imports: %d, want 4", len(entries))
	}
	if tmp, _ := os.ReadDir(filepath.Join(e.home, "state", "tmp")); len(tmp) != 0 {
		t.Errorf("staging left behind: %d entries", len(tmp))
	}
	// A kernel shipped as an OCI image, as Ignite and Flintlock ship them.
	vmlinux, _ := os.ReadFile(k.Vmlinux)
	initrd, _ := os.ReadFile(k.Initrd)
	reg := testutil.NewRegistry(t)
	ref := reg.Push(t, testutil.Image(t, v1.Config{}, testutil.Tar(t,
		testutil.TarEntry{Name: "boot/", Type: '5'},
		testutil.TarEntry{Name: "boot/vmlinux", Body: string(vmlinux)},
		testutil.TarEntry{Name: "boot/initrd.img", Body: string(initrd)},
	)), "kernels/k:6.1")
	if out := e.ok("kernel", "pull", ref, "--json"); !strings.Contains(out, `"name": "k-6.1"`) || !strings.Contains(out, `"initrd"`) {
		t.Errorf("kernel pull OCI: %s", out)
	}
	if r := e.run("kernel", "pull", reg.Addr+"/kernels/none:1"); r.code != 1 {
		t.Errorf("kernel pull of a missing ref: %+v", r)
	}
	// A mistyped catalog name is said to be one, not looked up on Docker Hub.
	if r := e.run("kernel", "pull", "debian-clod"); r.code == 0 || !strings.Contains(r.err, "not in the catalog") || strings.Contains(r.err, "docker.io") {
		t.Errorf("kernel pull debian-clod: %+v", r)
	}

	e.ok("kernel", "rm", "bz", "elf")
	if _, err := os.Stat(filepath.Join(e.home, "state", "kernels", "bz")); !os.IsNotExist(err) {
		t.Errorf("kernel dir left after rm: %v", err)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
