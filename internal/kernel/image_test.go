package kernel

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
	"github.com/ulikunitz/xz/lzma"

	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/testutil"
)

const testVersion = "6.1.0-99-test-amd64"

func TestImportKernelImage(t *testing.T) {
	small := fakeVmlinux(testVersion, true, 1000)
	// Larger than one 8 MiB legacy block, so the frame reader loops.
	big := fakeVmlinux(testVersion, true, 9<<20)
	noPVH := fakeVmlinux(testVersion, false, 0)

	xzData := func(d []byte) []byte {
		var b bytes.Buffer
		w, err := xz.NewWriter(&b)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(d)
		w.Close()
		return sizeAppended(b.Bytes(), len(d))
	}
	zstdData := func(d []byte) []byte {
		enc, _ := zstd.NewWriter(nil)
		return sizeAppended(enc.EncodeAll(d, nil), len(d))
	}
	lzmaData := func(d []byte) []byte {
		var b bytes.Buffer
		w, err := lzma.WriterConfig{SizeInHeader: false, EOSMarker: true}.NewWriter(&b)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(d)
		w.Close()
		return sizeAppended(b.Bytes(), len(d))
	}
	bzip2Data := func(d []byte) []byte {
		testutil.RequireTool(t, "bzip2", "bzip2")
		cmd := exec.Command("bzip2", "-9c")
		cmd.Stdin = bytes.NewReader(d)
		out, err := cmd.Output()
		if err != nil {
			t.Fatal(err)
		}
		return sizeAppended(out, len(d))
	}

	tests := []struct {
		name    string
		image   func() []byte
		vmlinux []byte
		format  string
		pvh     bool
	}{
		{"elf with pvh", func() []byte { return small }, small, FormatELF, true},
		{"elf without pvh", func() []byte { return noPVH }, noPVH, FormatELF, false},
		{"bzimage lz4", func() []byte { return fakeBzImage(lz4Legacy(t, small), testVersion) }, small, FormatBzImage, true},
		{"bzimage lz4 multi-block", func() []byte { return fakeBzImage(lz4Legacy(t, big), testVersion) }, big, FormatBzImage, true},
		{"bzimage gzip", func() []byte { return fakeBzImage(gzipped(t, small), testVersion) }, small, FormatBzImage, true},
		{"bzimage xz", func() []byte { return fakeBzImage(xzData(small), testVersion) }, small, FormatBzImage, true},
		{"bzimage zstd", func() []byte { return fakeBzImage(zstdData(small), testVersion) }, small, FormatBzImage, true},
		{"bzimage lzma", func() []byte { return fakeBzImage(lzmaData(small), testVersion) }, small, FormatBzImage, true},
		{"bzimage bzip2", func() []byte { return fakeBzImage(bzip2Data(small), testVersion) }, small, FormatBzImage, true},
		{"bzimage without pvh", func() []byte { return fakeBzImage(lz4Legacy(t, noPVH), testVersion) }, noPVH, FormatBzImage, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			image := tt.image()
			src := writeFile(t, filepath.Join(t.TempDir(), "kernel"), image)
			stage := filepath.Join(t.TempDir(), "stage")
			info, err := ImportFiles(context.Background(), stage, src, "", "")
			if err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(filepath.Join(stage, VmlinuxFile))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tt.vmlinux) {
				t.Errorf("vmlinux differs from the original ELF (%d vs %d bytes)", len(got), len(tt.vmlinux))
			}
			sum := sha256.Sum256(tt.vmlinux)
			want := Info{
				Version: testVersion, Format: tt.format, PVH: tt.pvh, Source: src,
				VmlinuxSHA256: hex.EncodeToString(sum[:]), Size: int64(len(tt.vmlinux)),
			}
			if info.Version != want.Version || info.Format != want.Format || info.PVH != want.PVH ||
				info.Source != want.Source || info.VmlinuxSHA256 != want.VmlinuxSHA256 || info.Size != want.Size || info.HasInitrd {
				t.Errorf("info = %+v, want %+v", info, want)
			}
			wantFiles := "vmlinux"
			if tt.format == FormatBzImage {
				wantFiles = "bzImage,vmlinux"
				bz, _ := os.ReadFile(filepath.Join(stage, BzImageFile))
				if !bytes.Equal(bz, image) {
					t.Error("staged bzImage differs from the source")
				}
			}
			if got := joinNames(listDir(t, stage)); got != wantFiles {
				t.Errorf("stage holds %s, want %s", got, wantFiles)
			}
		})
	}
}

