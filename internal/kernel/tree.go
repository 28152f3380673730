package kernel

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/bangervm/banger/errdefs"
)

// maxTreeBytes bounds everything extracted from one archive: kernel, initrd
// and modules. Debian's cloud kernel extracts to about 105 MiB, a generic
// distribution kernel to about 400 MiB.
const maxTreeBytes = 4 << 30

// modulePrefixes are where a file tree keeps modules; merged-/usr images
// have lib as a symlink to usr/lib.
var modulePrefixes = []string{"lib/modules/", "usr/lib/modules/"}

// ImportTar stages a kernel from a tar stream of a file tree, such as a
// flattened OCI image (go-containerregistry's mutate.Extract). It takes the
// kernel from /boot/vmlinux*, /boot/vmlinuz*, /boot/bzImage* or /vmlinuz at
// the root (symlinks are followed inside the tree), and generates the
// initramfs from /lib/modules/<ver> (or /usr/lib/modules/<ver>) if present;
// otherwise a /boot/initrd* or /boot/initramfs* is copied. A shipped initrd
// is ignored when modules are present, since distribution initrds carry
// their own /init, which would shadow banger's agent.
func ImportTar(ctx context.Context, stageDir string, r io.Reader) (Info, error) {
	return importArchive(ctx, stageDir, r, "tar")
}

// importArchive extracts the kernel-related files of a tar stream into a
// scratch directory inside stageDir, then stages them. source prefixes the
// in-tree kernel path in Info.Source.
func importArchive(ctx context.Context, stageDir string, r io.Reader, source string) (Info, error) {
	if err := os.MkdirAll(stageDir, 0o755); err != nil {
		return Info{}, fmt.Errorf("create staging directory: %w", err)
	}
	scratch, err := os.MkdirTemp(stageDir, ".extract-")
	if err != nil {
		return Info{}, fmt.Errorf("create scratch directory: %w", err)
	}
	defer os.RemoveAll(scratch)

	t, err := extractTree(ctx, r, scratch)
	if err != nil {
		return Info{}, err
	}
	return t.stage(ctx, stageDir, source)
}

// extracted is the part of a file tree that may matter for a kernel.
type extracted struct {
	root  string
	files map[string]bool   // slash-separated names of extracted regular files
	links map[string]string // symlink name -> target, for every symlink
	// hardlinks maps an extracted hard link to the file it links to, so
	// both names count as one kernel.
	hardlinks map[string]string
}

// extractTree writes regular files that may be a kernel, an initrd or a
// module into root, under their cleaned names. It never creates symlinks on
// disk, so no entry can be written outside root; symlinks are only recorded.
func extractTree(ctx context.Context, r io.Reader, root string) (*extracted, error) {
	t := &extracted{root: root, files: map[string]bool{}, links: map[string]string{}, hardlinks: map[string]string{}}
	tr := tar.NewReader(r)
	var total int64
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read tar: %w: %w", err, errdefs.ErrInvalidArgument)
		}
		name, err := cleanTarName(hdr.Name)
		if err != nil {
			return nil, err
		}
		if name == "" {
			continue
		}
		switch hdr.Typeflag {
		case tar.TypeSymlink:
			t.links[name] = hdr.Linkname
			delete(t.files, name)
		case tar.TypeLink:
			target, err := cleanTarName(hdr.Linkname)
			if err != nil {
				return nil, err
			}
			if !t.files[target] {
				continue // the target was not wanted, so neither is the link
			}
			dst := t.path(name)
			if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
				return nil, fmt.Errorf("extract %s: %w", name, err)
			}
			os.Remove(dst)
			if err := os.Link(t.path(target), dst); err != nil {
				return nil, fmt.Errorf("extract %s: %w", name, err)
			}
			t.files[name] = true
			t.hardlinks[name] = target
			delete(t.links, name)
		case tar.TypeReg:
			limit, ok := wantedTreeFile(name)
			if !ok {
				continue
			}
			if hdr.Size > limit {
				return nil, fmt.Errorf("%s is %d bytes, more than the %d allowed: %w", name, hdr.Size, limit, errdefs.ErrInvalidArgument)
			}
			if total += hdr.Size; total > maxTreeBytes {
				return nil, fmt.Errorf("kernel files exceed %d bytes: %w", int64(maxTreeBytes), errdefs.ErrInvalidArgument)
			}
			if err := t.write(name, tr, hdr.Size); err != nil {
				return nil, err
			}
			delete(t.links, name)
			delete(t.hardlinks, name)
		}
	}
	return t, nil
}

