package flatten

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// testTime is the mtime of test entries unless they say otherwise.
var testTime = time.Unix(1_600_000_000, 0)

// ent is one tar entry of a test layer. Zero fields get sensible defaults.
type ent struct {
	name   string
	typ    byte // tar.TypeReg when 0
	body   string
	link   string
	mode   int64 // 0644 for files, 0755 for dirs, 0777 for symlinks when 0
	zero   bool  // mode really is 0
	uid    int
	gid    int
	xattrs map[string]string
	mtime  time.Time
	format tar.Format
}

func file(name, body string) ent       { return ent{name: name, body: body} }
func dir(name string) ent              { return ent{name: name, typ: tar.TypeDir} }
func symlink(name, target string) ent  { return ent{name: name, typ: tar.TypeSymlink, link: target} }
func hardlink(name, target string) ent { return ent{name: name, typ: tar.TypeLink, link: target} }
func whiteout(name string) ent         { return ent{name: name, body: ""} }

// layerTar returns the tar of ents.
func layerTar(t testing.TB, ents ...ent) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range ents {
		hdr := &tar.Header{
			Name:     e.name,
			Typeflag: e.typ,
			Linkname: e.link,
			Mode:     e.mode,
			Uid:      e.uid,
			Gid:      e.gid,
			ModTime:  e.mtime,
			Format:   e.format,
		}
		if hdr.Typeflag == 0 {
			hdr.Typeflag = tar.TypeReg
		}
		if hdr.Mode == 0 && !e.zero {
			switch hdr.Typeflag {
			case tar.TypeDir:
				hdr.Mode = 0o755
			case tar.TypeSymlink:
				hdr.Mode = 0o777
			default:
				hdr.Mode = 0o644
			}
		}
		if hdr.ModTime.IsZero() {
			hdr.ModTime = testTime
		}
		if hdr.Typeflag == tar.TypeReg {
			hdr.Size = int64(len(e.body))
		}
		if len(e.xattrs) > 0 {
			hdr.PAXRecords = map[string]string{}
			for k, v := range e.xattrs {
				hdr.PAXRecords["SCHILY.xattr."+k] = v
			}
			hdr.Format = tar.FormatPAX
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatalf("write header %q: %v", e.name, err)
		}
		if hdr.Typeflag == tar.TypeReg {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// sandbox is a root directory with an empty sentinel directory beside it,
// to show that nothing is written outside the root.
type sandbox struct {
	base, root, outside string
}

func newSandbox(t testing.TB) sandbox {
	t.Helper()
	base := t.TempDir()
	s := sandbox{base: base, root: filepath.Join(base, "root"), outside: filepath.Join(base, "outside")}
	for _, d := range []string{s.root, s.outside} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// checkContained fails the test if anything appeared outside the root.
func (s sandbox) checkContained(t testing.TB) {
	t.Helper()
	if es, err := os.ReadDir(s.outside); err != nil || len(es) != 0 {
		t.Fatalf("sentinel directory outside the root has %v (%v)", es, err)
	}
	es, err := os.ReadDir(s.base)
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 2 {
		t.Fatalf("base directory holds %v, want only root and outside", es)
	}
}

// apply makes a Tree in a fresh sandbox and applies layers, oldest first.
// With unprivileged set the Tree does not chown even as root.
func apply(t testing.TB, unprivileged bool, layers ...[]byte) (*Tree, sandbox) {
	t.Helper()
	s := newSandbox(t)
	tr, err := New(s.root)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	tr.chown = !unprivileged
	for i, l := range layers {
		if err := tr.Apply(context.Background(), bytes.NewReader(l)); err != nil {
			t.Fatalf("apply layer %d: %v", i, err)
		}
	}
	s.checkContained(t)
	return tr, s
}

// fixupFor returns the fixup for p, if any.
func fixupFor(tr *Tree, p string) (f fixupView, ok bool) {
	for _, fx := range tr.Fixups() {
		if fx.Path == p {
			f = fixupView{xattrs: map[string]string{}}
			if fx.UID != nil {
				f.uid, f.gid = int(*fx.UID), int(*fx.GID)
				f.owner = true
			}
			if fx.Mode != nil {
				f.mode, f.hasMode = *fx.Mode, true
			}
			for k, v := range fx.Xattrs {
				f.xattrs[k] = string(v)
			}
			return f, true
		}
	}
	return f, false
}

type fixupView struct {
	owner    bool
	uid, gid int
	hasMode  bool
	mode     uint32
	xattrs   map[string]string
}

func isEntryError(err error, entry string) bool {
	var ee *EntryError
	return errors.As(err, &ee) && ee.Entry == entry
}
