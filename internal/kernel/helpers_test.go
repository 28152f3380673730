package kernel

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"debug/elf"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bangervm/banger/internal/kernel/cpio"
	"github.com/pierrec/lz4/v4"
)

// elfSection is a section of a synthetic ELF file.
type elfSection struct {
	name string
	typ  elf.SectionType
	data []byte
}

// buildELF writes a minimal little-endian ELF64 file with the given
// sections. If noteSeg names a section, a PT_NOTE segment covers it, as in a
// real vmlinux.
func buildELF(typ elf.Type, machine elf.Machine, secs []elfSection, noteSeg string) []byte {
	le := binary.LittleEndian
	const ehsize, phsize, shsize = 64, 56, 64
	nph := 0
	if noteSeg != "" {
		nph = 1
	}
	// Section data follows the program headers; .shstrtab comes last.
	shstr := []byte{0}
	nameOff := make([]uint32, len(secs)+1)
	for i, s := range secs {
		nameOff[i] = uint32(len(shstr))
		shstr = append(append(shstr, s.name...), 0)
	}
	nameOff[len(secs)] = uint32(len(shstr))
	shstr = append(append(shstr, ".shstrtab"...), 0)
	all := append(append([]elfSection{}, secs...), elfSection{".shstrtab", elf.SHT_STRTAB, shstr})

	var body bytes.Buffer
	offs := make([]uint64, len(all))
	base := uint64(ehsize + nph*phsize)
	for i, s := range all {
		for (base+uint64(body.Len()))%8 != 0 {
			body.WriteByte(0)
		}
		offs[i] = base + uint64(body.Len())
		body.Write(s.data)
	}
	for (base+uint64(body.Len()))%8 != 0 {
		body.WriteByte(0)
	}
	shoff := base + uint64(body.Len())

	var out bytes.Buffer
	ident := [16]byte{0x7f, 'E', 'L', 'F', byte(elf.ELFCLASS64), byte(elf.ELFDATA2LSB), byte(elf.EV_CURRENT)}
	out.Write(ident[:])
	w := func(v any) { binary.Write(&out, le, v) }
	w(uint16(typ))
	w(uint16(machine))
	w(uint32(elf.EV_CURRENT))
	w(uint64(0)) // entry
	w(uint64(0)) // phoff, patched below
	w(shoff)     // shoff
	w(uint32(0)) // flags
	w(uint16(ehsize))
	w(uint16(phsize))
	w(uint16(nph))
	w(uint16(shsize))
	w(uint16(len(all) + 1)) // + the null section
	w(uint16(len(all)))     // shstrndx
	if nph == 1 {
		b := out.Bytes()
		le.PutUint64(b[32:], ehsize)
		for i, s := range all {
			if s.name == noteSeg {
				w(uint32(elf.PT_NOTE))
				w(uint32(elf.PF_R))
				w(offs[i])
				w(uint64(0))
				w(uint64(0))
				w(uint64(len(s.data)))
				w(uint64(len(s.data)))
				w(uint64(4))
			}
		}
	}
	out.Write(body.Bytes())
	out.Write(make([]byte, shsize)) // null section
	for i, s := range all {
		w(nameOff[i])
		w(uint32(s.typ))
		w(uint64(0))
		w(uint64(0))
		w(offs[i])
		w(uint64(len(s.data)))
		w(uint32(0))
		w(uint32(0))
		w(uint64(1))
		w(uint64(0))
	}
	return out.Bytes()
}

// elfNote encodes one ELF note.
func elfNote(name string, typ uint32, desc []byte) []byte {
	var b bytes.Buffer
	le := binary.LittleEndian
	binary.Write(&b, le, uint32(len(name)+1))
	binary.Write(&b, le, uint32(len(desc)))
	binary.Write(&b, le, typ)
	b.WriteString(name + "\x00")
	for b.Len()%4 != 0 {
		b.WriteByte(0)
	}
	b.Write(desc)
	for b.Len()%4 != 0 {
		b.WriteByte(0)
	}
	return b.Bytes()
}

// fakeVmlinux returns a small x86-64 ELF executable with a linux_banner for
// version and, if pvh, the PVH entry note. pad adds that many bytes of
// compressible filler, to make multi-block payloads.
func fakeVmlinux(version string, pvh bool, pad int) []byte {
	notes := elfNote("GNU", 3, []byte{1, 2, 3, 4})
	if pvh {
		notes = append(notes, elfNote("Xen", xenElfnotePhys32Entry, []byte{0x50, 0x08, 0x00, 0x01})...)
	}
	rodata := []byte("Linux version %s\x00Linux version " + version + " (test@example) #1 SMP\n\x00")
	filler := make([]byte, pad)
	for i := range filler {
		filler[i] = byte(i / 4096)
	}
	return buildELF(elf.ET_EXEC, elf.EM_X86_64, []elfSection{
		{".text", elf.SHT_PROGBITS, []byte{0xf4, 0xeb, 0xfd}},
		{".notes", elf.SHT_NOTE, notes},
		{".rodata", elf.SHT_PROGBITS, rodata},
		{".data", elf.SHT_PROGBITS, filler},
	}, ".notes")
}

