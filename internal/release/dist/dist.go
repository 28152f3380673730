// Package dist makes a release's files, as `make release` publishes them:
// the reproducible tarball of banger's three binaries, SHA256SUMS, the
// manifest listing every release, a signature of each (cosign's sign-blob
// format, internal/release), and install.sh with the public key in it.
//
// The layout is the one banger update and install.sh read, relative to
// the release URL:
//
//	manifest.json, manifest.json.sig, install.sh, install.sh.sig
//	<version>/banger-<version>-linux-amd64.tar.gz
//	<version>/SHA256SUMS, <version>/SHA256SUMS.sig
package dist

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/ecdsa"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/release"
)

// Options is one release build.
type Options struct {
	Version string
	Key     *ecdsa.PrivateKey
	// BinDir holds the binaries (release.Binaries), built for Version
	// with this key's public key and BaseURL's manifest compiled in.
	BinDir string
	// OutDir receives the release's files; it must not hold this
	// version already.
	OutDir string
	// Previous is the published manifest and its signature, whose
	// releases the new manifest keeps; nil for the first release. Its
	// signature must verify with Key's public key.
	Previous, PreviousSig []byte
	// BaseURL is where OutDir's contents will be served; install.sh
	// fetches from there.
	BaseURL string
	// Time stamps the tarball's entries and the release; from
	// SOURCE_DATE_EPOCH or the commit time, so that two builds of one
	// commit give the same files.
	Time time.Time
}

// Build writes the release's files into o.OutDir and returns the new
// manifest.
func Build(o Options) (release.Manifest, error) {
	if _, err := release.ParseVersion(o.Version); err != nil {
		return release.Manifest{}, err
	}
	if !strings.HasPrefix(o.BaseURL, "https://") && !strings.HasPrefix(o.BaseURL, "http://") {
		return release.Manifest{}, fmt.Errorf("release URL %q: want http(s)://...: %w", o.BaseURL, errdefs.ErrInvalidArgument)
	}
	m, err := previous(o)
	if err != nil {
		return release.Manifest{}, err
	}
	if _, ok := m.Find(o.Version); ok {
		return release.Manifest{}, fmt.Errorf("release %s is already in the previous manifest: pick a new version: %w", o.Version, errdefs.ErrAlreadyExists)
	}
	if m.Latest != "" {
		// banger update refuses a manifest whose latest is older than
		// the installed version; never publish one.
		if c, _ := release.CompareVersions(o.Version, m.Latest); c < 0 {
			return release.Manifest{}, fmt.Errorf("release %s is older than the published latest %s: %w", o.Version, m.Latest, errdefs.ErrInvalidArgument)
		}
	}
	files := map[string][]byte{}
	for _, name := range release.Binaries {
		b, err := os.ReadFile(filepath.Join(o.BinDir, name))
		if err != nil {
			return release.Manifest{}, fmt.Errorf("release binaries: %w (make release builds them)", err)
		}
		// The linker writes the version into banger and bangerd as a
		// plain string (buildinfo.Version): a binary without it was not
		// built for this release (a dev build, another VERSION).
		if name != "banger-agent" && !bytes.Contains(b, []byte(o.Version)) {
			return release.Manifest{}, fmt.Errorf("%s was not built for %s (no version string in it): build the binaries with make release VERSION=%s: %w", filepath.Join(o.BinDir, name), o.Version, o.Version, errdefs.ErrInvalidArgument)
		}
		files[name] = b
	}
	tgz, err := Tarball(files, o.Time)
	if err != nil {
		return release.Manifest{}, err
	}
	rel := release.Release{
		Version: o.Version, Tarball: release.TarballPath(o.Version),
		Size: int64(len(tgz)), SHA256: release.SHA256Hex(tgz), Released: o.Time.UTC(),
	}
	m.Latest, m.Released = o.Version, rel.Released
	m.Releases = append(m.Releases, rel)
	manifest, err := m.Marshal()
	if err != nil {
		return release.Manifest{}, err
	}
	pub, err := release.MarshalPublicKey(&o.Key.PublicKey)
	if err != nil {
		return release.Manifest{}, err
	}
	script, err := InstallScript(ScriptParams{BaseURL: o.BaseURL, PublicKey: string(pub), Version: o.Version})
	if err != nil {
		return release.Manifest{}, err
	}
	sums := release.Sums(map[string][]byte{release.TarballName(o.Version): tgz})

	vdir := filepath.Join(o.OutDir, o.Version)
	if _, err := os.Stat(vdir); err == nil {
		return release.Manifest{}, fmt.Errorf("%s exists: release %s was built there already; remove it to build again: %w", vdir, o.Version, errdefs.ErrAlreadyExists)
	}
	if err := os.MkdirAll(vdir, 0o755); err != nil {
		return release.Manifest{}, err
	}
	out := []struct {
		path   string
		data   []byte
		signed bool
	}{
		{filepath.Join(vdir, release.TarballName(o.Version)), tgz, false},
		{filepath.Join(vdir, release.SumsFile), sums, true},
		{filepath.Join(o.OutDir, release.ManifestFile), manifest, true},
		{filepath.Join(o.OutDir, ScriptFile), script, true},
	}
	for _, f := range out {
		if err := os.WriteFile(f.path, f.data, 0o644); err != nil {
			return release.Manifest{}, err
		}
		if f.signed {
			if err := SignFile(o.Key, f.path); err != nil {
				return release.Manifest{}, err
			}
		}
	}
	return m, nil
}

// previous parses and verifies the published manifest o.Previous; the
// zero Manifest when there is none.
func previous(o Options) (release.Manifest, error) {
	if o.Previous == nil {
		return release.Manifest{}, nil
	}
	if err := release.Verify(&o.Key.PublicKey, o.Previous, o.PreviousSig); err != nil {
		return release.Manifest{}, fmt.Errorf("previous manifest: %w (it must be signed with this release's key)", err)
	}
	return release.ParseManifest(o.Previous)
}

// SignFile writes path.sig, key's signature of path.
func SignFile(key *ecdsa.PrivateKey, path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	sig, err := release.Sign(key, b)
	if err != nil {
		return fmt.Errorf("sign %s: %w", path, err)
	}
	return os.WriteFile(path+release.SigSuffix, sig, 0o644)
}

// Tarball makes the release tarball of files (name → content), the same
// bytes for the same files and mtime whatever the files' order, owners,
// modes or times on disk: entries sorted by name, mode 0755, uid and gid
// 0 with no names, mtime as given, USTAR headers, and a gzip header with
// no name and no time.
func Tarball(files map[string][]byte, mtime time.Time) ([]byte, error) {
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	slices.Sort(names)
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return nil, err
	}
	tw := tar.NewWriter(zw)
	for _, n := range names {
		hdr := &tar.Header{
			Typeflag: tar.TypeReg, Name: n, Mode: 0o755, Size: int64(len(files[n])),
			ModTime: mtime.UTC().Truncate(time.Second), Format: tar.FormatUSTAR,
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, fmt.Errorf("tarball: %s: %w", n, err)
		}
		if _, err := tw.Write(files[n]); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
