package kernel

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"

	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/hostcmd"
)

// concreteImage matches versioned kernel packages such as
// linux-image-6.1.0-28-cloud-amd64, as opposed to metapackages such as
// linux-image-cloud-amd64 that depend on one.
var concreteImage = regexp.MustCompile(`^linux-image-(unsigned-)?[0-9]`)

// AptDownload fetches the .deb of a kernel package with the host's apt into
// dir and returns its path. A metapackage (linux-image-cloud-amd64) is first
// resolved to the versioned linux-image-<ver> package it depends on. The
// download goes to a temporary directory inside dir and is moved into place
// only when complete.
func AptDownload(ctx context.Context, dir, pkg string) (string, error) {
	concrete, err := resolveAptKernel(ctx, pkg)
	if err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(dir, ".apt-download-")
	if err != nil {
		return "", fmt.Errorf("create download directory: %w", err)
	}
	defer os.RemoveAll(tmp)
	if err := hostcmd.AptGetDownload(ctx, tmp, concrete); err != nil {
		return "", aptError(fmt.Errorf("download %s: %w", concrete, err))
	}
	debs, err := filepath.Glob(filepath.Join(tmp, concrete+"_*.deb"))
	if err != nil || len(debs) != 1 {
		return "", fmt.Errorf("download %s: expected one .deb from apt-get download, found %d", concrete, len(debs))
	}
	dst := filepath.Join(dir, filepath.Base(debs[0]))
	if err := os.Rename(debs[0], dst); err != nil {
		return "", fmt.Errorf("download %s: %w", concrete, err)
	}
	return dst, nil
}

// resolveAptKernel maps a metapackage to the versioned linux-image package
// it depends on; a package that is already versioned, or depends on none,
// is returned as is.
func resolveAptKernel(ctx context.Context, pkg string) (string, error) {
	if _, err := hostcmd.AptCacheShow(ctx, pkg); err != nil {
		return "", aptError(err)
	}
	if concreteImage.MatchString(pkg) {
		return pkg, nil
	}
	deps, err := hostcmd.AptCacheDepends(ctx, pkg)
	if err != nil {
		return "", aptError(err)
	}
	for _, d := range deps {
		if concreteImage.MatchString(d) {
			return d, nil
		}
	}
	return pkg, nil
}

// aptError explains a missing apt in terms of what the user can do instead.
func aptError(err error) error {
	if errors.Is(err, hostcmd.ErrToolMissing) {
		return fmt.Errorf("kernel pull debian-cloud needs a Debian or Ubuntu host with apt; use kernel import --deb FILE instead: %w: %w", errdefs.ErrFailedPrecondition, err)
	}
	return err
}
