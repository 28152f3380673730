package firecracker

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"

	"github.com/bangervm/banger/errdefs"
)

// CheckKernel accepts only an x86-64 ELF vmlinux, which Firecracker boots
// (PVH when the kernel has the entry note, else the Linux boot protocol).
// A bzImage is refused before anything starts: older Firecracker releases
// cannot boot one.
func CheckKernel(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("kernel: %w", err)
	}
	defer f.Close()
	var hdr [0x210]byte
	n, err := io.ReadFull(f, hdr[:])
	if err != nil && err != io.ErrUnexpectedEOF {
		return fmt.Errorf("kernel %s: %w", path, err)
	}
	h := hdr[:n]
	if bytes.HasPrefix(h, []byte("\x7fELF")) {
		if len(h) < 20 || h[4] != 2 || binary.LittleEndian.Uint16(h[18:20]) != 62 {
			return fmt.Errorf("kernel %s is an ELF file but not x86-64 (64-bit, EM_X86_64): %w", path, errdefs.ErrInvalidArgument)
		}
		return nil
	}
	if len(h) >= 0x206 && string(h[0x202:0x206]) == "HdrS" {
		return fmt.Errorf("kernel %s is a bzImage; the Firecracker engine needs the uncompressed ELF vmlinux (build it with `make vmlinux`, or extract it with the kernel's scripts/extract-vmlinux), or use the QEMU engine: %w", path, errdefs.ErrInvalidArgument)
	}
	return fmt.Errorf("kernel %s is not an ELF vmlinux: %w", path, errdefs.ErrInvalidArgument)
}
