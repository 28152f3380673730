package testutil

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// CacheDir is where real-guest tests keep downloads between runs:
// $BANGER_TEST_CACHE, else <user cache dir>/banger-test.
func CacheDir(t testing.TB) string {
	t.Helper()
	if c := os.Getenv("BANGER_TEST_CACHE"); c != "" {
		return c
	}
	d, err := os.UserCacheDir()
	Require(t, err == nil, "a user cache directory")
	return filepath.Join(d, "banger-test")
}

// DebianCloudDeb returns Debian's cloud kernel .deb from the test cache,
// fetching it once with download (kernel.AptDownload, passed in because
// the kernel package's own tests use this too).
func DebianCloudDeb(t testing.TB, download func(ctx context.Context, dir, pkg string) (string, error)) string {
	t.Helper()
	const meta = "linux-image-cloud-amd64"
	dir := filepath.Join(CacheDir(t), meta)
	if debs, _ := filepath.Glob(filepath.Join(dir, "linux-image-*-cloud-amd64_*.deb")); len(debs) > 0 {
		slices.Sort(debs)
		return debs[len(debs)-1]
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		Require(t, false, "test cache "+dir+": "+err.Error())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	deb, err := download(ctx, dir, meta)
	if err != nil {
		Require(t, false, "Debian's cloud kernel via apt: "+err.Error())
	}
	return deb
}
