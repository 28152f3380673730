package kernel

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bangervm/banger/errdefs"
)

func TestAptDownload(t *testing.T) {
	bin := t.TempDir()
	t.Setenv("PATH", bin+":/usr/bin:/bin")
	script := func(name, body string) {
		if err := os.WriteFile(filepath.Join(bin, name), []byte("#!/bin/sh\n"+body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// A fake apt: the metapackage depends on one versioned package, which
	// apt-get download writes into the current directory. The package name
	// is the last argument.
	script("apt-cache", `for a; do pkg="$a"; done
case "$pkg" in linux-image-cloud-amd64|linux-image-6.1.0-9-cloud-amd64) ;; *) echo "E: No packages found" >&2; exit 100;; esac
case "$1" in
show) printf 'Package: %s\nVersion: 1\n' "$pkg";;
depends) printf '%s\n  Depends: linux-base\n  Depends: linux-image-6.1.0-9-cloud-amd64\n' "$pkg";;
esac
`)
	script("apt-get", `for a; do pkg="$a"; done
echo "$pkg" >> "`+bin+`/downloads"; echo deb > "${pkg}_6.1.9-1_amd64.deb"`)

	ctx := context.Background()
	dir := t.TempDir()
	deb, err := AptDownload(ctx, dir, "linux-image-cloud-amd64")
	if err != nil {
		t.Fatal(err)
	}
	if deb != filepath.Join(dir, "linux-image-6.1.0-9-cloud-amd64_6.1.9-1_amd64.deb") {
		t.Errorf("deb = %s", deb)
	}
	if got := joinNames(listDir(t, dir)); got != filepath.Base(deb) {
		t.Errorf("download dir holds %s", got)
	}
	if got, _ := os.ReadFile(filepath.Join(bin, "downloads")); string(got) != "linux-image-6.1.0-9-cloud-amd64\n" {
		t.Errorf("apt-get download fetched %q", got)
	}

	if _, err := AptDownload(ctx, dir, "linux-image-nosuch"); !errdefs.IsNotFound(err) {
		t.Errorf("unknown package: %v", err)
	}

	t.Setenv("PATH", t.TempDir())
	_, err = AptDownload(ctx, dir, "linux-image-cloud-amd64")
	if !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "needs a Debian or Ubuntu host with apt; use kernel import --deb FILE instead") {
		t.Errorf("without apt: %v", err)
	}
}
