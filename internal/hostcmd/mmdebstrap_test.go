package hostcmd

import (
	"slices"
	"testing"
)

// The build must stay in fakechroot mode (no namespace, no setuid helper,
// no real chroot: what the daemon's unit allows) and write its tar to
// standard output.
func TestMmdebstrapArgs(t *testing.T) {
	got := MmdebstrapArgs(MmdebstrapOptions{Suite: "bookworm", Mirror: "http://deb.debian.org/debian", Variant: "minbase", Include: []string{"git", "curl"}})
	want := []string{"--mode=fakechroot", "--format=tar", "--variant=minbase", "--include=git,curl", "bookworm", "-", "http://deb.debian.org/debian"}
	if !slices.Equal(got, want) {
		t.Fatalf("args = %q; want %q", got, want)
	}
}
