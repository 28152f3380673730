package hostcmd

import (
	"context"
	"io"
	"strings"
)

// DebootstrapOptions describes a Debian root filesystem to build.
type DebootstrapOptions struct {
	Suite   string   // e.g. bookworm
	Target  string   // empty directory to fill
	Mirror  string   // e.g. http://deb.debian.org/debian
	Variant string   // e.g. minbase
	Include []string // extra packages
	Log     io.Writer
}

// DebootstrapArgs returns debootstrap's argument list for o.
func DebootstrapArgs(o DebootstrapOptions) []string {
	args := []string{}
	if o.Variant != "" {
		args = append(args, "--variant="+o.Variant)
	}
	if len(o.Include) > 0 {
		args = append(args, "--include="+strings.Join(o.Include, ","))
	}
	return append(args, o.Suite, o.Target, o.Mirror)
}

// Debootstrap runs debootstrap. It needs root.
func Debootstrap(ctx context.Context, o DebootstrapOptions) error {
	_, err := Run(ctx, Cmd{Name: "debootstrap", Args: DebootstrapArgs(o), Package: "debootstrap", Stdout: o.Log,
		Env: []string{"DEBIAN_FRONTEND=noninteractive", "LANG=C"}})
	return err
}
