package roothelper

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"

	"golang.org/x/sys/unix"

	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/engine/firecracker"
	"github.com/bangervm/banger/internal/engine/proc"
)

// OpSealTemplate seals the template a jailed template VM saved in its
// jail (see sealTemplate).
const OpSealTemplate = "sealTemplate"

// Jailed templates. A jailed Firecracker runs as the owner; a template's
// files, which every later clone maps, must not be writable by any of
// them. So the template VM's snapshot, written in its jail, is copied
// into root's read-only files (sealed) that join the template, and a
// clone's jail gets hard links of sealed files only: no disk per clone,
// and a compromised clone can read, never write, what its siblings map.

// pendingRE is the name of a template being made in the template cache
// (vmtemplate.Store.Create: os.MkdirTemp(dir, "new")).
var pendingRE = regexp.MustCompile(`^new[0-9]{1,20}$`)

// sealedMode is a sealed template file's mode: readable by all (so a
// link of it in a jail discloses nothing), writable by none.
const sealedMode = 0o444

// isTemplateJail reports whether c's chroot base is a template VM's:
// <Templates>/new<digits>/jail.
func isTemplateJail(c *firecracker.JailerConfig, p *JailerPolicy) bool {
	if p == nil || c == nil || p.Templates == "" || filepath.Clean(c.ChrootBase) != c.ChrootBase {
		return false
	}
	pending := filepath.Dir(c.ChrootBase)
	return filepath.Base(c.ChrootBase) == firecracker.JailDirName &&
		filepath.Dir(pending) == p.Templates && pendingRE.MatchString(filepath.Base(pending))
}

func isTemplateFile(name string) bool {
	return name == firecracker.TemplateMemory || name == firecracker.TemplateSnapshot
}

// validateTemplateFile checks a template file a launchJailer request
// places in a clone's jail: <Templates>/<template>/<its name>, read-only.
func validateTemplateFile(f firecracker.JailFile, p *JailerPolicy) error {
	deny := func(format string, a ...any) error {
		return fmt.Errorf(format+": %w", append(a, errdefs.ErrPermissionDenied)...)
	}
	switch tmpl := filepath.Dir(f.Path); {
	case p == nil || p.Templates == "":
		return deny("jail file %s: this helper places no template files in jails (start it with --templates <the owner's cache>/templates)", f.Name)
	case f.Writable:
		return deny("jail file %s: a template's files are read-only", f.Name)
	case filepath.Base(f.Path) != f.Name || filepath.Dir(tmpl) != p.Templates || pendingRE.MatchString(filepath.Base(tmpl)):
		return deny("jail file %s: path %q is not a template's %s in %s", f.Name, f.Path, f.Name, p.Templates)
	}
	return nil
}

// placeTemplateFile hard-links the template file st describes into the
// jail's root directory: only a sealed one (root's, mode 0444), reached
// from / with no symlink on its path. Never a copy: a template is big,
// and its point is that clones share it.
func placeTemplateFile(root *os.File, f firecracker.JailFile, st *unix.Stat_t) error {
	if st.Uid != 0 || st.Gid != 0 || st.Mode&0o7777 != sealedMode {
		return fmt.Errorf("template file %s is not sealed (root's, mode 0444; it is %d:%d, %o): %w", f.Path, st.Uid, st.Gid, st.Mode&0o7777, errdefs.ErrPermissionDenied)
	}
	same, err := openSame(f.Path, st)
	if err != nil {
		return fmt.Errorf("template file: %w: %w", err, errdefs.ErrPermissionDenied)
	}
	defer same.Close()
	err = unix.Linkat(int(same.Fd()), "", int(root.Fd()), f.Name, unix.AT_EMPTY_PATH)
	if errors.Is(err, unix.EXDEV) {
		return fmt.Errorf("cannot hard-link template file %s into the jail (a different filesystem from the VM's directory): keep banger's cache and state on one filesystem: %w", f.Path, errdefs.ErrFailedPrecondition)
	}
	return err
}

