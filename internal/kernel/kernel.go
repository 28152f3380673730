package kernel

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/bangervm/banger/errdefs"
)

// Names of the files in a staged kernel directory.
const (
	VmlinuxFile = "vmlinux"
	BzImageFile = "bzImage"
	InitrdFile  = "initrd.img"
)

// Kernel image formats reported in Info.Format.
const (
	FormatELF     = "elf"
	FormatBzImage = "bzimage"
)

// MaxInitrdSize bounds a user-supplied initrd.
const MaxInitrdSize = 512 << 20

// Info describes a staged kernel.
type Info struct {
	// Version is the kernel release (uname -r), e.g. 6.1.0-28-cloud-amd64,
	// from the modules directory or else from the image; "" if neither
	// says.
	Version string `json:"version"`
	// Format is the format of the source image, FormatELF or
	// FormatBzImage. VmlinuxFile is an ELF either way.
	Format string `json:"format"`
	// PVH reports that the vmlinux has a PVH entry point
	// (XEN_ELFNOTE_PHYS32_ENTRY) and can be booted without a bootloader.
	PVH       bool `json:"pvh"`
	HasInitrd bool `json:"hasInitrd"`
	// Modules lists the modules in the generated initramfs by name, in
	// load order; empty for a user-supplied initrd.
	Modules []string `json:"modules,omitempty"`
	// MissingModules lists wanted modules that are neither shipped nor in
	// modules.builtin: the kernel may lack the feature, or build it in
	// without saying so.
	MissingModules []string `json:"missingModules,omitempty"`
	// Source says where the kernel came from: a file path, or a path
	// inside a .deb or image tree.
	Source        string `json:"source"`
	VmlinuxSHA256 string `json:"vmlinuxSHA256"`
	// Size is the size of VmlinuxFile in bytes.
	Size int64 `json:"size"`
}

// ImportFiles stages a kernel from files on the host: kernelPath is a vmlinux
// or bzImage; initrdPath, if set, is copied as the initrd; modulesDir, if set,
// is a lib/modules/<ver> tree (or the lib/modules directory holding exactly
// one) from which the initramfs is generated. Giving both initrdPath and
// modulesDir is an error.
func ImportFiles(ctx context.Context, stageDir string, kernelPath, initrdPath, modulesDir string) (Info, error) {
	if kernelPath == "" {
		return Info{}, fmt.Errorf("import kernel: no kernel image given: %w", errdefs.ErrInvalidArgument)
	}
	if initrdPath != "" && modulesDir != "" {
		return Info{}, fmt.Errorf("import kernel: give an initrd or a modules directory, not both (banger builds the initrd from the modules): %w", errdefs.ErrInvalidArgument)
	}
	if err := os.MkdirAll(stageDir, 0o755); err != nil {
		return Info{}, fmt.Errorf("create staging directory: %w", err)
	}
	img, err := stageKernelFile(stageDir, kernelPath, kernelPath)
	if err != nil {
		return Info{}, err
	}
	info := newInfo(img, kernelPath)
	if err := ctx.Err(); err != nil {
		return Info{}, err
	}
	switch {
	case initrdPath != "":
		if err := copyInitrd(stageDir, initrdPath, initrdPath); err != nil {
			return Info{}, err
		}
		info.HasInitrd = true
	case modulesDir != "":
		tree, err := openModuleTree(modulesDir)
		if err != nil {
			return Info{}, err
		}
		if err := generateInitrd(ctx, stageDir, tree, &info); err != nil {
			return Info{}, err
		}
	}
	return info, nil
}

func newInfo(img stagedImage, source string) Info {
	return Info{
		Version:       img.version,
		Format:        img.format,
		PVH:           img.pvh,
		Source:        source,
		VmlinuxSHA256: img.sha256,
		Size:          img.size,
	}
}

// generateInitrd writes InitrdFile from tree's modules and records the
// result in info. A tree for another kernel release is refused: its modules
// would not load.
func generateInitrd(ctx context.Context, stageDir string, tree *moduleTree, info *Info) error {
	if info.Version != "" && tree.version != info.Version {
		return fmt.Errorf("modules are for kernel %s but the image is %s: %w", tree.version, info.Version, errdefs.ErrInvalidArgument)
	}
	info.Version = tree.version
	res, err := tree.resolve(ctx, DefaultModules)
	if err != nil {
		return err
	}
	info.MissingModules = res.missing
	if len(res.order) == 0 {
		return nil // everything needed is built in: no initrd at all
	}
	if err := writeInitramfs(filepath.Join(stageDir, InitrdFile), tree, res); err != nil {
		return err
	}
	info.HasInitrd = true
	info.Modules = res.names()
	return nil
}

// initrdMagics are the starts of files the kernel accepts as an initrd: a
// cpio archive (possibly with microcode prepended) or one of the kernel's
// decompressors.
var initrdMagics = [][]byte{
	[]byte("070701"), []byte("070702"),
	{0x1f, 0x8b}, {0x1f, 0x9e}, // gzip
	{0xfd, '7', 'z', 'X', 'Z', 0x00}, // xz
	{0x28, 0xb5, 0x2f, 0xfd},         // zstd
	{0x02, 0x21, 0x4c, 0x18},         // lz4 legacy
	[]byte("BZh"),                    // bzip2
	{0x5d, 0x00, 0x00},               // lzma
	{0x89, 'L', 'Z', 'O'},            // lzo
}

// copyInitrd copies a user-supplied initrd after checking that it looks
// like one; name is the path to show in errors.
func copyInitrd(stageDir, path, name string) error {
	data, err := readLimited(path, name, MaxInitrdSize, "initrd")
	if err != nil {
		return err
	}
	ok := false
	for _, m := range initrdMagics {
		if bytes.HasPrefix(data, m) {
			ok = true
			break
		}
	}
	if !ok {
		return fmt.Errorf("initrd %s is %s; expected a cpio archive, plain or compressed: %w", name, describe(data), errdefs.ErrInvalidArgument)
	}
	return writeNewFile(filepath.Join(stageDir, InitrdFile), data)
}
