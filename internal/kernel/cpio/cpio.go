// Package cpio writes and reads the "newc" (SVR4, magic 070701) cpio format,
// the only format the Linux kernel unpacks as an initramfs.
//
// The writer is deliberately minimal and deterministic: it stores exactly the
// mode, owner and mtime it is given, numbers inodes in the order entries are
// written, and never looks at the host file system, so the same calls give the
// same bytes on any machine. Hard links are not supported; the kernel does not
// need them.
package cpio

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

const (
	magic      = "070701"
	headerSize = 110
	trailer    = "TRAILER!!!"
	// maxName bounds names on read; PATH_MAX on Linux.
	maxName = 4096
)

// File-type bits of the cpio mode field (the same values as Linux's S_IF*).
const (
	TypeMask    = 0o170000
	TypeDir     = 0o040000
	TypeReg     = 0o100000
	TypeSymlink = 0o120000
	TypeChar    = 0o020000
	TypeBlock   = 0o060000
)

// Header describes one archive entry. Mode holds both the file-type bits
// (TypeDir, TypeReg, ...) and the permission bits, as in stat(2).
type Header struct {
	Name     string // relative path, no leading "/" or "./"
	Mode     uint32
	UID, GID uint32
	NLink    uint32 // 0 means 2 for directories and 1 otherwise
	MTime    int64  // seconds since the epoch
	Size     int64  // data length; for symlinks the length of Linkname
	DevMajor uint32 // device the entry lives on (the writer leaves it 0)
	DevMinor uint32
	// RDevMajor/RDevMinor are the device numbers of a character or block
	// device node.
	RDevMajor uint32
	RDevMinor uint32
	Linkname  string // symlink target, written as the entry's data
}

// Writer writes a newc archive. Call Close to write the trailer; Close does
// not close the underlying writer.
type Writer struct {
	w       io.Writer
	off     int64 // bytes written so far, for padding
	ino     uint32
	remain  int64 // data bytes still expected for the current entry
	pad     int64 // padding owed after the current entry's data
	closed  bool
	lastErr error
}

// NewWriter returns a Writer that writes to w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w} }

// WriteHeader starts a new entry. For regular files, exactly h.Size bytes
// must follow through Write. Symlink targets come from h.Linkname.
func (cw *Writer) WriteHeader(h *Header) error {
	if cw.closed {
		return errors.New("cpio: write after close")
	}
	if err := cw.finishEntry(); err != nil {
		return err
	}
	if err := checkName(h.Name); err != nil {
		return err
	}
	size := h.Size
	switch h.Mode & TypeMask {
	case TypeReg:
	case TypeSymlink:
		if h.Linkname == "" {
			return fmt.Errorf("cpio: symlink %s: empty target", h.Name)
		}
		size = int64(len(h.Linkname))
	case TypeDir, TypeChar, TypeBlock:
		size = 0
	default:
		return fmt.Errorf("cpio: %s: unsupported file type %#o", h.Name, h.Mode&TypeMask)
	}
	if size < 0 || size > 0xffffffff {
		return fmt.Errorf("cpio: %s: size %d does not fit the newc format", h.Name, size)
	}
	nlink := h.NLink
	if nlink == 0 {
		nlink = 1
		if h.Mode&TypeMask == TypeDir {
			nlink = 2
		}
	}
	if h.MTime < 0 || h.MTime > 0xffffffff {
		return fmt.Errorf("cpio: %s: mtime %d does not fit the newc format", h.Name, h.MTime)
	}
	cw.ino++
	if err := cw.writeRaw(h.Name, cw.ino, h.Mode, h.UID, h.GID, nlink, uint32(h.MTime), uint32(size),
		h.DevMajor, h.DevMinor, h.RDevMajor, h.RDevMinor); err != nil {
		return err
	}
	cw.remain = size
	cw.pad = pad4(size)
	if h.Mode&TypeMask == TypeSymlink {
		if _, err := cw.Write([]byte(h.Linkname)); err != nil {
			return err
		}
	}
	return nil
}

func (cw *Writer) writeRaw(name string, fields ...uint32) error {
	// fields: ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor
	var b strings.Builder
	b.Grow(headerSize + len(name) + 4)
	b.WriteString(magic)
	for _, f := range fields {
		fmt.Fprintf(&b, "%08x", f)
	}
	fmt.Fprintf(&b, "%08x%08x", len(name)+1, 0) // namesize includes the NUL; check is 0 in newc
	b.WriteString(name)
	b.WriteByte(0)
	n := int64(headerSize + len(name) + 1)
	b.WriteString(strings.Repeat("\x00", int(pad4(cw.off+n))))
	return cw.emit([]byte(b.String()))
}