// sealTemplate seals the snapshot a template VM wrote in its jail (c's,
// <Templates>/<pending>/jail): its memory and state files, which must be
// the owner's regular files with one link, are copied into new files of
// root's, mode 0444, in the pending template directory, synced, the state
// last. Copies, not the files themselves made root's: an open descriptor
// or a shared mapping the template VM's Firecracker (the owner's) took of
// those would outlive a chown, while no one but this helper ever had the
// copies. The cost is one copy per template (holes kept), none per clone.
func sealTemplate(c *firecracker.JailerConfig, p *JailerPolicy) error {
	jailMu.Lock()
	defer jailMu.Unlock()
	pending, err := openOwnerDir(filepath.Dir(c.ChrootBase), p.UID)
	if err != nil {
		return err
	}
	defer pending.Close()
	// The jail's directories down to the chroot are root's (buildJail);
	// the chroot itself the owner's (the jailer chowns it).
	dir := pending
	for _, name := range []string{firecracker.JailDirName, filepath.Base(p.Firecracker), c.ID, "root"} {
		next, err := openat(int(dir.Fd()), name, unix.O_RDONLY|unix.O_DIRECTORY)
		if dir != pending {
			dir.Close()
		}
		if err != nil {
			return fmt.Errorf("template jail %s: %w", c.ChrootBase, err)
		}
		dir = next
		if name == "root" {
			break
		}
		if err := checkRootDir(dir, filepath.Join(c.ChrootBase, name)); err != nil {
			dir.Close()
			return err
		}
	}
	root := dir
	defer root.Close()
	names := []string{firecracker.TemplateMemory, firecracker.TemplateSnapshot}
	var srcs []*os.File
	defer func() {
		for _, f := range srcs {
			f.Close()
		}
	}()
	for _, name := range names {
		f, err := openOwnerFile(root, name, p.UID)
		if err != nil {
			return fmt.Errorf("template jail %s: %s: %w", c.ChrootBase, name, err)
		}
		srcs = append(srcs, f)
	}
	for i, src := range srcs {
		if err := sealCopy(pending, names[i], src); err != nil {
			for _, name := range names[:i+1] {
				unix.Unlinkat(int(pending.Fd()), name, 0)
			}
			return fmt.Errorf("seal %s of %s: %w", names[i], c.ChrootBase, err)
		}
	}
	return nil
}

// openOwnerFile opens name in dir for reading: a regular file of owner's
// with one link, not followed if a symlink, and opened only once that is
// known (opening a device or a FIFO as root could block or act).
func openOwnerFile(dir *os.File, name string, owner int) (*os.File, error) {
	fd, err := unix.Openat(int(dir.Fd()), name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || int(st.Uid) != owner || st.Nlink != 1 {
		return nil, fmt.Errorf("not a regular file of the owner's with one link: %w", errdefs.ErrPermissionDenied)
	}
	// Through the descriptor's /proc link: the very file checked.
	return os.Open(fmt.Sprintf("/proc/self/fd/%d", fd))
}

// sealCopy copies src into a new file name in dir, root's, mode 0444,
// and syncs it.
func sealCopy(dir *os.File, name string, src *os.File) error {
	out, err := openatCreate(int(dir.Fd()), name)
	if err != nil {
		return err
	}
	defer out.Close()
	if err := out.Chown(0, 0); err != nil {
		return err
	}
	if err := proc.CopySparse(out, src); err != nil {
		return err
	}
	return out.Sync()
}

// SealTemplate implements firecracker.TemplateSealer.
func (c *Client) SealTemplate(ctx context.Context, jc firecracker.JailerConfig) error {
	return c.do(ctx, &request{Op: OpSealTemplate, Jailer: &jc})
}

var _ firecracker.TemplateSealer = (*Client)(nil)
