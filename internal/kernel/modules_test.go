package kernel

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/kernel/cpio"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// testModule is a module file in a synthetic tree.
type testModule struct {
	rel      string // path under lib/modules/<ver>
	depends  string
	vermagic string
}

// buildModuleTree writes a lib/modules/<ver> tree under root and returns the
// version directory. Modules ending in .xz, .zst or .gz are compressed.
func buildModuleTree(t testing.TB, root, version string, mods []testModule, builtin ...string) string {
	t.Helper()
	dir := filepath.Join(root, "lib", "modules", version)
	for _, m := range mods {
		vm := m.vermagic
		if vm == "" {
			vm = version + " SMP preempt mod_unload modversions "
		}
		ko := fakeKo("license=GPL", "depends="+m.depends, "name="+strings.Split(filepath.Base(m.rel), ".")[0], "vermagic="+vm)
		var data []byte
		switch {
		case strings.HasSuffix(m.rel, ".xz"):
			var b bytes.Buffer
			w, _ := xz.NewWriter(&b)
			w.Write(ko)
			w.Close()
			data = b.Bytes()
		case strings.HasSuffix(m.rel, ".zst"):
			enc, _ := zstd.NewWriter(nil)
			data = enc.EncodeAll(ko, nil)
		case strings.HasSuffix(m.rel, ".gz"):
			var b bytes.Buffer
			w := gzip.NewWriter(&b)
			w.Write(ko)
			w.Close()
			data = b.Bytes()
		default:
			data = ko
		}
		writeFile(t, filepath.Join(dir, filepath.FromSlash(m.rel)), data)
	}
	var b strings.Builder
	for _, m := range builtin {
		b.WriteString(m + "\n")
	}
	writeFile(t, filepath.Join(dir, "modules.builtin"), []byte(b.String()))
	return dir
}

// virtioTree mirrors the dependency shape of Debian's cloud kernel, with a
// mix of compressed modules and dashes in file names.
var virtioTree = []testModule{
	{rel: "kernel/drivers/virtio/virtio_ring.ko"},
	{rel: "kernel/drivers/virtio/virtio.ko.xz", depends: "virtio_ring"},
	{rel: "kernel/drivers/virtio/virtio_mmio.ko", depends: "virtio,virtio_ring"},
	{rel: "kernel/drivers/block/virtio_blk.ko.zst", depends: "virtio,virtio_ring"},
	{rel: "kernel/net/core/failover.ko"},
	{rel: "kernel/drivers/net/net_failover.ko.gz", depends: "failover"},
	{rel: "kernel/drivers/net/virtio_net.ko", depends: "virtio_ring,virtio,net_failover"},
	{rel: "kernel/drivers/char/virtio_console.ko", depends: "virtio,virtio_ring"},
	{rel: "kernel/net/vmw_vsock/vsock.ko"},
	{rel: "kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko", depends: "vsock"},
	{rel: "kernel/net/vmw_vsock/vmw_vsock_virtio_transport.ko", depends: "virtio,vmw_vsock_virtio_transport_common,virtio_ring,vsock"},
	{rel: "kernel/fs/overlayfs/overlay.ko"},
	{rel: "kernel/drivers/acpi/button.ko"},
	{rel: "kernel/drivers/input/evdev.ko"},
	{rel: "kernel/fs/unrelated.ko", depends: "vsock"},
	{rel: "kernel/crypto/aesni-intel.ko"},
}

