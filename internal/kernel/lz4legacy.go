package kernel

import (
	"encoding/binary"
	"fmt"
	"io"

	"github.com/pierrec/lz4/v4"
)

const (
	lz4LegacyMagic = 0x184C2102
	// lz4LegacyBlock is the fixed uncompressed size of every block but the
	// last in the legacy format.
	lz4LegacyBlock = 8 << 20
)

// decodeLZ4Legacy decompresses the LZ4 "legacy" frame format that the kernel
// build uses for CONFIG_KERNEL_LZ4 (lz4 -l) into w, writing at most limit
// bytes. The format has no end marker and the kernel appends its 4-byte
// uncompressed size, so a block size larger than what remains ends the
// stream. A repeated magic starts a new legacy frame, as the kernel's own
// decompressor allows.
func decodeLZ4Legacy(src []byte, w io.Writer, limit int64) (int64, error) {
	if len(src) < 4 || binary.LittleEndian.Uint32(src) != lz4LegacyMagic {
		return 0, fmt.Errorf("lz4 legacy: missing magic")
	}
	src = src[4:]
	// LZ4 expands at most 255:1, so small inputs need no full-size block.
	dst := make([]byte, min(lz4LegacyBlock, 256*len(src)+64))
	var total int64
	for len(src) >= 4 {
		size := binary.LittleEndian.Uint32(src)
		if size == lz4LegacyMagic {
			src = src[4:]
			continue
		}
		if uint64(size) > uint64(len(src)-4) {
			break // the appended uncompressed size, or trailing padding
		}
		block := src[4 : 4+size]
		src = src[4+size:]
		n, err := lz4.UncompressBlock(block, dst)
		if err != nil {
			return total, fmt.Errorf("lz4 legacy: block at output offset %d: %w", total, err)
		}
		if total+int64(n) > limit {
			return total, fmt.Errorf("lz4 legacy: output exceeds %d bytes", limit)
		}
		if _, err := w.Write(dst[:n]); err != nil {
			return total, err
		}
		total += int64(n)
	}
	if total == 0 {
		return 0, fmt.Errorf("lz4 legacy: no data blocks")
	}
	return total, nil
}
