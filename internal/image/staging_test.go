package image

import (
	"testing"

	"golang.org/x/sys/unix"

	"github.com/bangervm/banger/internal/testutil"
)

// TestStagingDirSpreads checks that staging trees are placed away from
// their parent on ext4: the parent carries the Orlov top-directory flag.
func TestStagingDirSpreads(t *testing.T) {
	s, l := newTestStore(t)
	var fs unix.Statfs_t
	if err := unix.Statfs(l.Tmp(), &fs); err != nil {
		t.Fatal(err)
	}
	if fs.Type != unix.EXT4_SUPER_MAGIC {
		testutil.NotApplicable(t, "%s is not on ext4 (TMPDIR)", l.Tmp())
	}
	if _, err := s.stagingDir("pull"); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Open(l.Tmp(), unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	flags, err := unix.IoctlGetInt(fd, unix.FS_IOC_GETFLAGS)
	if err != nil {
		t.Fatal(err)
	}
	if flags&fsTopdirFlag == 0 {
		t.Errorf("%s has flags %#x, want FS_TOPDIR_FL", l.Tmp(), flags)
	}
}