func (t *extracted) path(name string) string { return filepath.Join(t.root, filepath.FromSlash(name)) }

func (t *extracted) write(name string, r io.Reader, size int64) error {
	dst := t.path(name)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return fmt.Errorf("extract %s: %w", name, err)
	}
	// A later layer's file replaces an earlier one; remove first so a hard
	// link to the old content is not rewritten.
	os.Remove(dst)
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("extract %s: %w", name, err)
	}
	n, err := io.Copy(f, io.LimitReader(r, size))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && n != size {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		return fmt.Errorf("extract %s: %w", name, err)
	}
	t.files[name] = true
	return nil
}

// cleanTarName turns a tar entry name into a clean relative path ("" for
// the root), refusing names that climb out with "..".
func cleanTarName(n string) (string, error) {
	for _, el := range strings.Split(n, "/") {
		if el == ".." {
			return "", fmt.Errorf("tar entry %q escapes the tree: %w", n, errdefs.ErrInvalidArgument)
		}
	}
	c := path.Clean("/" + n)
	return strings.TrimPrefix(c, "/"), nil
}

// wantedTreeFile reports whether a regular file of a tree may be used, and
// its size limit.
func wantedTreeFile(name string) (int64, bool) {
	dir, base := path.Split(name)
	if dir == "boot/" || dir == "" {
		switch {
		case isKernelName(base):
			return MaxKernelSize, true
		case isInitrdName(base):
			return MaxInitrdSize, true
		case dir == "boot/" && strings.HasPrefix(base, "config-"):
			// Says whether the kernel forces module signatures.
			return 16 << 20, true
		}
		return 0, false
	}
	if ver, rest, ok := splitModulePath(name); ok && ver != "" {
		if _, isMod := moduleName(rest); isMod {
			return maxModuleSize, true
		}
		if rest == "modules.builtin" {
			return 16 << 20, true
		}
	}
	return 0, false
}

// splitModulePath splits lib/modules/<ver>/<rest> into ver and rest.
func splitModulePath(name string) (ver, rest string, ok bool) {
	for _, p := range modulePrefixes {
		if r, found := strings.CutPrefix(name, p); found {
			ver, rest, _ = strings.Cut(r, "/")
			return ver, rest, true
		}
	}
	return "", "", false
}

func isKernelName(base string) bool {
	for _, p := range []string{"vmlinux", "vmlinuz", "bzImage"} {
		if base == p || strings.HasPrefix(base, p+"-") {
			return true
		}
	}
	return false
}

func isInitrdName(base string) bool {
	return strings.HasPrefix(base, "initrd") || strings.HasPrefix(base, "initramfs")
}

// resolve follows symlinks from name inside the tree and returns the
// extracted regular file it ends at.
func (t *extracted) resolve(name string) (string, bool) {
	for range 16 {
		if t.files[name] {
			if target, ok := t.hardlinks[name]; ok && t.files[target] {
				return target, true
			}
			return name, true
		}
		target, ok := t.links[name]
		if !ok {
			return "", false
		}
		if !path.IsAbs(target) {
			target = path.Join(path.Dir(name), target)
		}
		c, err := cleanTarName(path.Clean("/" + target))
		if err != nil {
			return "", false
		}
		name = c
	}
	return "", false
}