// Write writes data for the current entry.
func (cw *Writer) Write(p []byte) (int, error) {
	if int64(len(p)) > cw.remain {
		return 0, fmt.Errorf("cpio: write of %d bytes exceeds the %d left in this entry", len(p), cw.remain)
	}
	if err := cw.emit(p); err != nil {
		return 0, err
	}
	cw.remain -= int64(len(p))
	return len(p), nil
}

func (cw *Writer) finishEntry() error {
	if cw.remain != 0 {
		return fmt.Errorf("cpio: entry is %d bytes short", cw.remain)
	}
	if cw.pad > 0 {
		if err := cw.emit(make([]byte, cw.pad)); err != nil {
			return err
		}
		cw.pad = 0
	}
	return nil
}

func (cw *Writer) emit(p []byte) error {
	if cw.lastErr != nil {
		return cw.lastErr
	}
	n, err := cw.w.Write(p)
	cw.off += int64(n)
	if err != nil {
		cw.lastErr = err
	}
	return err
}

// Close writes the trailer entry. The archive is complete only after Close
// returns nil.
func (cw *Writer) Close() error {
	if cw.closed {
		return nil
	}
	if err := cw.finishEntry(); err != nil {
		return err
	}
	if err := cw.writeRaw(trailer, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0); err != nil {
		return err
	}
	cw.closed = true
	return nil
}

// pad4 returns how many zero bytes bring n up to a multiple of 4.
func pad4(n int64) int64 { return (4 - n%4) % 4 }

func checkName(name string) error {
	if name == "" || name == trailer || strings.HasPrefix(name, "/") || len(name) >= maxName {
		return fmt.Errorf("cpio: invalid entry name %q", name)
	}
	for _, el := range strings.Split(name, "/") {
		if el == "" || el == "." || el == ".." {
			return fmt.Errorf("cpio: invalid entry name %q", name)
		}
	}
	if strings.IndexByte(name, 0) >= 0 {
		return fmt.Errorf("cpio: entry name %q contains NUL", name)
	}
	return nil
}

// Reader reads a newc archive, one entry at a time.
type Reader struct {
	r      *bufio.Reader
	off    int64
	remain int64
	pad    int64
}

// NewReader returns a Reader over r.
func NewReader(r io.Reader) *Reader { return &Reader{r: bufio.NewReader(r)} }

// Next skips to the next entry and returns its header. It returns io.EOF
// after the trailer.
func (cr *Reader) Next() (*Header, error) {
	if err := cr.discard(cr.remain + cr.pad); err != nil {
		return nil, err
	}
	cr.remain, cr.pad = 0, 0
	var raw [headerSize]byte
	if err := cr.read(raw[:]); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, io.ErrUnexpectedEOF
		}
		return nil, err
	}
	if string(raw[:6]) != magic {
		return nil, fmt.Errorf("cpio: bad magic %q at offset %d", raw[:6], cr.off-headerSize)
	}
	var f [13]uint32
	for i := range f {
		v, err := strconv.ParseUint(string(raw[6+8*i:14+8*i]), 16, 32)
		if err != nil {
			return nil, fmt.Errorf("cpio: bad header field %d: %w", i, err)
		}
		f[i] = uint32(v)
	}
	namesize := int64(f[11])
	if namesize < 1 || namesize > maxName {
		return nil, fmt.Errorf("cpio: bad name size %d", namesize)
	}
	name := make([]byte, namesize)
	if err := cr.read(name); err != nil {
		return nil, err
	}
	if err := cr.discard(pad4(cr.off)); err != nil {
		return nil, err
	}
	h := &Header{
		Name: strings.TrimRight(string(name), "\x00"), Mode: f[1], UID: f[2], GID: f[3], NLink: f[4],
		MTime: int64(f[5]), Size: int64(f[6]), DevMajor: f[7], DevMinor: f[8], RDevMajor: f[9], RDevMinor: f[10],
	}
	if h.Name == trailer {
		return nil, io.EOF
	}
	cr.remain = h.Size
	cr.pad = pad4(h.Size)
	if h.Mode&TypeMask == TypeSymlink {
		if h.Size > maxName {
			return nil, fmt.Errorf("cpio: symlink %s: target too long", h.Name)
		}
		target := make([]byte, h.Size)
		if _, err := io.ReadFull(cr, target); err != nil {
			return nil, err
		}
		h.Linkname = string(target)
	}
	return h, nil
}

// Read reads the current entry's data.
func (cr *Reader) Read(p []byte) (int, error) {
	if cr.remain == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > cr.remain {
		p = p[:cr.remain]
	}
	n, err := cr.r.Read(p)
	cr.off += int64(n)
	cr.remain -= int64(n)
	if err == io.EOF && cr.remain > 0 {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

func (cr *Reader) read(p []byte) error {
	n, err := io.ReadFull(cr.r, p)
	cr.off += int64(n)
	return err
}

func (cr *Reader) discard(n int64) error {
	m, err := cr.r.Discard(int(n))
	cr.off += int64(m)
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}
