package kernel

import (
	"bytes"
	"compress/bzip2"
	"compress/gzip"
	"crypto/sha256"
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/bangervm/banger/errdefs"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
	"github.com/ulikunitz/xz/lzma"
)

// MaxKernelSize bounds a kernel image, compressed or not, and the vmlinux
// extracted from a bzImage. Distribution kernels are 10–60 MiB; anything
// this large is not a kernel.
const MaxKernelSize = 512 << 20

// x86 boot protocol offsets (Documentation/arch/x86/boot.rst).
const (
	bzSetupSects    = 0x1f1
	bzBootFlag      = 0x1fe
	bzHeaderMagic   = 0x202
	bzVersion       = 0x206
	bzKernelVersion = 0x20e
	bzPayloadOffset = 0x248
	bzPayloadLength = 0x24c
	bzMinHeader     = 0x250
	// Boot protocol 2.08 added payload_offset and payload_length.
	bzMinProtocol = 0x0208
)

// xenElfnotePhys32Entry is XEN_ELFNOTE_PHYS32_ENTRY: the 32-bit PVH entry
// point. A vmlinux carrying it can be booted directly by Firecracker and by
// QEMU's microvm, skipping the real-mode setup and decompression.
const xenElfnotePhys32Entry = 18

// accepted is what error messages tell the user to provide.
const accepted = "expected an x86-64 ELF vmlinux or an x86 bzImage (vmlinuz)"

// stagedImage describes the kernel written into a staging directory.
type stagedImage struct {
	format  string // FormatELF or FormatBzImage
	version string // from the bzImage header or the vmlinux banner; may be ""
	pvh     bool
	sha256  string // of the vmlinux
	size    int64  // of the vmlinux
}

// stageKernelFile reads the kernel image at path and writes VmlinuxFile (and
// BzImageFile for a bzImage) into stageDir. name is the path to show in
// errors: a scratch path means nothing to the user.
func stageKernelFile(stageDir, path, name string) (stagedImage, error) {
	data, err := readLimited(path, name, MaxKernelSize, "kernel image")
	if err != nil {
		return stagedImage{}, err
	}
	return stageKernel(stageDir, name, data)
}

// stageKernel does the work of stageKernelFile on an image already in memory;
// name is only used in messages.
func stageKernel(stageDir, name string, data []byte) (stagedImage, error) {
	switch {
	case bytes.HasPrefix(data, []byte(elf.ELFMAG)):
		img, err := inspectVmlinux(data)
		if err != nil {
			return stagedImage{}, fmt.Errorf("kernel image %s: %w", name, err)
		}
		img.format = FormatELF
		if err := writeNewFile(filepath.Join(stageDir, VmlinuxFile), data); err != nil {
			return stagedImage{}, err
		}
		return img, nil
	case isBzImage(data):
		vmlinux, hdrVersion, err := extractVmlinux(data)
		if err != nil {
			return stagedImage{}, fmt.Errorf("bzImage %s: %w", name, err)
		}
		img, err := inspectVmlinux(vmlinux)
		if err != nil {
			return stagedImage{}, fmt.Errorf("bzImage %s: payload: %w", name, err)
		}
		img.format = FormatBzImage
		if hdrVersion != "" {
			img.version = hdrVersion
		}
		if err := writeNewFile(filepath.Join(stageDir, VmlinuxFile), vmlinux); err != nil {
			return stagedImage{}, err
		}
		if err := writeNewFile(filepath.Join(stageDir, BzImageFile), data); err != nil {
			return stagedImage{}, err
		}
		return img, nil
	default:
		return stagedImage{}, fmt.Errorf("kernel image %s is %s; %s: %w", name, describe(data), accepted, errdefs.ErrInvalidArgument)
	}
}

func isBzImage(data []byte) bool {
	return len(data) >= bzHeaderMagic+4 && string(data[bzHeaderMagic:bzHeaderMagic+4]) == "HdrS"
}

// inspectVmlinux checks that data is an x86-64 kernel ELF and reads what
// Info reports about it.
func inspectVmlinux(data []byte) (stagedImage, error) {
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return stagedImage{}, fmt.Errorf("not a valid ELF file (%v); %s: %w", err, accepted, errdefs.ErrInvalidArgument)
	}
	if f.Class != elf.ELFCLASS64 || f.Machine != elf.EM_X86_64 || (f.Type != elf.ET_EXEC && f.Type != elf.ET_DYN) {
		return stagedImage{}, fmt.Errorf("ELF %s %s %s is not a kernel; %s: %w", f.Class, f.Machine, f.Type, accepted, errdefs.ErrInvalidArgument)
	}
	pvh, err := hasPVHNote(f)
	if err != nil {
		return stagedImage{}, fmt.Errorf("read ELF notes: %w: %w", err, errdefs.ErrInvalidArgument)
	}
	sum := sha256.Sum256(data)
	return stagedImage{
		version: bannerVersion(data),
		pvh:     pvh,
		sha256:  hex.EncodeToString(sum[:]),
		size:    int64(len(data)),
	}, nil
}

