package cli

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/bangervm/banger/client"
	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/agentproto"
	"github.com/bangervm/banger/internal/termtext"
	"github.com/bangervm/banger/internal/untar"
)

// cpOptions is one vm cp: exactly one of Src and Dst is in a VM.
type cpOptions struct {
	Src, Dst cpEndpoint
	// Archive keeps the guest's uid and gid on files copied out (-a).
	Archive bool
}

// cpEndpoint is a cp argument: a host path, or a path in VM.
type cpEndpoint struct {
	VM   string // empty: on the host
	Path string
}

func (e cpEndpoint) String() string {
	if e.VM == "" {
		return e.Path
	}
	return e.VM + ":" + e.Path
}

// parseCpEndpoint reads VM:PATH like docker cp: a colon before any slash
// names a VM, unless the argument starts with "/" or "." (write ./a:b for a
// host file with a colon). Guest paths are absolute; a relative one is
// taken from /.
func parseCpEndpoint(arg string) (cpEndpoint, error) {
	if arg == "" {
		return cpEndpoint{}, flagErrorf("vm cp: empty path")
	}
	i := strings.IndexByte(arg, ':')
	if i < 0 || strings.HasPrefix(arg, "/") || strings.HasPrefix(arg, ".") || strings.Contains(arg[:i], "/") {
		return cpEndpoint{Path: arg}, nil
	}
	vm, p := arg[:i], arg[i+1:]
	if vm == "" {
		return cpEndpoint{}, flagErrorf("vm cp: %q: no VM before the colon", arg)
	}
	if p == "" {
		return cpEndpoint{}, flagErrorf("vm cp: %q: no path after the colon (write %s:/ for the root)", arg, vm)
	}
	if !strings.HasPrefix(p, "/") {
		p = "/" + p
	}
	return cpEndpoint{VM: vm, Path: p}, nil
}

// parseCpArgs checks that exactly one side is in a VM.
func parseCpArgs(src, dst string) (cpOptions, error) {
	s, err := parseCpEndpoint(src)
	if err != nil {
		return cpOptions{}, err
	}
	d, err := parseCpEndpoint(dst)
	if err != nil {
		return cpOptions{}, err
	}
	switch {
	case s.VM != "" && d.VM != "":
		return cpOptions{}, flagErrorf("vm cp: copying between VMs is not supported: one side must be a host path")
	case s.VM == "" && d.VM == "":
		return cpOptions{}, flagErrorf("vm cp: one side must be VM:PATH")
	}
	return cpOptions{Src: s, Dst: d}, nil
}

func newVMCpCmd(f *Factory) *cobra.Command {
	var archive bool
	cmd := &cobra.Command{
		Use:   "cp SRC DST",
		Short: "Copy files and directories between the host and a running VM",
		Long: `Copy a file or directory tree between the host and a running VM; one of
SRC and DST is VM:PATH. Modes, times and symbolic links are kept (links are
copied as links, never followed), and so is ownership inside the VM.

If DST is an existing directory, SRC is copied into it under its own name;
otherwise DST's parent must exist and the copy is named DST. Works with any
image: the VM's agent does the work, no tar or cp needed in the guest.

Copying out of a VM treats what the VM sends as hostile: only SRC and what
is below it lands, nothing is written through or onto a symbolic link that
exists under DST, modes of existing directories stay, hard links only join
files of the same copy. Device nodes, FIFOs and sockets are never created
and setuid, setgid and sticky bits are dropped; files belong to you (to
root under sudo), or with -a keep the VM's uid and gid (setuid still
dropped). Each entry not copied is named on stderr and the exit status is
1; the rest is copied.`,
		Example: `  banger vm cp ./site box:/srv/
  banger vm cp box:/var/log/app.log .
  banger vm cp box:/etc ./box-etc
  banger vm cp -a box:/srv/data .   # run as root: keep the VM's owners`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 2 {
				return flagErrorf("vm cp: want SRC and DST: banger vm cp SRC VM:PATH or banger vm cp VM:PATH DST")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			opts, err := parseCpArgs(args[0], args[1])
			if err != nil {
				return err
			}
			opts.Archive = archive
			c, err := f.Client(cmd.Context())
			if err != nil {
				return err
			}
			return runVMCp(cmd.Context(), c, opts, f.IO.ErrOut)
		},
	}
	cmd.Flags().BoolVarP(&archive, "archive", "a", false, "copying out: keep the VM's uid and gid (needs root for other ids); copying in always keeps them")
	return cmd
}

// runVMCp copies; warnings about entries not copied out go to errOut.
func runVMCp(ctx context.Context, c *client.Client, o cpOptions, errOut io.Writer) error {
	// A missing VM is told apart from a missing path in it.
	if _, err := c.VM(ctx, o.Src.VM+o.Dst.VM); err != nil {
		return err
	}
	if o.Dst.VM != "" {
		return copyToVM(ctx, c, o.Src.Path, o.Dst)
	}
	return copyFromVM(ctx, c, o.Src, o.Dst.Path, o.Archive, errOut)
}

// guestNotFound turns a not-found error about p in vm into a clear one.
func guestNotFound(err error, vm, p string) error {
	if errdefs.IsNotFound(err) {
		return fmt.Errorf("no such file in vm %s: %s: %w", vm, p, errdefs.ErrNotFound)
	}
	return err
}