// fakeKo returns a relocatable ELF with a .modinfo section built from
// key=value strings.
func fakeKo(modinfo ...string) []byte {
	var mi []byte
	for _, kv := range modinfo {
		mi = append(append(mi, kv...), 0)
	}
	return buildELF(elf.ET_REL, elf.EM_X86_64, []elfSection{
		{".text", elf.SHT_PROGBITS, []byte{0xc3}},
		{".modinfo", elf.SHT_PROGBITS, mi},
	}, "")
}

// lz4Legacy compresses data in the kernel's lz4 -l format, with the
// uncompressed size appended as the kernel build does.
func lz4Legacy(t testing.TB, data []byte) []byte {
	t.Helper()
	out := binary.LittleEndian.AppendUint32(nil, lz4LegacyMagic)
	for rest := data; len(rest) > 0; {
		n := min(len(rest), lz4LegacyBlock)
		buf := make([]byte, lz4.CompressBlockBound(n))
		c, err := lz4.CompressBlock(rest[:n], buf, nil)
		if err != nil || c == 0 {
			t.Fatalf("lz4 compress: %v (%d)", err, c)
		}
		out = binary.LittleEndian.AppendUint32(out, uint32(c))
		out = append(out, buf[:c]...)
		rest = rest[n:]
	}
	return binary.LittleEndian.AppendUint32(out, uint32(len(data)))
}

// gzipped compresses data with gzip; its trailer already ends in the size.
func gzipped(t testing.TB, data []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	zw.Write(data)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// sizeAppended appends the little-endian uncompressed size, as the kernel
// build does for every format but gzip.
func sizeAppended(compressed []byte, n int) []byte {
	return binary.LittleEndian.AppendUint32(append([]byte{}, compressed...), uint32(n))
}

// fakeBzImage wraps a compressed payload in an x86 boot setup header.
func fakeBzImage(payload []byte, version string) []byte {
	const setupSects = 3
	le := binary.LittleEndian
	img := make([]byte, (setupSects+1)*512)
	img[bzSetupSects] = setupSects
	le.PutUint16(img[bzBootFlag:], 0xAA55)
	copy(img[bzHeaderMagic:], "HdrS")
	le.PutUint16(img[bzVersion:], 0x020f)
	verOff := 0x400
	copy(img[verOff:], version+" (test@example) #1 SMP\x00")
	le.PutUint16(img[bzKernelVersion:], uint16(verOff-0x200))
	// The protected-mode code starts with a stub before the payload, as
	// in a real image.
	stub := bytes.Repeat([]byte{0x90}, 300)
	le.PutUint32(img[bzPayloadOffset:], uint32(len(stub)))
	le.PutUint32(img[bzPayloadLength:], uint32(len(payload)))
	img = append(img, stub...)
	img = append(img, payload...)
	return append(img, make([]byte, 64)...) // trailing padding, as after the payload in real images
}

func writeFile(t testing.TB, path string, data []byte) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// readInitrd unpacks a gzip newc archive into name -> header and data.
type cpioEntry struct {
	hdr  cpio.Header
	data []byte
}

func readInitrd(t testing.TB, path string) ([]string, map[string]cpioEntry) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	cr := cpio.NewReader(zr)
	var names []string
	m := map[string]cpioEntry{}
	for {
		h, err := cr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(cr)
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		m[h.Name] = cpioEntry{*h, data}
	}
	return names, m
}

// tarEntry describes one entry for buildTar.
type tarEntry struct {
	name, link string
	typ        byte
	data       []byte
}

func buildTar(t testing.TB, entries []tarEntry) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Linkname: e.link, Mode: 0o644, Size: int64(len(e.data))}
		if e.typ == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Typeflag != tar.TypeReg {
			h.Size = 0
		}
		if h.Typeflag == tar.TypeDir {
			h.Mode = 0o755
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			tw.Write(e.data)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// listDir returns the names in dir, for checking what an import left.
func listDir(t testing.TB, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var n []string
	for _, e := range ents {
		n = append(n, e.Name())
	}
	return n
}

func joinNames(n []string) string { return strings.Join(n, ",") }
