package kernel

import (
	"archive/tar"
	"bytes"
	"context"
	"testing"
)

// FuzzStageKernel feeds arbitrary images to the kernel sniffing, bzImage and
// ELF parsing: errors are fine, panics are not. Under coverage guidance the
// instrumented decompressors manage only a few execs per second; a binary
// from go test -c run with -test.fuzz explores far more.
func FuzzStageKernel(f *testing.F) {
	vmlinux := fakeVmlinux(testVersion, true, 0)
	f.Add(vmlinux)
	f.Add(fakeBzImage(lz4Legacy(f, vmlinux), testVersion))
	f.Add(fakeBzImage(gzipped(f, vmlinux), testVersion))
	f.Add([]byte("HdrS"))
	f.Fuzz(func(t *testing.T, data []byte) {
		stageKernel(t.TempDir(), "fuzz", data)
	})
}

// FuzzImportTar feeds arbitrary tar streams to ImportTar.
func FuzzImportTar(f *testing.F) {
	vmlinux := fakeVmlinux(testVersion, true, 0)
	f.Add(buildTar(f, []tarEntry{
		{name: "boot/vmlinux", data: vmlinux},
		{name: "vmlinuz", typ: tar.TypeSymlink, link: "boot/vmlinux"},
		{name: "lib/modules/" + testVersion + "/kernel/a.ko", data: fakeKo("depends=b")},
		{name: "lib/modules/" + testVersion + "/kernel/b.ko", data: fakeKo("depends=")},
	}))
	f.Fuzz(func(t *testing.T, data []byte) {
		ImportTar(context.Background(), t.TempDir(), bytes.NewReader(data))
	})
}
