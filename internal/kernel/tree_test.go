package kernel

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bangervm/banger/errdefs"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// moduleEntries returns tar entries for virtioTree under prefix.
func moduleEntries(t testing.TB, prefix, version string) []tarEntry {
	dir := buildModuleTree(t, t.TempDir(), version, virtioTree, "kernel/fs/ext4/ext4.ko")
	var out []tarEntry
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		data, _ := os.ReadFile(p)
		out = append(out, tarEntry{name: prefix + version + "/" + filepath.ToSlash(rel), data: data})
		return nil
	})
	return out
}

func TestImportTar(t *testing.T) {
	vmlinux := fakeVmlinux(testVersion, true, 0)
	bz := fakeBzImage(lz4Legacy(t, vmlinux), testVersion)
	initrd := gzipped(t, []byte("070701 pretend"))
	mods := moduleEntries(t, "usr/lib/modules/", testVersion)

	tests := []struct {
		name       string
		entries    []tarEntry
		wantSource string
		wantFormat string
		wantInitrd bool
		wantMods   int
		wantErr    string
	}{
		{
			name: "ignite style: vmlinux symlink, merged usr modules",
			entries: append([]tarEntry{
				{name: "./", typ: tar.TypeDir},
				{name: "lib", typ: tar.TypeSymlink, link: "usr/lib"},
				{name: "./boot/", typ: tar.TypeDir},
				{name: "./boot/vmlinux-" + testVersion, data: vmlinux},
				{name: "./boot/vmlinux", typ: tar.TypeSymlink, link: "vmlinux-" + testVersion},
				{name: "boot/config-" + testVersion, data: []byte("CONFIG_PVH=y\n")},
				{name: "etc/passwd", data: []byte("root:x:0:0::/root:/bin/sh\n")},
			}, mods...),
			wantSource: "tar:/boot/vmlinux-" + testVersion, wantFormat: FormatELF, wantInitrd: true, wantMods: 14,
		},
		{
			name: "vmlinux preferred over vmlinuz; shipped initrd ignored with modules",
			entries: append([]tarEntry{
				{name: "boot/vmlinuz-" + testVersion, data: bz},
				{name: "boot/vmlinux-" + testVersion, data: vmlinux},
				{name: "boot/initrd.img-" + testVersion, data: initrd},
			}, moduleEntries(t, "lib/modules/", testVersion)...),
			wantSource: "tar:/boot/vmlinux-" + testVersion, wantFormat: FormatELF, wantInitrd: true, wantMods: 14,
		},
		{
			name: "debian style root symlinks, initrd copied",
			entries: []tarEntry{
				{name: "vmlinuz", typ: tar.TypeSymlink, link: "boot/vmlinuz-" + testVersion},
				{name: "vmlinuz.old", typ: tar.TypeSymlink, link: "boot/vmlinuz-5.10"},
				{name: "initrd.img", typ: tar.TypeSymlink, link: "/boot/initrd.img-" + testVersion},
				{name: "boot/vmlinuz-" + testVersion, data: bz},
				{name: "boot/initrd.img-" + testVersion, data: initrd},
			},
			wantSource: "tar:/boot/vmlinuz-" + testVersion, wantFormat: FormatBzImage, wantInitrd: true,
		},
		{
			name: "hard link to the kernel",
			entries: []tarEntry{
				{name: "boot/vmlinuz-" + testVersion, data: bz},
				{name: "boot/bzImage", typ: tar.TypeLink, link: "boot/vmlinuz-" + testVersion},
				{name: "boot/bzImage-old", typ: tar.TypeLink, link: "boot/not-wanted"},
			},
			wantSource: "tar:/boot/vmlinuz-" + testVersion, wantFormat: FormatBzImage,
		},
		{
			name:    "no kernel",
			entries: []tarEntry{{name: "etc/hostname", data: []byte("x\n")}, {name: "boot/vmlinux", typ: tar.TypeSymlink, link: "/nowhere"}},
			wantErr: "no kernel found",
		},
		{
			name: "two kernels",
			entries: []tarEntry{
				{name: "boot/vmlinuz-6.1.0-1-amd64", data: bz},
				{name: "boot/vmlinuz-6.1.0-2-amd64", data: bz},
			},
			wantErr: "several kernels found (boot/vmlinuz-6.1.0-1-amd64, boot/vmlinuz-6.1.0-2-amd64)",
		},
		{
			name:    "escaping entry",
			entries: []tarEntry{{name: "boot/../../etc/vmlinux", data: vmlinux}},
			wantErr: "escapes the tree",
		},
		{
			name:    "kernel that is not one",
			entries: []tarEntry{{name: "boot/vmlinuz", data: []byte("not a kernel\n")}},
			wantErr: "is a text file",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stage := filepath.Join(t.TempDir(), "stage")
			info, err := ImportTar(context.Background(), stage, bytes.NewReader(buildTar(t, tt.entries)))
			if tt.wantErr != "" {
				if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				if left := listDir(t, stage); len(left) != 0 {
					t.Errorf("stage holds %v after the error", left)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if info.Source != tt.wantSource || info.Format != tt.wantFormat || info.HasInitrd != tt.wantInitrd ||
				len(info.Modules) != tt.wantMods || info.Version != testVersion {
				t.Errorf("info = %+v", info)
			}
			for _, n := range listDir(t, stage) {
				if strings.HasPrefix(n, ".") {
					t.Errorf("scratch %s left in the stage", n)
				}
			}
		})
	}
}

// buildDeb assembles a .deb: an ar archive with debian-binary, control and
// a data.tar compressed as named.
func buildDeb(t testing.TB, dataName string, data []byte) []byte {
	t.Helper()
	var comp []byte
	switch dataName {
	case "data.tar.gz":
		comp = gzipped(t, data)
	case "data.tar.xz":
		var b bytes.Buffer
		w, _ := xz.NewWriter(&b)
		w.Write(data)
		w.Close()
		comp = b.Bytes()
	case "data.tar.zst":
		enc, _ := zstd.NewWriter(nil)
		comp = enc.EncodeAll(data, nil)
	default:
		comp = data
	}
	var b bytes.Buffer
	b.WriteString("!<arch>\n")
	member := func(name string, d []byte) {
		fmt.Fprintf(&b, "%-16s%-12d%-6d%-6d%-8s%-10d`\n", name, 0, 0, 0, "100644", len(d))
		b.Write(d)
		if len(d)%2 == 1 {
			b.WriteByte('\n')
		}
	}
	member("debian-binary", []byte("2.0\n"))
	var ctl bytes.Buffer
	zw := gzip.NewWriter(&ctl)
	zw.Write(buildTar(t, []tarEntry{{name: "./control", data: []byte("Package: linux-image-test\n")}}))
	zw.Close()
	member("control.tar.gz", append(ctl.Bytes(), 0)) // odd length exercises the padding
	member(dataName, comp)
	return b.Bytes()
}

func TestImportDeb(t *testing.T) {
	vmlinux := fakeVmlinux(testVersion, true, 0)
	entries := append([]tarEntry{
		{name: "./boot/", typ: tar.TypeDir},
		{name: "./boot/vmlinuz-" + testVersion, data: fakeBzImage(lz4Legacy(t, vmlinux), testVersion)},
		{name: "./boot/System.map-" + testVersion, data: []byte("ffffffff81000000 T _text\n")},
	}, moduleEntries(t, "./lib/modules/", testVersion)...)
	data := buildTar(t, entries)
	for _, name := range []string{"data.tar.xz", "data.tar.zst", "data.tar.gz", "data.tar"} {
		t.Run(name, func(t *testing.T) {
			deb := writeFile(t, filepath.Join(t.TempDir(), "k.deb"), buildDeb(t, name, data))
			stage := t.TempDir()
			info, err := ImportDeb(context.Background(), stage, deb)
			if err != nil {
				t.Fatal(err)
			}
			if info.Format != FormatBzImage || !info.PVH || info.Version != testVersion || len(info.Modules) != 14 ||
				info.Source != deb+":/boot/vmlinuz-"+testVersion {
				t.Errorf("info = %+v", info)
			}
			if got := joinNames(listDir(t, stage)); got != "bzImage,initrd.img,vmlinux" {
				t.Errorf("stage holds %s", got)
			}
		})
	}

	bad := []struct {
		name, want string
		data       []byte
	}{
		{"not ar", "not a .deb", []byte("hello")},
		{"no data member", "no data.tar member", []byte("!<arch>\n")},
		{"bzip2 data", "unsupported member data.tar.bz2", buildDeb(t, "data.tar.bz2", data)},
		{"no kernel inside", "no kernel found", buildDeb(t, "data.tar.gz", buildTar(t, []tarEntry{{name: "usr/share/doc/x", data: []byte("x")}}))},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			deb := writeFile(t, filepath.Join(t.TempDir(), "k.deb"), tt.data)
			_, err := ImportDeb(context.Background(), t.TempDir(), deb)
			if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want %q", err, tt.want)
			}
		})
	}
}
