package update

import (
	"archive/tar"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/release"
)

func TestDecide(t *testing.T) {
	m := release.Manifest{Latest: "v0.3.0", Releases: []release.Release{{Version: "v0.3.0"}, {Version: "v0.2.0"}, {Version: "v0.1.0"}}}
	for _, tc := range []struct {
		installed, to string
		target        string
		available     bool
		downgrade     bool
		err           func(error) bool
	}{
		{installed: "v0.2.0", target: "v0.3.0", available: true},
		{installed: "v0.3.0", target: "v0.3.0"},
		{installed: "v0.4.0", err: errdefs.IsPermissionDenied},                 // latest older: rollback attack
		{installed: "v0.4.0", to: "v0.3.0", target: "v0.3.0", downgrade: true}, // asked by name
		{installed: "v0.3.0", to: "v0.1.0", target: "v0.1.0", downgrade: true},
		{installed: "v0.1.0", to: "v0.2.0", target: "v0.2.0", available: true},
		{installed: "v0.1.0", to: "v0.9.0", err: errdefs.IsNotFound},
		{installed: "v0.1.0", to: "latest", err: errdefs.IsInvalidArgument},
		{installed: "dev", err: errdefs.IsFailedPrecondition},
	} {
		p, err := Decide(m, tc.installed, tc.to)
		if tc.err != nil {
			if !tc.err(err) {
				t.Errorf("%s --to %q: %v (class %v)", tc.installed, tc.to, err, errdefs.Class(err))
			}
			continue
		}
		if err != nil || p.Target.Version != tc.target || p.UpdateAvailable != tc.available || p.Downgrade != tc.downgrade {
			t.Errorf("%s --to %q: %+v, %v", tc.installed, tc.to, p, err)
		}
	}
}

// Unpack takes the three binaries and refuses a tarball with anything
// else, even a signed one.
func TestUnpackRefuses(t *testing.T) {
	f := build{version: "v0.2.0"}.files()
	three := []tar.Header{regular("banger", f["banger"]), regular("bangerd", f["bangerd"]), regular("banger-agent", f["banger-agent"])}
	with := func(hs ...tar.Header) []tar.Header { return append(append([]tar.Header(nil), three...), hs...) }
	for name, tc := range map[string]struct {
		entries []tar.Header
		says    string
	}{
		"symlink":    {with(tar.Header{Name: "x", Typeflag: tar.TypeSymlink, Linkname: "/etc/shadow"}), `"x"`},
		"dot-dot":    {with(regular("../banger", []byte("x"))), `"../banger"`},
		"directory":  {append([]tar.Header{{Name: "bin/", Typeflag: tar.TypeDir, Mode: 0o755}}, three...), `"bin/"`},
		"duplicate":  {with(regular("bangerd", []byte("x"))), "twice"},
		"missing":    {three[:2], "lacks banger-agent"},
		"link named": {[]tar.Header{regular("banger", f["banger"]), {Name: "bangerd", Typeflag: tar.TypeSymlink, Linkname: "/bin/sh"}, three[2]}, "not a regular file"},
	} {
		dir := t.TempDir()
		tb := filepath.Join(dir, "t.tar.gz")
		os.WriteFile(tb, tarGz(t, tc.entries...), 0o600)
		out := filepath.Join(dir, "out")
		os.Mkdir(out, 0o755)
		err := Unpack(tb, out)
		if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("%s: %v, want a refusal saying %s", name, err, tc.says)
		}
	}
	dir := t.TempDir()
	tb := filepath.Join(dir, "t.tar.gz")
	os.WriteFile(tb, tarGz(t, append([]tar.Header{{Name: "./banger", Typeflag: tar.TypeReg, Mode: 0o755, Linkname: string(f["banger"])}}, three[1:]...)...), 0o600)
	if err := Unpack(tb, dir); err != nil {
		t.Fatalf("./-prefixed names: %v", err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "banger")); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("banger unpacked: %v %v", fi, err)
	}
}
