package hostcmd

import (
	"context"
	"fmt"
	"path/filepath"
	"syscall"

	"github.com/bangervm/banger/errdefs"
)

// MkdirAs creates dirs (and missing parents) as uid:gid, the last
// component of each with mode 0700. Root uses it for directories in a
// user's home: done as the user, a symlink the user planted there can
// only lead to places the user could write anyway.
func MkdirAs(ctx context.Context, uid, gid int, dirs ...string) error {
	for _, d := range dirs {
		if !filepath.IsAbs(d) {
			return fmt.Errorf("mkdir %q: not absolute: %w", d, errdefs.ErrInvalidArgument)
		}
	}
	_, err := Run(ctx, Cmd{
		Name:       "mkdir",
		Args:       append([]string{"-p", "-m", "0700", "--"}, dirs...),
		Package:    "coreutils",
		Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}},
	})
	return err
}

// RemoveAllAs removes dirs and everything in them as uid:gid, staying on
// their file system; for the same reason as MkdirAs.
func RemoveAllAs(ctx context.Context, uid, gid int, dirs ...string) error {
	for _, d := range dirs {
		if !filepath.IsAbs(d) || filepath.Clean(d) == "/" {
			return fmt.Errorf("remove %q: not an absolute path below /: %w", d, errdefs.ErrInvalidArgument)
		}
	}
	_, err := Run(ctx, Cmd{
		Name:       "rm",
		Args:       append([]string{"-rf", "--one-file-system", "--"}, dirs...),
		Package:    "coreutils",
		Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}},
	})
	return err
}