// candidates returns the distinct files that names matching match (at the
// root or in boot/) resolve to, sorted.
func (t *extracted) candidates(match func(string) bool) []string {
	seen := map[string]bool{}
	var out []string
	consider := func(name string) {
		dir, base := path.Split(name)
		if (dir != "" && dir != "boot/") || !match(base) {
			return
		}
		if r, ok := t.resolve(name); ok && !seen[r] {
			seen[r] = true
			out = append(out, r)
		}
	}
	for n := range t.files {
		consider(n)
	}
	for n := range t.links {
		consider(n)
	}
	slices.Sort(out)
	return out
}

// moduleDirs returns the lib/modules/<ver> directories holding modules,
// as version -> slash-separated directory.
func (t *extracted) moduleDirs() map[string]string {
	dirs := map[string]string{}
	for n := range t.files {
		if ver, rest, ok := splitModulePath(n); ok {
			if _, isMod := moduleName(rest); isMod {
				if old, dup := dirs[ver]; !dup || n < old {
					dirs[ver] = strings.TrimSuffix(n, "/"+rest)
				}
			}
		}
	}
	return dirs
}

// stage picks the kernel, initrd and modules of the tree and stages them.
func (t *extracted) stage(ctx context.Context, stageDir, source string) (Info, error) {
	modDirs := t.moduleDirs()
	kernels := t.candidates(isKernelName)
	if len(kernels) > 1 && len(modDirs) == 1 {
		for v := range modDirs {
			kernels = preferMatching(kernels, func(k string) bool { return strings.Contains(path.Base(k), v) })
		}
	}
	if len(kernels) > 1 {
		// An uncompressed vmlinux boots faster; it wins over a vmlinuz.
		kernels = preferMatching(kernels, func(k string) bool { return strings.HasPrefix(path.Base(k), "vmlinux") })
	}
	switch len(kernels) {
	case 0:
		return Info{}, fmt.Errorf("no kernel found: expected /boot/vmlinux, /boot/vmlinuz-* or /vmlinuz: %w", errdefs.ErrInvalidArgument)
	case 1:
	default:
		return Info{}, fmt.Errorf("several kernels found (%s); cannot tell which to use: %w", strings.Join(kernels, ", "), errdefs.ErrInvalidArgument)
	}
	img, err := stageKernelFile(stageDir, t.path(kernels[0]), "/"+kernels[0])
	if err != nil {
		return Info{}, err
	}
	info := newInfo(img, source+":/"+kernels[0])
	if err := ctx.Err(); err != nil {
		return Info{}, err
	}

	var modDir string
	switch {
	case len(modDirs) == 1:
		for _, d := range modDirs {
			modDir = d
		}
	case len(modDirs) > 1:
		modDir = modDirs[img.version]
		if modDir == "" {
			vers := make([]string, 0, len(modDirs))
			for v := range modDirs {
				vers = append(vers, v)
			}
			slices.Sort(vers)
			return Info{}, fmt.Errorf("modules for several kernels (%s), none matching the kernel's version %q: %w", strings.Join(vers, ", "), img.version, errdefs.ErrInvalidArgument)
		}
	}
	if modDir != "" {
		tree, err := openModuleTree(t.path(modDir))
		if err != nil {
			return Info{}, err
		}
		if err := generateInitrd(ctx, stageDir, tree, &info); err != nil {
			return Info{}, err
		}
		return info, nil
	}
	initrds := t.candidates(isInitrdName)
	if len(initrds) > 1 && img.version != "" {
		initrds = preferMatching(initrds, func(k string) bool { return strings.Contains(path.Base(k), img.version) })
	}
	switch len(initrds) {
	case 0:
	case 1:
		if err := copyInitrd(stageDir, t.path(initrds[0]), "/"+initrds[0]); err != nil {
			return Info{}, err
		}
		info.HasInitrd = true
	default:
		return Info{}, fmt.Errorf("several initrds found (%s); cannot tell which to use: %w", strings.Join(initrds, ", "), errdefs.ErrInvalidArgument)
	}
	return info, nil
}

// preferMatching returns the elements of list that match, or list itself
// when none do.
func preferMatching(list []string, match func(string) bool) []string {
	var out []string
	for _, s := range list {
		if match(s) {
			out = append(out, s)
		}
	}
	if len(out) == 0 {
		return list
	}
	return out
}