func TestImportKernelImageRejects(t *testing.T) {
	small := fakeVmlinux(testVersion, true, 1000)
	good := fakeBzImage(lz4Legacy(t, small), testVersion)
	random := make([]byte, 64<<10)
	rand.Read(random)

	// Flip bytes inside the first block's data, leaving the frame intact.
	payload := lz4Legacy(t, small)
	corrupt := append([]byte{}, good...)
	for i := 0x800 + 300 + 12; i < 0x800+300+len(payload)-8; i++ {
		corrupt[i] ^= 0x5a
	}
	wrongSize := fakeBzImage(sizeAppended(lz4Legacy(t, small)[:len(lz4Legacy(t, small))-4], len(small)+1), testVersion)
	oldProto := append([]byte{}, good...)
	oldProto[bzVersion], oldProto[bzVersion+1] = 0x04, 0x02
	arm := buildELF(elf.ET_EXEC, elf.EM_AARCH64, nil, "")
	notKernel := fakeBzImage(lz4Legacy(t, []byte("just some bytes that are not an ELF file at all")), testVersion)
	bomb := fakeBzImage(sizeAppended([]byte{0x02, 0x21, 0x4c, 0x18, 1, 0, 0, 0, 0}, MaxKernelSize+1), testVersion)

	tests := []struct {
		name  string
		data  []byte
		class func(error) bool
		want  string
	}{
		{"empty", nil, errdefs.IsInvalidArgument, "is empty"},
		{"random bytes", random, errdefs.IsInvalidArgument, "unrecognized data"},
		{"text file", []byte("#!/bin/sh\necho this is not a kernel\n"), errdefs.IsInvalidArgument, "a text file"},
		{"gzip", gzipped(t, small), errdefs.IsInvalidArgument, "gzip-compressed data"},
		{"cpio", []byte("070701000000000000"), errdefs.IsInvalidArgument, "cpio archive"},
		{"arm64 elf", arm, errdefs.IsInvalidArgument, "EM_AARCH64"},
		{"kernel module", fakeKo("depends="), errdefs.IsInvalidArgument, "ET_REL"},
		{"truncated bzimage", good[:len(good)/2], errdefs.IsInvalidArgument, "truncated"},
		{"header only", good[:0x260], errdefs.IsInvalidArgument, "truncated"},
		{"corrupt payload", corrupt, errdefs.IsInvalidArgument, "decompress lz4 payload"},
		{"size mismatch", wrongSize, errdefs.IsInvalidArgument, "header says"},
		{"old boot protocol", oldProto, errdefs.IsInvalidArgument, "boot protocol 2.04"},
		{"payload not elf", notKernel, errdefs.IsInvalidArgument, "not a valid ELF"},
		{"unknown compression", fakeBzImage(sizeAppended([]byte("zzzzzzzzzzzz"), 12), testVersion), errdefs.IsInvalidArgument, "unrecognized compression"},
		{"lzo", fakeBzImage(sizeAppended([]byte{0x89, 'L', 'Z', 'O', 0, 0, 0, 0}, 100), testVersion), errdefs.IsInvalidArgument, "LZO"},
		{"decompression bomb", bomb, errdefs.IsInvalidArgument, "more than the"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := writeFile(t, filepath.Join(t.TempDir(), "kernel"), tt.data)
			stage := t.TempDir()
			_, err := ImportFiles(context.Background(), stage, src, "", "")
			if err == nil {
				t.Fatal("import succeeded")
			}
			if !tt.class(err) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q: want class match and %q in it", err, tt.want)
			}
			if left := listDir(t, stage); len(left) != 0 {
				t.Errorf("stage holds %v after the error", left)
			}
		})
	}
}

func TestImportKernelTooLarge(t *testing.T) {
	src := filepath.Join(t.TempDir(), "huge")
	f, err := os.Create(src)
	if err != nil {
		t.Fatal(err)
	}
	// Sparse: the size check must come before any read.
	if err := f.Truncate(MaxKernelSize + 1); err != nil {
		t.Fatal(err)
	}
	f.Close()
	_, err = ImportFiles(context.Background(), t.TempDir(), src, "", "")
	if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "more than the") {
		t.Fatalf("err = %v", err)
	}
}

func TestImportFilesArguments(t *testing.T) {
	dir := t.TempDir()
	kernel := writeFile(t, filepath.Join(dir, "vmlinux"), fakeVmlinux(testVersion, true, 0))
	initrd := writeFile(t, filepath.Join(dir, "initrd"), gzipped(t, []byte("070701")))
	text := writeFile(t, filepath.Join(dir, "notes.txt"), []byte("hello\n"))
	tests := []struct {
		name                   string
		kernel, initrd, modDir string
		class                  func(error) bool
		want                   string
	}{
		{"no kernel", "", "", "", errdefs.IsInvalidArgument, "no kernel image"},
		{"missing kernel", filepath.Join(dir, "nope"), "", "", errdefs.IsNotFound, "no such file"},
		{"initrd and modules", kernel, initrd, dir, errdefs.IsInvalidArgument, "not both"},
		{"initrd is text", kernel, text, "", errdefs.IsInvalidArgument, "initrd " + text + " is a text file"},
		{"kernel is a directory", dir, "", "", errdefs.IsInvalidArgument, "not a regular file"},
		{"modules dir without modules", kernel, "", dir, errdefs.IsInvalidArgument, "holds no kernel modules"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ImportFiles(context.Background(), t.TempDir(), tt.kernel, tt.initrd, tt.modDir)
			if err == nil || !tt.class(err) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want class and %q", err, tt.want)
			}
		})
	}

	t.Run("initrd copied", func(t *testing.T) {
		stage := t.TempDir()
		info, err := ImportFiles(context.Background(), stage, kernel, initrd, "")
		if err != nil {
			t.Fatal(err)
		}
		got, _ := os.ReadFile(filepath.Join(stage, InitrdFile))
		want, _ := os.ReadFile(initrd)
		if !info.HasInitrd || !bytes.Equal(got, want) || len(info.Modules) != 0 {
			t.Errorf("info %+v, initrd copied: %v", info, bytes.Equal(got, want))
		}
	})
}
