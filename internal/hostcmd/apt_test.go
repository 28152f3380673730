package hostcmd

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/bangervm/banger/errdefs"
)

// fakeTool writes an executable shell script named name into dir.
func fakeTool(t *testing.T, dir, name, script string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"+script), 0o755); err != nil {
		t.Fatal(err)
	}
}

func TestParseAptDepends(t *testing.T) {
	tests := []struct {
		name string
		out  string
		want []string
	}{
		{"metapackage", "linux-image-cloud-amd64\n  Depends: linux-image-6.1.0-56-cloud-amd64\n", []string{"linux-image-6.1.0-56-cloud-amd64"}},
		{"alternatives and virtual", `linux-image-6.1.0-56-cloud-amd64
  Depends: kmod
  Depends: linux-base
 |Depends: initramfs-tools
  Depends: <linux-initramfs-tool>
    dracut
    initramfs-tools
  PreDepends: dpkg
`, []string{"kmod", "linux-base", "initramfs-tools", "dpkg"}},
		{"none", "busybox\n", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := parseAptDepends([]byte(tt.out)); !slices.Equal(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

const fakeShow = `Package: linux-image-cloud-amd64
Version: 6.1.192-2
Architecture: amd64
Depends: linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)
Description: Linux for x86-64 cloud (meta-package)
 continuation line
SHA256: 00be

Package: linux-image-cloud-amd64
Version: 6.1.176+1
Architecture: amd64
`

func TestAptWrappers(t *testing.T) {
	bin := t.TempDir()
	t.Setenv("PATH", bin)
	showFile := filepath.Join(bin, "show.txt")
	if err := os.WriteFile(showFile, []byte(fakeShow), 0o644); err != nil {
		t.Fatal(err)
	}
	// apt-cache show -- PKG
	fakeTool(t, bin, "apt-cache", `[ "$1 $2" = "show --" ] || exit 3
[ "$3" = linux-image-cloud-amd64 ] || { echo "E: No packages found" >&2; exit 100; }
while IFS= read -r l; do echo "$l"; done < `+showFile+`
`)
	ctx := context.Background()
	recs, err := AptCacheShow(ctx, "linux-image-cloud-amd64")
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 2 || recs[0].Version != "6.1.192-2" || recs[0].Depends != "linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)" ||
		recs[0].SHA256 != "00be" || recs[1].Version != "6.1.176+1" {
		t.Errorf("records = %+v", recs)
	}
	if _, err := AptCacheShow(ctx, "nosuch"); !errdefs.IsNotFound(err) {
		t.Errorf("unknown package: %v", err)
	}
	for _, bad := range []string{"-o", "Foo", "a", "x;y", ""} {
		if _, err := AptCacheShow(ctx, bad); !errdefs.IsInvalidArgument(err) {
			t.Errorf("name %q: %v", bad, err)
		}
		if err := AptGetDownload(ctx, t.TempDir(), bad); !errdefs.IsInvalidArgument(err) {
			t.Errorf("name %q: %v", bad, err)
		}
	}

	fakeTool(t, bin, "apt-get", `[ "$1 $2 $3" = "download -q --" ] || exit 3
echo "E: Unable to locate package $4" >&2; exit 100
`)
	if err := AptGetDownload(ctx, t.TempDir(), "nosuch"); !errdefs.IsNotFound(err) || !strings.Contains(err.Error(), "Unable to locate") {
		t.Errorf("download of unknown package: %v", err)
	}
}
