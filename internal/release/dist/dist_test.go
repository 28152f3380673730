package dist

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/ecdsa"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/release"
	"github.com/bangervm/banger/internal/testutil"
)

var epoch = time.Unix(1767225600, 0).UTC() // 2026-01-01

func newKey(t *testing.T) (*ecdsa.PrivateKey, string) {
	t.Helper()
	dir := t.TempDir()
	if err := Keygen(dir); err != nil {
		t.Fatal(err)
	}
	k, err := ReadPrivateKey(filepath.Join(dir, PrivateKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	return k, filepath.Join(dir, PublicKeyFile)
}

// fakeBins writes the three binaries with content naming version.
func fakeBins(t *testing.T, version string) string {
	t.Helper()
	dir := t.TempDir()
	for _, n := range release.Binaries {
		if err := os.WriteFile(filepath.Join(dir, n), []byte("#!/bin/sh\necho "+n+" "+version+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestTarballIsReproducible: the same files and time give the same bytes
// whatever the order they come in; entries are sorted, owned by 0:0 with
// no names, mode 0755, the given mtime; the gzip header has no name and
// no time.
func TestTarballIsReproducible(t *testing.T) {
	files := map[string][]byte{"bangerd": []byte("daemon"), "banger": []byte("cli"), "banger-agent": []byte("agent")}
	a, err := Tarball(files, epoch)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		b, err := Tarball(map[string][]byte{"banger-agent": []byte("agent"), "banger": []byte("cli"), "bangerd": []byte("daemon")}, epoch.Add(999*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a, b) {
			t.Fatal("two tarballs of the same files differ")
		}
	}
	zr, err := gzip.NewReader(bytes.NewReader(a))
	if err != nil {
		t.Fatal(err)
	}
	if zr.Name != "" || !zr.ModTime.IsZero() {
		t.Errorf("gzip header: name %q, mtime %v; want neither", zr.Name, zr.ModTime)
	}
	tr := tar.NewReader(zr)
	var names []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		if h.Uid != 0 || h.Gid != 0 || h.Uname != "" || h.Gname != "" || h.Mode != 0o755 || !h.ModTime.Equal(epoch) || h.Typeflag != tar.TypeReg {
			t.Errorf("%s: uid %d gid %d %q:%q mode %o mtime %v type %c", h.Name, h.Uid, h.Gid, h.Uname, h.Gname, h.Mode, h.ModTime, h.Typeflag)
		}
		b, _ := io.ReadAll(tr)
		if !bytes.Equal(b, files[h.Name]) {
			t.Errorf("%s: content %q", h.Name, b)
		}
	}
	if strings.Join(names, " ") != "banger banger-agent bangerd" {
		t.Errorf("entries %v, want sorted", names)
	}
	if b, _ := Tarball(files, epoch.Add(time.Second)); bytes.Equal(a, b) {
		t.Error("another mtime gives the same tarball: the time is not in it")
	}
}

// TestSignaturesVerifyWithOpenSSL: openssl, which install.sh uses, accepts
// banger-release's signatures with key.pub — the cosign sign-blob format,
// a DER ECDSA signature over the file's SHA-256 — and rejects them for a
// changed file or another key.
func TestSignaturesVerifyWithOpenSSL(t *testing.T) {
	testutil.RequireTool(t, "openssl", "openssl")
	k, pub := newKey(t)
	_, otherPub := newKey(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "SHA256SUMS")
	if err := os.WriteFile(file, []byte("some signed content\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := SignFile(k, file); err != nil {
		t.Fatal(err)
	}
	sig, err := os.ReadFile(file + release.SigSuffix)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(file)
	if err := release.Verify(&k.PublicKey, data, sig); err != nil {
		t.Fatalf("release.Verify of banger-release's signature: %v", err)
	}
	der := filepath.Join(dir, "sig.der")
	decoded := exec.Command("base64", "-d", file+release.SigSuffix)
	out, err := decoded.Output()
	if err != nil {
		t.Fatalf("base64 -d of the signature: %v", err)
	}
	if err := os.WriteFile(der, out, 0o644); err != nil {
		t.Fatal(err)
	}
	verify := func(key, f string) error {
		out, err := exec.Command("openssl", "dgst", "-sha256", "-verify", key, "-signature", der, f).CombinedOutput()
		if err != nil {
			return errors.New(strings.TrimSpace(string(out)))
		}
		return nil
	}
	if err := verify(pub, file); err != nil {
		t.Fatalf("openssl rejects banger-release's signature: %v", err)
	}
	if verify(otherPub, file) == nil {
		t.Error("openssl accepts the signature with another key")
	}
	if err := os.WriteFile(file, []byte("some signed content!\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if verify(pub, file) == nil {
		t.Error("openssl accepts the signature of a changed file")
	}
}

func TestKeygen(t *testing.T) {
	dir := t.TempDir()
	if err := Keygen(dir); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, PrivateKeyFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key.pem: %v %v, want mode 0600", fi.Mode(), err)
	}
	before, _ := os.ReadFile(filepath.Join(dir, PrivateKeyFile))
	if err := Keygen(dir); !errdefs.IsAlreadyExists(err) {
		t.Fatalf("keygen over a key: %v, want AlreadyExists", err)
	}
	if after, _ := os.ReadFile(filepath.Join(dir, PrivateKeyFile)); !bytes.Equal(before, after) {
		t.Fatal("keygen overwrote a key")
	}
	k, err := ReadPrivateKey(filepath.Join(dir, PrivateKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	pubPEM, _ := os.ReadFile(filepath.Join(dir, PublicKeyFile))
	if pub, err := release.ParsePublicKey(pubPEM); err != nil || !pub.Equal(&k.PublicKey) {
		t.Fatalf("key.pub is not key.pem's public key: %v", err)
	}
	os.Chmod(filepath.Join(dir, PrivateKeyFile), 0o644)
	if _, err := ReadPrivateKey(filepath.Join(dir, PrivateKeyFile)); !errdefs.IsPermissionDenied(err) {
		t.Fatalf("a world-readable key: %v, want PermissionDenied", err)
	}
}

// TestBuild: a release's files are where update and install.sh look, each
// signed; the next release keeps the previous ones in the manifest and
// becomes latest; a version already out, an older one, or a previous
// manifest not signed by the key are refused.
func TestBuild(t *testing.T) {
	k, _ := newKey(t)
	out := t.TempDir()
	o := Options{Version: "v0.3.0", Key: k, BinDir: fakeBins(t, "v0.3.0"), OutDir: out, BaseURL: "https://example.org/banger", Time: epoch}
	if _, err := Build(o); err != nil {
		t.Fatal(err)
	}
	read := func(rel string) []byte {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(out, rel))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	verified := func(rel string) []byte {
		t.Helper()
		b := read(rel)
		if err := release.Verify(&k.PublicKey, b, read(rel+release.SigSuffix)); err != nil {
			t.Fatalf("%s: %v", rel, err)
		}
		return b
	}
	m, err := release.ParseManifest(verified(release.ManifestFile))
	if err != nil {
		t.Fatal(err)
	}
	r, ok := m.Find("v0.3.0")
	if m.Latest != "v0.3.0" || !ok || !m.Released.Equal(epoch) {
		t.Fatalf("manifest %+v", m)
	}
	tgz := read(r.Tarball)
	sums, err := release.ParseSums(verified("v0.3.0/" + release.SumsFile))
	if err != nil {
		t.Fatal(err)
	}
	if h := release.SHA256Hex(tgz); h != r.SHA256 || sums[release.TarballName("v0.3.0")] != h || r.Size != int64(len(tgz)) || len(sums) != 1 {
		t.Fatalf("tarball sha256 %s size %d; manifest %+v; SHA256SUMS %v", h, len(tgz), r, sums)
	}
	script := verified(ScriptFile)
	pub, _ := release.MarshalPublicKey(&k.PublicKey)
	if !bytes.Contains(script, pub) || !bytes.Contains(script, []byte("https://example.org/banger")) {
		t.Fatalf("install.sh has not the key and URL:\n%s", script)
	}

	prev, prevSig := read(release.ManifestFile), read(release.ManifestFile+release.SigSuffix)
	next := o
	next.Version, next.BinDir, next.Previous, next.PreviousSig, next.Time = "v0.3.1", fakeBins(t, "v0.3.1"), prev, prevSig, epoch.Add(time.Hour)
	if _, err := Build(next); err != nil {
		t.Fatal(err)
	}
	m, err = release.ParseManifest(verified(release.ManifestFile))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := m.Find("v0.3.0"); m.Latest != "v0.3.1" || !ok || len(m.Releases) != 2 || !m.Released.Equal(epoch.Add(time.Hour)) {
		t.Fatalf("manifest after the second release: %+v", m)
	}
	if got := read(r.Tarball); !bytes.Equal(got, tgz) {
		t.Fatal("the second release changed the first's tarball")
	}

	other, _ := newKey(t)
	otherSig, _ := release.Sign(other, prev)
	for _, c := range []struct {
		name  string
		edit  func(*Options)
		class func(error) bool
	}{
		{"a version already released", func(o *Options) { o.Version = "v0.3.0" }, errdefs.IsAlreadyExists},
		{"an older version", func(o *Options) { o.Version = "v0.2.9" }, errdefs.IsInvalidArgument},
		{"a previous manifest signed by another key", func(o *Options) { o.Version, o.PreviousSig = "v0.3.2", otherSig }, errdefs.IsPermissionDenied},
		{"a release URL with a quote", func(o *Options) { o.Version, o.BaseURL = "v0.3.2", "https://example.org/'x" }, errdefs.IsInvalidArgument},
		{"a version that is not vX.Y.Z", func(o *Options) { o.Version = "v0.3.2-rc1" }, errdefs.IsInvalidArgument},
		{"binaries built for another version", func(o *Options) { o.Version = "v0.4.0" }, errdefs.IsInvalidArgument},
	} {
		o := next
		o.Previous, o.PreviousSig, o.OutDir = prev, prevSig, t.TempDir()
		c.edit(&o)
		if _, err := Build(o); !c.class(err) {
			t.Errorf("%s: %v", c.name, err)
		}
		if ents, _ := os.ReadDir(o.OutDir); len(ents) != 0 {
			t.Errorf("%s: refused, but wrote %v", c.name, ents)
		}
	}
}

// TestInstallScript: install.sh passes shellcheck as POSIX sh, and carries
// the key, URL and version it was made for.
func TestInstallScript(t *testing.T) {
	testutil.RequireTool(t, "shellcheck", "shellcheck")
	k, _ := newKey(t)
	pub, _ := release.MarshalPublicKey(&k.PublicKey)
	s, err := InstallScript(ScriptParams{BaseURL: "https://example.org/banger", PublicKey: string(pub), Version: "v1.2.3"})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"${BANGER_RELEASE_URL:-https://example.org/banger}", "made_for=v1.2.3", string(pub)} {
		if !bytes.Contains(s, []byte(want)) {
			t.Errorf("install.sh lacks %q", want)
		}
	}
	p := filepath.Join(t.TempDir(), ScriptFile)
	if err := os.WriteFile(p, s, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("shellcheck", "-s", "sh", p).CombinedOutput(); err != nil {
		t.Fatalf("shellcheck install.sh: %v\n%s", err, out)
	}
	for _, bad := range []string{"https://example.org/", "ftp://example.org", "https://example.org/a b", "https://example.org/$(id)", "https://example.org/}"} {
		if _, err := InstallScript(ScriptParams{BaseURL: bad, PublicKey: string(pub), Version: "v1.2.3"}); !errdefs.IsInvalidArgument(err) {
			t.Errorf("URL %q: %v, want InvalidArgument", bad, err)
		}
	}
}
