package update

import (
	"archive/tar"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/release"
)

// maxUnpacked bounds the three binaries together, uncompressed.
const maxUnpacked = 2 * release.MaxTarball

// Unpack extracts a release tarball's three binaries (release.Binaries, at
// its top level) into dir, mode 0755. Anything else in the tarball — another
// name, a directory, a link, a second entry of the same name — or more
// than maxUnpacked bytes refuses the whole tarball: it was signed, but
// banger installs only what it expects.
func Unpack(tarball, dir string) error {
	f, err := os.Open(tarball)
	if err != nil {
		return err
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return fmt.Errorf("%s: %w: %w", tarball, err, errdefs.ErrInvalidArgument)
	}
	tr := tar.NewReader(zr)
	seen := map[string]bool{}
	budget := int64(maxUnpacked)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("%s: %w: %w", tarball, err, errdefs.ErrInvalidArgument)
		}
		name := strings.TrimPrefix(h.Name, "./")
		switch {
		case !slices.Contains(release.Binaries, name):
			return fmt.Errorf("%s holds %q: a release holds only %s: %w", tarball, h.Name, strings.Join(release.Binaries, ", "), errdefs.ErrInvalidArgument)
		case h.Typeflag != tar.TypeReg:
			return fmt.Errorf("%s: %s is not a regular file: %w", tarball, h.Name, errdefs.ErrInvalidArgument)
		case seen[name]:
			return fmt.Errorf("%s holds %s twice: %w", tarball, name, errdefs.ErrInvalidArgument)
		case h.Size > budget:
			return fmt.Errorf("%s: %s of %d bytes: over %d bytes unpacked: %w", tarball, name, h.Size, int64(maxUnpacked), errdefs.ErrInvalidArgument)
		}
		seen[name] = true
		budget -= h.Size
		if err := writeFile(filepath.Join(dir, name), io.LimitReader(tr, h.Size), h.Size); err != nil {
			return fmt.Errorf("%s: %s: %w", tarball, name, err)
		}
	}
	for _, b := range release.Binaries {
		if !seen[b] {
			return fmt.Errorf("%s lacks %s: %w", tarball, b, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

func writeFile(path string, r io.Reader, size int64) error {
	out, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o755)
	if err != nil {
		return err
	}
	if err := out.Chmod(0o755); err != nil {
		out.Close()
		return err
	}
	n, err := io.Copy(out, r)
	if err == nil && n != size {
		err = fmt.Errorf("%d bytes of %d: %w", n, size, errdefs.ErrInvalidArgument)
	}
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return err
}
