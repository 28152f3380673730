package image

import (
	"golang.org/x/sys/unix"
)

// fsTopdirFlag is FS_TOPDIR_FL (chattr +T), which x/sys/unix lacks.
const fsTopdirFlag = 0x00020000

// spreadSubdirs marks dir as the top of directory hierarchies (chattr +T):
// ext4 then places each new subdirectory, with the files created in it, in
// a block group of its own (the Orlov allocator's rule for top-level
// directories) instead of next to dir. A staging tree then does not land
// among the inodes that the last pull's staging tree, or anything else
// near dir, freed. On ext4 without a journal, which skips every inode
// freed in the last minutes, creating a file next to thousands of those
// costs up to a millisecond, and a pull creates thousands of files.
// Other file systems refuse or ignore the flag; that costs nothing.
func spreadSubdirs(dir string) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return
	}
	defer unix.Close(fd)
	flags, err := unix.IoctlGetInt(fd, unix.FS_IOC_GETFLAGS)
	if err != nil || flags&fsTopdirFlag != 0 {
		return
	}
	_ = unix.IoctlSetPointerInt(fd, unix.FS_IOC_SETFLAGS, flags|fsTopdirFlag)
}
