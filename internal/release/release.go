// Package release is banger's signed releases as data: the manifest that
// names the latest version and every release's tarball, its size and
// SHA-256; SHA256SUMS; and signatures in cosign's sign-blob format (the
// base64 of an ASN.1 DER ECDSA P-256 signature over the SHA-256 of the
// file), made and checked with the standard library only.
//
// Both the manifest and SHA256SUMS are signed: SHA256SUMS alone would let
// a mirror serve an older, validly signed release as the latest.
package release

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/bangervm/banger/errdefs"
)

// Size caps on what update and install.sh download: anything larger is
// refused before it is read to the end.
const (
	MaxManifest = 1 << 20
	MaxSums     = 64 << 10
	MaxSig      = 4 << 10
	MaxTarball  = 512 << 20
)

// ManifestSchema is the manifest layout this banger reads and writes.
const ManifestSchema = 1

// ManifestFile is the manifest's file name; its signature is
// ManifestFile + SigSuffix beside it.
const (
	ManifestFile = "manifest.json"
	SumsFile     = "SHA256SUMS"
	SigSuffix    = ".sig"
)

// Manifest lists the releases, newest named by Latest.
type Manifest struct {
	Schema   int       `json:"schema"`
	Latest   string    `json:"latest"`
	Released time.Time `json:"released"` // when Latest was released
	Releases []Release `json:"releases"`
}

// Release is one version. Tarball is its path relative to the manifest's
// URL (<version>/<TarballName>); SHA256SUMS and its signature are in the
// same directory.
type Release struct {
	Version  string    `json:"version"`
	Tarball  string    `json:"tarball"`
	Size     int64     `json:"size"`
	SHA256   string    `json:"sha256"`
	Released time.Time `json:"released"`
}

// TarballName is the name of version's tarball.
func TarballName(version string) string { return "banger-" + version + "-linux-amd64.tar.gz" }

// TarballPath is the tarball's path relative to the manifest.
func TarballPath(version string) string { return version + "/" + TarballName(version) }

// Binaries are the files a release tarball holds, at its top level.
var Binaries = []string{"banger", "bangerd", "banger-agent"}