func TestResolveModules(t *testing.T) {
	dir := buildModuleTree(t, t.TempDir(), testVersion, virtioTree, "kernel/fs/ext4/ext4.ko", "kernel/fs/crc32c-generic.ko")
	tree, err := openModuleTree(dir)
	if err != nil {
		t.Fatal(err)
	}
	if tree.files["aesni_intel"] != "kernel/crypto/aesni-intel.ko" || !tree.builtin["crc32c_generic"] {
		t.Errorf("dashes not normalized: %v %v", tree.files, tree.builtin)
	}
	res, err := tree.resolve(context.Background(), DefaultModules)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"virtio_ring", "virtio", "virtio_mmio", "virtio_blk", "failover", "net_failover", "virtio_net",
		"virtio_console", "vsock", "vmw_vsock_virtio_transport_common", "vmw_vsock_virtio_transport", "overlay", "button", "evdev"}
	if got := res.names(); !slices.Equal(got, want) {
		t.Errorf("load order\n got %v\nwant %v", got, want)
	}
	if len(res.missing) != 0 {
		t.Errorf("missing = %v; ext4 is built in", res.missing)
	}
	wantDep := `kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_mmio.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/net/core/failover.ko:
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/char/virtio_console.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/net/vmw_vsock/vsock.ko:
kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko: kernel/net/vmw_vsock/vsock.ko
kernel/net/vmw_vsock/vmw_vsock_virtio_transport.ko: kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko kernel/net/vmw_vsock/vsock.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/fs/overlayfs/overlay.ko:
kernel/drivers/acpi/button.ko:
kernel/drivers/input/evdev.ko:
`
	if got := string(res.depFile()); got != wantDep {
		t.Errorf("modules.dep\n got:\n%s\nwant:\n%s", got, wantDep)
	}
	for _, m := range res.order {
		if _, err := modinfo(m.data); err != nil {
			t.Errorf("%s: stored data is not the decompressed module: %v", m.rel, err)
		}
	}
}

func TestResolveModulesErrors(t *testing.T) {
	tests := []struct {
		name   string
		mods   []testModule
		wanted []string
		want   string
	}{
		{"missing dependency", []testModule{{rel: "kernel/a.ko", depends: "nothere"}}, []string{"a"}, "depends on nothere"},
		{"cycle", []testModule{{rel: "kernel/a.ko", depends: "b"}, {rel: "kernel/b.ko", depends: "a"}}, []string{"a"}, "cycle: a -> b -> a"},
		{"wrong vermagic", []testModule{{rel: "kernel/a.ko", vermagic: "5.10.0-1-amd64 SMP "}}, []string{"a"}, "built for kernel 5.10.0-1-amd64"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tree, err := openModuleTree(buildModuleTree(t, t.TempDir(), testVersion, tt.mods))
			if err != nil {
				t.Fatal(err)
			}
			_, err = tree.resolve(context.Background(), tt.wanted)
			if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want %q", err, tt.want)
			}
		})
	}

	t.Run("not an ELF", func(t *testing.T) {
		dir := buildModuleTree(t, t.TempDir(), testVersion, nil)
		writeFile(t, filepath.Join(dir, "kernel", "a.ko"), []byte("not a module"))
		tree, _ := openModuleTree(dir)
		_, err := tree.resolve(context.Background(), []string{"a"})
		if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "not an ELF module") {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("absent module is reported", func(t *testing.T) {
		tree, _ := openModuleTree(buildModuleTree(t, t.TempDir(), testVersion, virtioTree))
		res, err := tree.resolve(context.Background(), []string{"overlay", "ext4", "nosuch"})
		if err != nil || !slices.Equal(res.missing, []string{"ext4", "nosuch"}) {
			t.Errorf("res %+v err %v", res, err)
		}
	})
	t.Run("parent with two versions", func(t *testing.T) {
		root := t.TempDir()
		buildModuleTree(t, root, "6.1.0-1-amd64", virtioTree[:1])
		buildModuleTree(t, root, "6.1.0-2-amd64", virtioTree[:1])
		_, err := openModuleTree(filepath.Join(root, "lib", "modules"))
		if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "6.1.0-1-amd64, 6.1.0-2-amd64") {
			t.Errorf("err = %v", err)
		}
	})
}

