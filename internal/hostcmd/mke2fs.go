package hostcmd

import (
	"context"
	"fmt"
	"strconv"
	"strings"
)

// Mke2fsConfig describes an ext4 file system that mke2fs creates in an
// existing image file and fills from a directory (mke2fs -d), so no mount
// and no root are needed.
type Mke2fsConfig struct {
	Dir       string // directory whose contents become the file system
	Output    string // image file; must exist, sized SizeBytes (sparse is fine)
	SizeBytes int64  // file system size; a positive multiple of 4096
	Label     string // volume label, at most 16 bytes; optional
	// Inodes, when positive, is the minimum number of inodes (-N); zero
	// keeps mke2fs's ratio of one inode per 16 KiB.
	Inodes int64
	// UUID, when set, fixes the file system UUID and directory hash seed
	// so that the same input gives the same image layout.
	UUID string
}

// Mke2fsArgs returns mke2fs's argument list for c.
//
// The size is always passed with an explicit "k" suffix: without a suffix
// mke2fs reads it in 1 KiB units whatever the block size is, which once
// made every image four times too small.
func Mke2fsArgs(c Mke2fsConfig) ([]string, error) {
	if c.Dir == "" || c.Output == "" {
		return nil, fmt.Errorf("mke2fs: directory and output are required")
	}
	// mke2fs parses options with getopt, which would take a path that
	// starts with "-" as an option.
	for _, p := range []string{c.Dir, c.Output} {
		if strings.HasPrefix(p, "-") {
			return nil, fmt.Errorf("mke2fs: path %q starts with \"-\"", p)
		}
	}
	if c.SizeBytes <= 0 || c.SizeBytes%4096 != 0 {
		return nil, fmt.Errorf("mke2fs: size %d bytes is not a positive multiple of 4096", c.SizeBytes)
	}
	if len(c.Label) > 16 {
		return nil, fmt.Errorf("mke2fs: label %q is longer than 16 bytes", c.Label)
	}
	if c.Inodes < 0 {
		return nil, fmt.Errorf("mke2fs: negative inode count %d", c.Inodes)
	}
	ext := []string{
		// Leave inode tables and journal unwritten: the file stays sparse
		// and mke2fs takes a fraction of the time. The kernel initialises
		// them lazily if the file system is ever mounted read-write.
		"lazy_itable_init=1",
		"lazy_journal_init=1",
		// The file is fresh and sparse: nothing to discard.
		"nodiscard",
		// Without this the root directory belongs to whoever runs mke2fs.
		"root_owner=0:0",
	}
	if c.UUID != "" {
		ext = append(ext, "hash_seed="+c.UUID)
	}
	args := []string{
		"-t", "ext4",
		// "-T default" stops mke2fs from choosing the "small" profile
		// (1 KiB blocks, an inode per 4 KiB) for images under 512 MiB.
		"-T", "default",
		"-b", "4096",
		"-F", "-q",
		"-E", strings.Join(ext, ","),
	}
	if c.Label != "" {
		args = append(args, "-L", c.Label)
	}
	if c.Inodes > 0 {
		args = append(args, "-N", strconv.FormatInt(c.Inodes, 10))
	}
	if c.UUID != "" {
		args = append(args, "-U", c.UUID)
	}
	args = append(args, "-d", c.Dir, c.Output, strconv.FormatInt(c.SizeBytes/1024, 10)+"k")
	return args, nil
}

// Mke2fs creates the file system described by c.
func Mke2fs(ctx context.Context, c Mke2fsConfig) error {
	args, err := Mke2fsArgs(c)
	if err != nil {
		return err
	}
	_, err = Run(ctx, Cmd{Name: "mke2fs", Args: args, Package: "e2fsprogs"})
	return err
}
