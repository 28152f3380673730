package agentproto

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
)

// A handshake frame is
//
//	magic[7] kind[1] version[2] nonce[16] payloadLen[2] payload[payloadLen] crc32[4]
//
// all big-endian, the CRC (IEEE) over everything before it. The layout is
// fixed for all protocol versions: it is how two versions find out that
// they differ. The magic starts with a byte that is rare in text so that
// scanning garbage is cheap.
const (
	hsMagic      = "\xb7banger"
	hsHeaderLen  = 7 + 1 + 2 + 16 + 2
	hsMaxPayload = 256
	hsCRCLen     = 4
)

// Handshake frame kinds.
const (
	kindHello = 'H' // host: here I am, this is my version
	kindAck   = 'A' // agent: payload is the agent version string
	kindGo    = 'G' // host: start the session
	kindReady = 'R' // agent: the session starts after this frame
)

type nonce [16]byte

type hsFrame struct {
	kind    byte
	version uint16
	nonce   nonce
	payload []byte
}

func appendHS(b []byte, f hsFrame) []byte {
	start := len(b)
	b = append(b, hsMagic...)
	b = append(b, f.kind)
	b = binary.BigEndian.AppendUint16(b, f.version)
	b = append(b, f.nonce[:]...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(f.payload)))
	b = append(b, f.payload...)
	return binary.BigEndian.AppendUint32(b, crc32.ChecksumIEEE(b[start:]))
}

// writeHS writes f in one Write so that a frame is never interleaved.
func writeHS(w io.Writer, f hsFrame) error {
	if len(f.payload) > hsMaxPayload {
		f.payload = f.payload[:hsMaxPayload]
	}
	_, err := w.Write(appendHS(nil, f))
	return err
}

func validKind(k byte) bool {
	return k == kindHello || k == kindAck || k == kindGo || k == kindReady
}

// readHS returns the next well-formed handshake frame in br, discarding
// anything before it: stale session bytes, garbage, or frames with a bad
// checksum. Candidates that fail are skipped one byte at a time, so a real
// frame that starts inside a broken one is still found. br's buffer must
// hold a whole frame (the default 4096 bytes does).
func readHS(br *bufio.Reader) (hsFrame, error) {
	for {
		if _, err := br.Peek(1); err != nil {
			return hsFrame{}, err
		}
		buf, _ := br.Peek(br.Buffered())
		i := bytes.IndexByte(buf, hsMagic[0])
		if i < 0 {
			_, _ = br.Discard(len(buf))
			continue
		}
		_, _ = br.Discard(i)
		hdr, err := br.Peek(hsHeaderLen)
		if err != nil {
			if errors.Is(err, bufio.ErrBufferFull) {
				return hsFrame{}, err
			}
			return hsFrame{}, err
		}
		plen := int(binary.BigEndian.Uint16(hdr[hsHeaderLen-2:]))
		if string(hdr[:len(hsMagic)]) != hsMagic || !validKind(hdr[len(hsMagic)]) || plen > hsMaxPayload {
			_, _ = br.Discard(1)
			continue
		}
		total := hsHeaderLen + plen + hsCRCLen
		full, err := br.Peek(total)
		if err != nil {
			return hsFrame{}, err
		}
		if crc32.ChecksumIEEE(full[:total-hsCRCLen]) != binary.BigEndian.Uint32(full[total-hsCRCLen:]) {
			_, _ = br.Discard(1)
			continue
		}
		f := hsFrame{
			kind:    full[len(hsMagic)],
			version: binary.BigEndian.Uint16(full[len(hsMagic)+1:]),
			payload: bytes.Clone(full[hsHeaderLen : hsHeaderLen+plen]),
		}
		copy(f.nonce[:], full[len(hsMagic)+3:])
		_, _ = br.Discard(total)
		return f, nil
	}
}

// bufConn reads through the bufio.Reader that the handshake used, so bytes
// it read ahead belong to the session, and writes and closes the stream.
type bufConn struct {
	r *bufio.Reader
	w io.Writer
	c io.Closer
}

func (b *bufConn) Read(p []byte) (int, error)  { return b.r.Read(p) }
func (b *bufConn) Write(p []byte) (int, error) { return b.w.Write(p) }
func (b *bufConn) Close() error                { return b.c.Close() }