func TestImportFilesGeneratesInitramfs(t *testing.T) {
	src := t.TempDir()
	kernel := writeFile(t, filepath.Join(src, "vmlinuz"), fakeBzImage(lz4Legacy(t, fakeVmlinux(testVersion, true, 0)), testVersion))
	buildModuleTree(t, src, testVersion, virtioTree, "kernel/fs/ext4/ext4.ko")

	stage := filepath.Join(t.TempDir(), "stage")
	// The parent of the version directory is accepted too.
	info, err := ImportFiles(context.Background(), stage, kernel, "", filepath.Join(src, "lib", "modules"))
	if err != nil {
		t.Fatal(err)
	}
	if !info.HasInitrd || info.Version != testVersion || len(info.Modules) != 14 || info.Modules[0] != "virtio_ring" {
		t.Errorf("info = %+v", info)
	}
	if got := joinNames(listDir(t, stage)); got != "bzImage,initrd.img,vmlinux" {
		t.Errorf("stage holds %s", got)
	}

	names, entries := readInitrd(t, filepath.Join(stage, InitrdFile))
	if !slices.IsSorted(names) {
		t.Errorf("entries not in name order: %v", names)
	}
	md := "lib/modules/" + testVersion
	for _, n := range []string{"dev", "dev/console", "etc", "etc/banger", "etc/banger/modules.load", "lib", "lib/modules", md,
		md + "/kernel", md + "/kernel/drivers", md + "/kernel/drivers/virtio", md + "/kernel/drivers/virtio/virtio.ko",
		md + "/kernel/drivers/block/virtio_blk.ko", md + "/kernel/drivers/net/net_failover.ko", md + "/modules.dep", md + "/modules.builtin"} {
		if _, ok := entries[n]; !ok {
			t.Errorf("initramfs lacks %s", n)
		}
	}
	for _, n := range names {
		e := entries[n]
		if e.hdr.UID != 0 || e.hdr.GID != 0 || e.hdr.MTime != 0 {
			t.Errorf("%s: owner %d:%d mtime %d", n, e.hdr.UID, e.hdr.GID, e.hdr.MTime)
		}
		if n == "init" || strings.Contains(n, "unrelated") || strings.Contains(n, "aesni") {
			t.Errorf("initramfs holds %s", n)
		}
		if strings.HasSuffix(n, ".ko") {
			if _, err := modinfo(e.data); err != nil {
				t.Errorf("%s: %v", n, err)
			}
		}
		for _, suf := range []string{".xz", ".zst", ".gz"} {
			if strings.HasSuffix(n, suf) {
				t.Errorf("%s stored compressed", n)
			}
		}
	}
	if c := entries["dev/console"].hdr; c.Mode != cpio.TypeChar|0o600 || c.RDevMajor != 5 || c.RDevMinor != 1 {
		t.Errorf("dev/console = %+v", c)
	}
	load := strings.Fields(string(entries[ModulesLoadPath].data))
	if len(load) != 14 || load[0] != "/"+md+"/kernel/drivers/virtio/virtio_ring.ko" || load[13] != "/"+md+"/kernel/drivers/input/evdev.ko" {
		t.Errorf("modules.load = %v", load)
	}
	for _, p := range load {
		if _, ok := entries[strings.TrimPrefix(p, "/")]; !ok {
			t.Errorf("modules.load names %s, which is not in the archive", p)
		}
	}

	t.Run("reproducible", func(t *testing.T) {
		// Same modules elsewhere, with other mtimes: same bytes.
		src2 := t.TempDir()
		buildModuleTree(t, src2, testVersion, virtioTree, "kernel/fs/ext4/ext4.ko")
		stage2 := t.TempDir()
		if _, err := ImportFiles(context.Background(), stage2, kernel, "", filepath.Join(src2, "lib", "modules", testVersion)); err != nil {
			t.Fatal(err)
		}
		a, _ := os.ReadFile(filepath.Join(stage, InitrdFile))
		b, _ := os.ReadFile(filepath.Join(stage2, InitrdFile))
		if !bytes.Equal(a, b) {
			t.Error("initramfs differs between two imports of the same modules")
		}
	})
	t.Run("version mismatch", func(t *testing.T) {
		other := t.TempDir()
		buildModuleTree(t, other, "5.10.0-1-amd64", virtioTree)
		_, err := ImportFiles(context.Background(), t.TempDir(), kernel, "", filepath.Join(other, "lib", "modules"))
		if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "modules are for kernel 5.10.0-1-amd64 but the image is "+testVersion) {
			t.Errorf("err = %v", err)
		}
	})
}

