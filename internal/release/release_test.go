package release

import (
	"bytes"
	"crypto/ecdsa"
	"encoding/base64"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/buildinfo"
	"github.com/bangervm/banger/internal/testutil"
)

func TestSignVerify(t *testing.T) {
	k, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	other, _ := GenerateKey()
	data := []byte("banger-v0.3.1-linux-amd64.tar.gz contents")
	sig, err := Sign(k, data)
	if err != nil {
		t.Fatal(err)
	}
	if err := Verify(&k.PublicKey, data, append(sig, '\n')); err != nil {
		t.Fatalf("own signature (with a trailing newline): %v", err)
	}
	for name, tc := range map[string]struct {
		data, sig []byte
		pub       *ecdsa.PublicKey
	}{
		"data changed":  {append([]byte("x"), data...), sig, &k.PublicKey},
		"other key":     {data, sig, &other.PublicKey},
		"not base64":    {data, []byte("!!!"), &k.PublicKey},
		"empty":         {data, nil, &k.PublicKey},
		"not a der sig": {data, []byte(base64.StdEncoding.EncodeToString([]byte("hello"))), &k.PublicKey},
		"oversized":     {data, bytes.Repeat([]byte("A"), MaxSig+1), &k.PublicKey},
	} {
		if err := Verify(tc.pub, tc.data, tc.sig); !errdefs.IsPermissionDenied(err) {
			t.Errorf("%s: %v, want a bad signature", name, err)
		}
	}
	// Keys round-trip through PEM.
	privPEM, _ := MarshalPrivateKey(k)
	pubPEM, _ := MarshalPublicKey(&k.PublicKey)
	k2, err := ParsePrivateKey(privPEM)
	if err != nil || !k2.Equal(k) {
		t.Fatalf("private key round trip: %v", err)
	}
	pub2, err := ParsePublicKey(pubPEM)
	if err != nil || !pub2.Equal(&k.PublicKey) {
		t.Fatalf("public key round trip: %v", err)
	}
	if _, err := ParsePublicKey(privPEM); !errdefs.IsInvalidArgument(err) {
		t.Errorf("a private key as the public one: %v", err)
	}
}

// openssl, as install.sh uses it, accepts banger's signatures: base64 of
// DER ECDSA over SHA-256 (cosign sign-blob's format) against the PKIX key.
func TestSignatureOpenSSL(t *testing.T) {
	testutil.RequireTool(t, "openssl", "openssl")
	dir := t.TempDir()
	k, _ := GenerateKey()
	data := []byte("SHA256SUMS contents\n")
	sig, _ := Sign(k, data)
	der, _ := base64.StdEncoding.DecodeString(string(sig))
	pubPEM, _ := MarshalPublicKey(&k.PublicKey)
	for n, b := range map[string][]byte{"data": data, "sig.der": der, "key.pub": pubPEM, "other": []byte("other\n")} {
		os.WriteFile(filepath.Join(dir, n), b, 0o600)
	}
	verify := func(file string) error {
		return exec.Command("openssl", "dgst", "-sha256", "-verify", filepath.Join(dir, "key.pub"), "-signature", filepath.Join(dir, "sig.der"), filepath.Join(dir, file)).Run()
	}
	if err := verify("data"); err != nil {
		t.Fatalf("openssl does not verify banger's signature: %v", err)
	}
	if err := verify("other"); err == nil {
		t.Fatal("openssl verified the signature over other data")
	}
}

func testManifest() Manifest {
	at := time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC)
	rel := func(v string) Release {
		return Release{Version: v, Tarball: TarballPath(v), Size: 1234, SHA256: strings.Repeat("ab", 32), Released: at}
	}
	return Manifest{Latest: "v0.10.0", Released: at, Releases: []Release{rel("v0.9.2"), rel("v0.10.0")}}
}

