package api

import (
	"encoding/binary"
	"fmt"
	"io"
)

// MaxFrame bounds an exec frame's payload, so that a bad peer cannot make
// the other side allocate without limit.
const MaxFrame = 1 << 20

// ReadFrame reads one exec frame: a type byte, a 4-byte big-endian length
// and the payload.
func ReadFrame(r io.Reader) (byte, []byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n > MaxFrame {
		return 0, nil, fmt.Errorf("exec frame of %d bytes exceeds %d", n, MaxFrame)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return 0, nil, err
	}
	return hdr[0], b, nil
}

// WriteFrame writes one exec frame in a single Write; payloads over
// MaxFrame are split.
func WriteFrame(w io.Writer, typ byte, p []byte) error {
	for {
		n := min(len(p), MaxFrame)
		buf := make([]byte, 5+n)
		buf[0] = typ
		binary.BigEndian.PutUint32(buf[1:5], uint32(n))
		copy(buf[5:], p[:n])
		if _, err := w.Write(buf); err != nil {
			return err
		}
		p = p[n:]
		if len(p) == 0 {
			return nil
		}
	}
}