func TestImportFilesAllBuiltin(t *testing.T) {
	src := t.TempDir()
	kernel := writeFile(t, filepath.Join(src, "vmlinux"), fakeVmlinux(testVersion, true, 0))
	dir := buildModuleTree(t, src, testVersion, []testModule{{rel: "kernel/fs/unrelated.ko"}},
		"kernel/drivers/virtio/virtio_mmio.ko", "kernel/drivers/block/virtio_blk.ko", "kernel/fs/ext4/ext4.ko")
	stage := t.TempDir()
	info, err := ImportFiles(context.Background(), stage, kernel, "", dir)
	if err != nil {
		t.Fatal(err)
	}
	if info.HasInitrd || len(info.Modules) != 0 || joinNames(listDir(t, stage)) != "vmlinux" {
		t.Errorf("info %+v, stage %v", info, listDir(t, stage))
	}
	want := []string{"virtio_net", "virtio_console", "vsock", "vmw_vsock_virtio_transport", "overlay", "button", "evdev"}
	if !slices.Equal(info.MissingModules, want) {
		t.Errorf("missing %v, want %v", info.MissingModules, want)
	}
}

func TestStripSignature(t *testing.T) {
	body := []byte("\x7fELF module body")
	signed := func(signerLen, keyIDLen byte, sig []byte) []byte {
		b := append([]byte(nil), body...)
		b = append(b, bytes.Repeat([]byte("s"), int(signerLen)+int(keyIDLen))...)
		b = append(b, sig...)
		ms := []byte{0, 0, 2, signerLen, keyIDLen, 0, 0, 0}
		ms = binary.BigEndian.AppendUint32(ms, uint32(len(sig)))
		return append(append(b, ms...), sigMagic...)
	}
	for _, tc := range []struct {
		name string
		in   []byte
		want []byte
	}{
		{"pkcs7", signed(0, 0, bytes.Repeat([]byte{0x30}, 700)), body},
		{"signer and key id", signed(5, 3, []byte("sig")), body},
		{"unsigned", body, body},
		{"magic only", []byte(sigMagic), []byte(sigMagic)},
		{"length past the start", append(append(body[:2:2], 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff), sigMagic...), nil},
		{"zero length", append(append(append([]byte(nil), body...), 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0), sigMagic...), nil},
	} {
		got := stripSignature(tc.in)
		want := tc.want
		if want == nil {
			want = tc.in // not a valid trailer: left alone
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s: got %q, want %q", tc.name, got, want)
		}
	}
}

func TestSigsForced(t *testing.T) {
	for _, tc := range []struct {
		name, config string
		layout       string // where lib/modules is
		strip        bool
	}{
		{"not forced", "CONFIG_MODULE_SIG=y\n# CONFIG_MODULE_SIG_FORCE is not set\n", "lib/modules", true},
		{"forced", "CONFIG_MODULE_SIG=y\nCONFIG_MODULE_SIG_FORCE=y\n", "lib/modules", false},
		{"usr/lib", "CONFIG_MODULE_SIG=y\n", "usr/lib/modules", true},
		{"no config", "", "lib/modules", false},
	} {
		root := t.TempDir()
		dir := filepath.Join(root, tc.layout, "6.1.0-test")
		os.MkdirAll(filepath.Join(dir, "kernel"), 0o755)
		if tc.config != "" {
			os.MkdirAll(filepath.Join(root, "boot"), 0o755)
			os.WriteFile(filepath.Join(root, "boot", "config-6.1.0-test"), []byte(tc.config), 0o644)
		}
		tree, err := openModuleTree(dir)
		if err != nil {
			t.Fatal(err)
		}
		if tree.stripSigs != tc.strip {
			t.Errorf("%s: stripSigs %v, want %v", tc.name, tree.stripSigs, tc.strip)
		}
	}
}