func copyToVM(ctx context.Context, c *client.Client, src string, dst cpEndpoint) error {
	sfi, err := os.Lstat(src)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("no such file or directory: %s: %w", src, errdefs.ErrNotFound)
		}
		return err
	}
	kind, err := guestKind(ctx, c, dst.VM, dst.Path)
	if err != nil && !errdefs.IsNotFound(err) {
		return err
	}
	var dir, name string
	switch {
	case err == nil && kind == tar.TypeDir:
		dir, name = dst.Path, agentproto.TarName(src)
	case strings.HasSuffix(dst.Path, "/"):
		if err != nil {
			return fmt.Errorf("no such directory in vm %s: %s: %w", dst.VM, dst.Path, errdefs.ErrNotFound)
		}
		return fmt.Errorf("not a directory in vm %s: %s: %w", dst.VM, dst.Path, errdefs.ErrInvalidArgument)
	case err == nil && sfi.IsDir():
		return fmt.Errorf("cannot copy directory %s onto non-directory %s: %w", src, dst, errdefs.ErrInvalidArgument)
	default:
		dir, name = path.Dir(dst.Path), path.Base(dst.Path)
	}
	var copyErr error
	err = agentproto.StreamTar(ctx, src, name, func(r io.Reader) error {
		copyErr = c.CopyToVM(ctx, dst.VM, dir, r)
		return copyErr
	})
	if err != nil && err == copyErr {
		return guestNotFound(err, dst.VM, dir)
	}
	return err
}

// maxLinkHops bounds symbolic-link resolution of a guest destination.
const maxLinkHops = 16

// guestKind reports the tar type of the guest path p, following symbolic
// links (as a destination directory is followed): it reads only the first
// header of the path's archive.
func guestKind(ctx context.Context, c *client.Client, vm, p string) (byte, error) {
	for range maxLinkHops {
		hdr, err := firstHeader(ctx, c, vm, p)
		if err != nil {
			return 0, err
		}
		if hdr.Typeflag != tar.TypeSymlink {
			return hdr.Typeflag, nil
		}
		if path.IsAbs(hdr.Linkname) {
			p = hdr.Linkname
		} else {
			p = path.Join(path.Dir(path.Clean(p)), hdr.Linkname)
		}
	}
	return 0, fmt.Errorf("vm %s: %s: too many levels of symbolic links", vm, p)
}

func firstHeader(ctx context.Context, c *client.Client, vm, p string) (*tar.Header, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	rc, err := c.CopyFromVM(ctx, vm, p)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	hdr, err := tar.NewReader(rc).Next()
	if err != nil {
		return nil, fmt.Errorf("vm %s: stat %s: %w", vm, p, err)
	}
	return hdr, nil
}

// copyFromVM extracts the guest tree src under dst as "cp -r" would place
// it. The archive comes from the guest, so it is extracted Strict: entries
// that could harm the host are refused and each is named on errOut.
func copyFromVM(ctx context.Context, c *client.Client, src cpEndpoint, dst string, keepOwner bool, errOut io.Writer) error {
	opts := untar.Options{Policy: untar.Strict, Top: agentproto.TarName(src.Path), KeepOwner: keepOwner}
	dir := dst
	fi, err := os.Stat(dst)
	switch {
	case err == nil && fi.IsDir():
	case err == nil || errors.Is(err, os.ErrNotExist):
		if strings.HasSuffix(dst, "/") {
			if err == nil {
				return fmt.Errorf("not a directory: %s: %w", dst, errdefs.ErrInvalidArgument)
			}
			return fmt.Errorf("no such directory: %s: %w", dst, errdefs.ErrNotFound)
		}
		dir, opts.Rename = filepath.Dir(dst), filepath.Base(dst)
		if pfi, err := os.Stat(dir); err != nil {
			return fmt.Errorf("no such directory: %s: %w", dir, errdefs.ErrNotFound)
		} else if !pfi.IsDir() {
			return fmt.Errorf("not a directory: %s: %w", dir, errdefs.ErrInvalidArgument)
		}
	default:
		return err
	}
	opts.Refused = func(r untar.Refusal) {
		fmt.Fprintf(errOut, "banger: vm cp: not copied: %s\n", escapeTerm(r.String()))
	}
	rc, err := c.CopyFromVM(ctx, src.VM, src.Path)
	if err != nil {
		return guestNotFound(err, src.VM, src.Path)
	}
	defer rc.Close()
	if err := untar.Extract(ctx, dir, rc, opts); err != nil {
		msg := fmt.Sprintf("copy %s to %s: %v", src, dst, err)
		var re *untar.RefusedError
		if errors.As(err, &re) {
			msg += " (named above); the rest was copied"
		}
		// The message may quote the guest's entry names.
		return errdefs.WithClass(escapeTerm(msg), errdefs.Class(err))
	}
	return nil
}

// escapeTerm makes guest-controlled text safe to print on a terminal, on
// one line: a newline in an entry name could fake a line of output.
func escapeTerm(s string) string {
	return termtext.Escape(strings.ReplaceAll(s, "\n", `\n`))
}