// hasPVHNote looks for XEN_ELFNOTE_PHYS32_ENTRY in the note segments, or in
// note sections when the file has no note segment.
func hasPVHNote(f *elf.File) (bool, error) {
	var blobs [][]byte
	for _, p := range f.Progs {
		if p.Type != elf.PT_NOTE {
			continue
		}
		b, err := io.ReadAll(io.LimitReader(p.Open(), 1<<20))
		if err != nil {
			return false, err
		}
		blobs = append(blobs, b)
	}
	if len(blobs) == 0 {
		for _, s := range f.Sections {
			if s.Type != elf.SHT_NOTE {
				continue
			}
			b, err := io.ReadAll(io.LimitReader(s.Open(), 1<<20))
			if err != nil {
				return false, err
			}
			blobs = append(blobs, b)
		}
	}
	for _, b := range blobs {
		for len(b) >= 12 {
			namesz := uint64(f.ByteOrder.Uint32(b[0:]))
			descsz := uint64(f.ByteOrder.Uint32(b[4:]))
			typ := f.ByteOrder.Uint32(b[8:])
			b = b[12:]
			descEnd := align4(namesz) + align4(descsz)
			if descEnd > uint64(len(b)) {
				break
			}
			name := string(bytes.TrimRight(b[:namesz], "\x00"))
			if name == "Xen" && typ == xenElfnotePhys32Entry {
				return true, nil
			}
			b = b[descEnd:]
		}
	}
	return false, nil
}

func align4(n uint64) uint64 { return (n + 3) &^ 3 }

// bannerVersion finds linux_banner ("Linux version 6.1.0-28-cloud-amd64 (...")
// in a vmlinux and returns the release. Format strings such as
// "Linux version %s" are skipped by requiring a digit.
func bannerVersion(data []byte) string {
	const prefix = "Linux version "
	for off := 0; ; {
		i := bytes.Index(data[off:], []byte(prefix))
		if i < 0 {
			return ""
		}
		start := off + i + len(prefix)
		off = start
		if start >= len(data) || data[start] < '0' || data[start] > '9' {
			continue
		}
		if v := releaseToken(data[start:]); v != "" {
			return v
		}
	}
}

// releaseToken returns the leading kernel release in b: printable,
// non-space bytes ended by a space or NUL, at most 64 of them.
func releaseToken(b []byte) string {
	for i := 0; i < len(b) && i <= 64; i++ {
		c := b[i]
		if c == ' ' || c == 0 {
			if i == 0 {
				return ""
			}
			return string(b[:i])
		}
		if c < 0x21 || c > 0x7e {
			return ""
		}
	}
	return ""
}

// extractVmlinux returns the ELF vmlinux inside a bzImage and the release from
// the setup header's kernel_version string.
func extractVmlinux(data []byte) ([]byte, string, error) {
	if len(data) < bzMinHeader {
		return nil, "", fmt.Errorf("truncated: %d bytes is shorter than the setup header: %w", len(data), errdefs.ErrInvalidArgument)
	}
	le := binary.LittleEndian
	if proto := le.Uint16(data[bzVersion:]); proto < bzMinProtocol {
		return nil, "", fmt.Errorf("boot protocol %d.%02d is older than 2.08 and has no payload fields: %w",
			proto>>8, proto&0xff, errdefs.ErrInvalidArgument)
	}
	setupSects := int64(data[bzSetupSects])
	if setupSects == 0 {
		setupSects = 4 // the boot protocol's meaning of 0
	}
	pmStart := (setupSects + 1) * 512
	payloadStart := pmStart + int64(le.Uint32(data[bzPayloadOffset:]))
	payloadLen := int64(le.Uint32(data[bzPayloadLength:]))
	if payloadLen < 8 || payloadStart+payloadLen > int64(len(data)) {
		return nil, "", fmt.Errorf("truncated or corrupt: payload [%d, +%d) lies outside the %d-byte file: %w",
			payloadStart, payloadLen, len(data), errdefs.ErrInvalidArgument)
	}
	payload := data[payloadStart : payloadStart+payloadLen]

	var version string
	if p := int64(le.Uint16(data[bzKernelVersion:])); p != 0 && p+0x200 < int64(len(data)) {
		version = releaseToken(data[p+0x200:])
	}

	// The kernel build appends the uncompressed size to every compressed
	// payload (for gzip it is the ISIZE trailer field): use it to bound
	// the output and to check it.
	want := int64(le.Uint32(payload[len(payload)-4:]))
	if want > MaxKernelSize {
		return nil, "", fmt.Errorf("payload claims %d uncompressed bytes, more than the %d allowed: %w", want, int64(MaxKernelSize), errdefs.ErrInvalidArgument)
	}
	out := &limitBuffer{limit: MaxKernelSize}
	// Preallocate for a plausible ratio only: the size field is untrusted.
	out.buf.Grow(int(min(want, 16*int64(len(payload)))))
	method, err := decompressPayload(payload, out)
	if err != nil {
		return nil, "", fmt.Errorf("decompress %s payload: %w: %w", method, err, errdefs.ErrInvalidArgument)
	}
	if int64(out.buf.Len()) != want {
		return nil, "", fmt.Errorf("%s payload decompressed to %d bytes, header says %d: %w", method, out.buf.Len(), want, errdefs.ErrInvalidArgument)
	}
	return out.buf.Bytes(), version, nil
}

