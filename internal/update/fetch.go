package update

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"time"

	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/release"
)

// Source is where releases come from and the key they must be signed
// with. Production code takes both from the binary (release.BuiltIn);
// tests make throw-away keys and serve releases on loopback.
type Source struct {
	ManifestURL string
	Key         *ecdsa.PublicKey
	// HTTP is the client to download with (default: one with a timeout
	// per request, see Timeout).
	HTTP *http.Client
	// Timeout bounds each download, the tarball's included (default 10
	// minutes; the small files get a minute).
	Timeout time.Duration
}

// BuiltIn is the source compiled into this binary; a build without one
// (a development build) refuses with errdefs.ErrFailedPrecondition.
func BuiltIn() (Source, error) {
	u, key, err := release.BuiltIn()
	if err != nil {
		return Source{}, err
	}
	return Source{ManifestURL: u, Key: key}, nil
}

// Manifest fetches the manifest and its signature, verifies the signature
// with the source's key and parses it.
func (s Source) Manifest(ctx context.Context) (release.Manifest, error) {
	body, err := s.get(ctx, s.ManifestURL, release.MaxManifest)
	if err != nil {
		return release.Manifest{}, err
	}
	sig, err := s.get(ctx, s.ManifestURL+release.SigSuffix, release.MaxSig)
	if err != nil {
		return release.Manifest{}, err
	}
	if err := release.Verify(s.Key, body, sig); err != nil {
		return release.Manifest{}, fmt.Errorf("manifest %s: signature not made by the release key compiled into this banger: %w", s.ManifestURL, err)
	}
	return release.ParseManifest(body)
}

// Resolve is ref relative to the manifest's URL.
func (s Source) Resolve(ref string) (string, error) {
	base, err := url.Parse(s.ManifestURL)
	if err != nil {
		return "", fmt.Errorf("manifest URL %q: %w", s.ManifestURL, err)
	}
	r, err := url.Parse(ref)
	if err != nil {
		return "", fmt.Errorf("release path %q: %w", ref, errdefs.ErrInvalidArgument)
	}
	return base.ResolveReference(r).String(), nil
}

// Download fetches rel's tarball into dir and verifies it: SHA256SUMS
// beside it must be signed by the source's key and name the tarball with
// the hash the tarball has, which is also the hash and size the (signed)
// manifest gives. It returns the tarball's path; nothing unverified is
// left under its final name.
func (s Source) Download(ctx context.Context, rel release.Release, dir string) (string, error) {
	tarURL, err := s.Resolve(rel.Tarball)
	if err != nil {
		return "", err
	}
	name := path.Base(rel.Tarball)
	if name != release.TarballName(rel.Version) {
		return "", fmt.Errorf("release %s: tarball %q: %w", rel.Version, rel.Tarball, errdefs.ErrInvalidArgument)
	}
	sumsURL, err := s.Resolve(path.Join(path.Dir(rel.Tarball), release.SumsFile))
	if err != nil {
		return "", err
	}
	sums, err := s.get(ctx, sumsURL, release.MaxSums)
	if err != nil {
		return "", err
	}
	sig, err := s.get(ctx, sumsURL+release.SigSuffix, release.MaxSig)
	if err != nil {
		return "", err
	}
	if err := release.Verify(s.Key, sums, sig); err != nil {
		return "", fmt.Errorf("%s: signature not made by the release key compiled into this banger: %w", sumsURL, err)
	}
	list, err := release.ParseSums(sums)
	if err != nil {
		return "", fmt.Errorf("%s: %w", sumsURL, err)
	}
	want, ok := list[name]
	if !ok {
		return "", fmt.Errorf("%s does not list %s: %w", sumsURL, name, errdefs.ErrPermissionDenied)
	}
	if want != rel.SHA256 {
		return "", fmt.Errorf("%s gives %s the sha256 %s, the manifest %s: %w", sumsURL, name, want, rel.SHA256, errdefs.ErrPermissionDenied)
	}
	f, err := os.CreateTemp(dir, ".download-*")
	if err != nil {
		return "", err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	h := sha256.New()
	if err := s.fetch(ctx, tarURL, rel.Size, io.MultiWriter(f, h)); err != nil {
		return "", err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		return "", fmt.Errorf("%s: sha256 %s, SHA256SUMS says %s: the tarball was modified: %w", tarURL, got, want, errdefs.ErrPermissionDenied)
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	dst := filepath.Join(dir, name)
	if err := os.Rename(f.Name(), dst); err != nil {
		return "", err
	}
	return dst, nil
}

// get reads url, refusing a body over max bytes.
func (s Source) get(ctx context.Context, url string, max int64) ([]byte, error) {
	var b bytes.Buffer
	if err := s.fetch(ctx, url, -max, &b); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// fetch copies url's body to w. size > 0 is the exact size the body must
// have; size < 0 is -(the most it may have). A body that ends early or
// goes on longer is refused (errdefs.ErrPermissionDenied: it is not what
// was signed) without reading past the limit.
func (s Source) fetch(ctx context.Context, url string, size int64, w io.Writer) error {
	timeout := s.Timeout
	if timeout == 0 {
		timeout = 10 * time.Minute
	}
	if size < 0 && timeout > time.Minute {
		timeout = time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("download %s: %w", url, err)
	}
	hc := s.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("download %s: %w: %w", url, err, errdefs.ErrUnavailable)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		if resp.StatusCode == http.StatusNotFound {
			return fmt.Errorf("download %s: %s: %w", url, resp.Status, errdefs.ErrNotFound)
		}
		return fmt.Errorf("download %s: %s: %w", url, resp.Status, errdefs.ErrUnavailable)
	}
	max, exact := size, true
	if size < 0 {
		max, exact = -size, false
	}
	if resp.ContentLength > max || (exact && resp.ContentLength >= 0 && resp.ContentLength != max) {
		return fmt.Errorf("download %s: %d bytes, want %s %d: %w", url, resp.ContentLength, map[bool]string{true: "exactly", false: "at most"}[exact], max, errdefs.ErrPermissionDenied)
	}
	n, err := io.Copy(w, io.LimitReader(resp.Body, max+1))
	switch {
	case err != nil:
		return fmt.Errorf("download %s: after %d bytes: %w: %w", url, n, err, errdefs.ErrUnavailable)
	case n > max:
		return fmt.Errorf("download %s: over %d bytes: refused: %w", url, max, errdefs.ErrPermissionDenied)
	case exact && n < max:
		return fmt.Errorf("download %s: %d bytes, want %d: truncated: %w", url, n, max, errdefs.ErrPermissionDenied)
	}
	return nil
}