var (
	versionRE = regexp.MustCompile(`^v(0|[1-9][0-9]{0,5})\.(0|[1-9][0-9]{0,5})\.(0|[1-9][0-9]{0,5})$`)
	sha256RE  = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

// ParseVersion splits a release version, vMAJOR.MINOR.PATCH.
func ParseVersion(v string) ([3]int, error) {
	m := versionRE.FindStringSubmatch(v)
	if m == nil {
		return [3]int{}, fmt.Errorf("version %q: want vMAJOR.MINOR.PATCH, e.g. v0.3.1: %w", v, errdefs.ErrInvalidArgument)
	}
	var out [3]int
	for i := range out {
		out[i], _ = strconv.Atoi(m[i+1])
	}
	return out, nil
}

// CompareVersions returns -1, 0 or 1 as a is older than, the same as or
// newer than b.
func CompareVersions(a, b string) (int, error) {
	va, err := ParseVersion(a)
	if err != nil {
		return 0, err
	}
	vb, err := ParseVersion(b)
	if err != nil {
		return 0, err
	}
	return slices.Compare(va[:], vb[:]), nil
}

// ParseManifest parses and checks a manifest: known fields only, this
// schema, release versions well-formed and unique, tarball paths as
// TarballPath makes them, sizes within MaxTarball, SHA-256s as hex, and
// Latest among the releases and newer than or equal to every other. It
// does not check the signature (Verify does, first).
func ParseManifest(b []byte) (Manifest, error) {
	var m Manifest
	if len(b) > MaxManifest {
		return m, fmt.Errorf("manifest of %d bytes: over %d: %w", len(b), MaxManifest, errdefs.ErrInvalidArgument)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return Manifest{}, fmt.Errorf("manifest: %w: %w", err, errdefs.ErrInvalidArgument)
	}
	if err := m.check(); err != nil {
		return Manifest{}, fmt.Errorf("manifest: %w", err)
	}
	return m, nil
}

func (m Manifest) check() error {
	inv := func(format string, a ...any) error {
		return fmt.Errorf(format+": %w", append(a, errdefs.ErrInvalidArgument)...)
	}
	if m.Schema != ManifestSchema {
		return inv("schema %d, this banger reads %d (update banger by hand: install.sh)", m.Schema, ManifestSchema)
	}
	if _, err := ParseVersion(m.Latest); err != nil {
		return fmt.Errorf("latest: %w", err)
	}
	seen := map[string]bool{}
	for _, r := range m.Releases {
		switch {
		case !versionRE.MatchString(r.Version):
			return inv("release version %q", r.Version)
		case seen[r.Version]:
			return inv("release %s listed twice", r.Version)
		case r.Tarball != TarballPath(r.Version):
			return inv("release %s: tarball %q, want %q", r.Version, r.Tarball, TarballPath(r.Version))
		case r.Size <= 0 || r.Size > MaxTarball:
			return inv("release %s: size %d, want 1 to %d bytes", r.Version, r.Size, MaxTarball)
		case !sha256RE.MatchString(r.SHA256):
			return inv("release %s: sha256 %q", r.Version, r.SHA256)
		}
		seen[r.Version] = true
		if c, _ := CompareVersions(r.Version, m.Latest); c > 0 {
			return inv("release %s is newer than latest %s", r.Version, m.Latest)
		}
	}
	if !seen[m.Latest] {
		return inv("latest %s is not among the releases", m.Latest)
	}
	return nil
}

// Find returns the release of version.
func (m Manifest) Find(version string) (Release, bool) {
	i := slices.IndexFunc(m.Releases, func(r Release) bool { return r.Version == version })
	if i < 0 {
		return Release{}, false
	}
	return m.Releases[i], true
}

// Marshal checks m and encodes it, releases newest first.
func (m Manifest) Marshal() ([]byte, error) {
	m.Schema = ManifestSchema
	m.Releases = slices.Clone(m.Releases)
	slices.SortFunc(m.Releases, func(a, b Release) int { c, _ := CompareVersions(b.Version, a.Version); return c })
	if err := m.check(); err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	b, err := json.MarshalIndent(m, "", "  ")
	return append(b, '\n'), err
}

// Sums formats SHA256SUMS (as sha256sum writes it) for the named
// contents, sorted by name.
func Sums(files map[string][]byte) []byte {
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	slices.Sort(names)
	var b bytes.Buffer
	for _, n := range names {
		fmt.Fprintf(&b, "%s  %s\n", SHA256Hex(files[n]), n)
	}
	return b.Bytes()
}

// ParseSums parses SHA256SUMS into name → hex SHA-256. Names are plain
// file names (no directories); each appears once.
func ParseSums(b []byte) (map[string]string, error) {
	if len(b) > MaxSums {
		return nil, fmt.Errorf("%s of %d bytes: over %d: %w", SumsFile, len(b), MaxSums, errdefs.ErrInvalidArgument)
	}
	out := map[string]string{}
	for i, line := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		sum, name, ok := strings.Cut(line, "  ")
		if !ok {
			// sha256sum's binary mode marks the name with '*'.
			sum, name, ok = strings.Cut(line, " *")
		}
		if !ok || !sha256RE.MatchString(sum) || name == "" || strings.ContainsAny(name, "/\x00") || name == "." || name == ".." {
			return nil, fmt.Errorf("%s line %d: %q: want \"<sha256>  <file name>\": %w", SumsFile, i+1, line, errdefs.ErrInvalidArgument)
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("%s: %s listed twice: %w", SumsFile, name, errdefs.ErrInvalidArgument)
		}
		out[name] = sum
	}
	return out, nil
}

// SHA256Hex is the hex SHA-256 of b.
func SHA256Hex(b []byte) string {
	s := sha256Sum(b)
	return hex.EncodeToString(s[:])
}