// decompressPayload picks the decompressor by magic and returns its name.
// All formats but gzip carry the appended size after the stream, which the
// decoders must not see.
func decompressPayload(payload []byte, w io.Writer) (string, error) {
	body := payload[:len(payload)-4]
	switch {
	case bytes.HasPrefix(payload, []byte{0x02, 0x21, 0x4c, 0x18}):
		_, err := decodeLZ4Legacy(payload, w, MaxKernelSize)
		return "lz4", err
	case bytes.HasPrefix(payload, []byte{0x1f, 0x8b}):
		zr, err := gzip.NewReader(bytes.NewReader(payload))
		if err != nil {
			return "gzip", err
		}
		zr.Multistream(false)
		_, err = io.Copy(w, zr)
		return "gzip", err
	case bytes.HasPrefix(payload, []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}):
		xr, err := xz.ReaderConfig{SingleStream: true}.NewReader(bytes.NewReader(body))
		if err != nil {
			return "xz", err
		}
		_, err = io.Copy(w, xr)
		return "xz", err
	case bytes.HasPrefix(payload, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		zr, err := zstd.NewReader(bytes.NewReader(body), zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(1<<30))
		if err != nil {
			return "zstd", err
		}
		defer zr.Close()
		_, err = io.Copy(w, zr)
		return "zstd", err
	case bytes.HasPrefix(payload, []byte("BZh")):
		_, err := io.Copy(w, bzip2.NewReader(bytes.NewReader(body)))
		return "bzip2", err
	case bytes.HasPrefix(payload, []byte{0x5d, 0x00, 0x00}):
		lr, err := lzma.NewReader(bytes.NewReader(body))
		if err != nil {
			return "lzma", err
		}
		_, err = io.Copy(w, lr)
		return "lzma", err
	case bytes.HasPrefix(payload, []byte{0x89, 'L', 'Z', 'O'}):
		return "lzo", errors.New("LZO-compressed kernels are not supported; use the vmlinux ELF or a kernel built with another compression")
	default:
		return "unknown", fmt.Errorf("unrecognized compression (payload starts % x)", payload[:min(8, len(payload))])
	}
}

// limitBuffer is a bytes.Buffer that refuses to grow past limit, so a
// decompression bomb fails instead of exhausting memory.
type limitBuffer struct {
	buf   bytes.Buffer
	limit int64
}

func (l *limitBuffer) Write(p []byte) (int, error) {
	if int64(l.buf.Len())+int64(len(p)) > l.limit {
		return 0, fmt.Errorf("output exceeds %d bytes", l.limit)
	}
	return l.buf.Write(p)
}

// describe says in a few words what data looks like, for errors about
// unusable input.
func describe(data []byte) string {
	switch {
	case len(data) == 0:
		return "empty"
	case bytes.HasPrefix(data, []byte{0x1f, 0x8b}):
		return "gzip-compressed data"
	case bytes.HasPrefix(data, []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}):
		return "xz-compressed data"
	case bytes.HasPrefix(data, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return "zstd-compressed data"
	case bytes.HasPrefix(data, []byte("070701")), bytes.HasPrefix(data, []byte("070702")):
		return "a cpio archive (an initramfs?)"
	case bytes.HasPrefix(data, []byte("!<arch>\n")):
		return "an ar archive (a .deb? use kernel import --deb)"
	case len(data) >= 0x40 && string(data[0x38:0x3c]) == "ARM\x64":
		return "an arm64 Image"
	case len(data) > 262 && string(data[257:262]) == "ustar":
		return "a tar archive"
	case isText(data):
		return "a text file"
	default:
		return fmt.Sprintf("unrecognized data (starts % x)", data[:min(8, len(data))])
	}
}

func isText(data []byte) bool {
	head := data[:min(len(data), 4096)]
	for _, c := range head {
		if c < 0x20 && c != '\n' && c != '\r' && c != '\t' {
			return false
		}
	}
	return true
}

// readLimited reads a whole file of at most limit bytes; name and what
// describe it in errors.
func readLimited(path, name string, limit int64, what string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", what, errdefs.FromFS(err))
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat %s: %w", what, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s %s is not a regular file: %w", what, name, errdefs.ErrInvalidArgument)
	}
	if st.Size() > limit {
		return nil, fmt.Errorf("%s %s is %d bytes, more than the %d allowed: %w", what, name, st.Size(), limit, errdefs.ErrInvalidArgument)
	}
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read %s %s: %w", what, name, err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s %s grew past %d bytes while being read: %w", what, name, limit, errdefs.ErrInvalidArgument)
	}
	return data, nil
}

// writeNewFile creates path, which must not exist, with data. A partial file
// is removed on error.
func writeNewFile(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
