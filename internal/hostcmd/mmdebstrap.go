package hostcmd

import (
	"context"
	"fmt"
	"io"
	"os/exec"
	"strings"
)

// MmdebstrapOptions describes a Debian root filesystem to build as a tar
// stream.
type MmdebstrapOptions struct {
	Suite   string   // e.g. bookworm
	Mirror  string   // e.g. http://deb.debian.org/debian
	Variant string   // e.g. minbase
	Include []string // extra packages
	TempDir string   // where mmdebstrap unpacks the tree; the caller removes it
	Out     io.Writer
	Log     io.Writer // mmdebstrap's progress lines
}

// MmdebstrapArgs returns mmdebstrap's argument list for o. The build runs
// in fakechroot mode: no user namespace, no setuid helper and no real
// chroot, so a daemon with no capability at all can run it, and a daemon
// running as root does not run the packages' maintainer scripts as root
// on the host. Ownership lives in fakeroot's records and comes out in
// the tar written to standard output.
func MmdebstrapArgs(o MmdebstrapOptions) []string {
	args := []string{"--mode=fakechroot", "--format=tar"}
	if o.Variant != "" {
		args = append(args, "--variant="+o.Variant)
	}
	if len(o.Include) > 0 {
		args = append(args, "--include="+strings.Join(o.Include, ","))
	}
	return append(args, o.Suite, "-", o.Mirror)
}

// Mmdebstrap runs mmdebstrap, writing the root filesystem as a tar to
// o.Out. It needs no privilege.
func Mmdebstrap(ctx context.Context, o MmdebstrapOptions) error {
	// mmdebstrap's own message for a missing fakechroot is about modes;
	// name the packages instead.
	for _, tool := range []string{"fakechroot", "fakeroot"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not found in PATH (mmdebstrap builds unprivileged with it): install it (apt-get install %s): %w", tool, tool, ErrToolMissing)
		}
	}
	_, err := Run(ctx, Cmd{Name: "mmdebstrap", Args: MmdebstrapArgs(o), Package: "mmdebstrap", Stdout: o.Out, Stderr: o.Log,
		Env: []string{"DEBIAN_FRONTEND=noninteractive", "LANG=C", "TMPDIR=" + o.TempDir}})
	return err
}