func TestManifest(t *testing.T) {
	b, err := testManifest().Marshal()
	if err != nil {
		t.Fatal(err)
	}
	m, err := ParseManifest(b)
	if err != nil {
		t.Fatal(err)
	}
	if m.Releases[0].Version != "v0.10.0" {
		t.Errorf("releases not newest first: %+v", m.Releases)
	}
	if r, ok := m.Find("v0.9.2"); !ok || r.Tarball != "v0.9.2/banger-v0.9.2-linux-amd64.tar.gz" {
		t.Errorf("Find: %+v %v", r, ok)
	}
	for name, edit := range map[string]func(*Manifest){
		"schema":                func(m *Manifest) { m.Schema = 2 },
		"latest missing":        func(m *Manifest) { m.Latest = "v1.0.0" },
		"latest not newest":     func(m *Manifest) { m.Latest = "v0.9.2" },
		"bad version":           func(m *Manifest) { m.Releases[0].Version = "0.9.2" },
		"tarball path":          func(m *Manifest) { m.Releases[0].Tarball = "../../etc/passwd" },
		"oversized":             func(m *Manifest) { m.Releases[0].Size = MaxTarball + 1 },
		"no size":               func(m *Manifest) { m.Releases[0].Size = 0 },
		"sha256":                func(m *Manifest) { m.Releases[0].SHA256 = "xyz" },
		"duplicate":             func(m *Manifest) { m.Releases[0] = m.Releases[1] },
		"version leading zeros": func(m *Manifest) { m.Releases[0].Version = "v0.09.2" },
	} {
		m := testManifest()
		m.Schema = ManifestSchema
		m.Releases = append([]Release(nil), m.Releases...)
		edit(&m)
		b, _ := json.Marshal(m)
		if _, err := ParseManifest(b); !errdefs.IsInvalidArgument(err) {
			t.Errorf("%s: %v, want refused", name, err)
		}
	}
	if _, err := ParseManifest([]byte(`{"schema":1,"latest":"v0.1.0","releases":[],"extra":1}`)); !errdefs.IsInvalidArgument(err) {
		t.Errorf("unknown field: %v", err)
	}
}

func TestCompareVersions(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{{"v0.9.2", "v0.10.0", -1}, {"v1.0.0", "v0.99.99", 1}, {"v0.3.1", "v0.3.1", 0}} {
		if got, err := CompareVersions(tc.a, tc.b); err != nil || got != tc.want {
			t.Errorf("CompareVersions(%s, %s) = %d, %v; want %d", tc.a, tc.b, got, err, tc.want)
		}
	}
	for _, bad := range []string{"dev", "v1.2", "1.2.3", "v1.2.3-rc1", "v01.2.3", ""} {
		if _, err := ParseVersion(bad); !errdefs.IsInvalidArgument(err) {
			t.Errorf("ParseVersion(%q): %v", bad, err)
		}
	}
}

func TestSums(t *testing.T) {
	files := map[string][]byte{"b": []byte("2"), "a": []byte("1")}
	b := Sums(files)
	if !strings.HasPrefix(string(b), SHA256Hex([]byte("1"))+"  a\n") {
		t.Errorf("Sums: %q", b)
	}
	got, err := ParseSums(b)
	if err != nil || got["b"] != SHA256Hex([]byte("2")) || len(got) != 2 {
		t.Fatalf("ParseSums: %v %v", got, err)
	}
	// sha256sum -c reads the same file.
	if _, err := exec.LookPath("sha256sum"); err == nil {
		dir := t.TempDir()
		for n, c := range files {
			os.WriteFile(filepath.Join(dir, n), c, 0o600)
		}
		os.WriteFile(filepath.Join(dir, SumsFile), b, 0o600)
		cmd := exec.Command("sha256sum", "-c", "--strict", SumsFile)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("sha256sum -c: %v %s", err, out)
		}
	}
	for _, bad := range []string{"xyz  a\n", SHA256Hex(nil) + "  ../a\n", SHA256Hex(nil) + "  a\n" + SHA256Hex(nil) + "  a\n", SHA256Hex(nil) + " a\n"} {
		if _, err := ParseSums([]byte(bad)); !errdefs.IsInvalidArgument(err) {
			t.Errorf("ParseSums(%q): %v", bad, err)
		}
	}
}

func TestBuiltIn(t *testing.T) {
	defer func(u, k string) { buildinfo.UpdateURL, buildinfo.UpdateKey = u, k }(buildinfo.UpdateURL, buildinfo.UpdateKey)
	buildinfo.UpdateURL, buildinfo.UpdateKey = "", ""
	if _, _, err := BuiltIn(); !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "not built for updates") {
		t.Errorf("development build: %v", err)
	}
	k, _ := GenerateKey()
	pubPEM, _ := MarshalPublicKey(&k.PublicKey)
	buildinfo.UpdateURL, buildinfo.UpdateKey = "https://example.invalid/manifest.json", base64.StdEncoding.EncodeToString(pubPEM)
	url, pub, err := BuiltIn()
	if err != nil || url != buildinfo.UpdateURL || !pub.Equal(&k.PublicKey) {
		t.Errorf("BuiltIn: %v %v", url, err)
	}
}
