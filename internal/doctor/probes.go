package doctor

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"

	"golang.org/x/sys/unix"

	"github.com/bangervm/banger/internal/buildinfo"
	"github.com/bangervm/banger/internal/network"
)

// HostEnv returns an Env whose probes look at this host and this binary.
// The caller fills in the layout, config, daemon and ssh fields.
func HostEnv() Env {
	return Env{
		Version:  buildinfo.Version,
		Commit:   buildinfo.Commit,
		Root:     "/",
		GOARCH:   runtime.GOARCH,
		UID:      os.Getuid(),
		OpenRW:   openRW,
		LookPath: lookPath,
		HostNets: network.HostNets,
		Statfs:   statfs,
	}
}

func openRW(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	return f.Close()
}

// sbinDirs are in root's PATH but often not in a user's; bangerd as root
// and the root helper find ip, iptables and nft there.
var sbinDirs = []string{"/usr/local/sbin", "/usr/sbin", "/sbin"}

func lookPath(file string) (string, error) {
	p, err := exec.LookPath(file)
	if err == nil {
		return p, nil
	}
	for _, d := range sbinDirs {
		if p, err := exec.LookPath(filepath.Join(d, file)); err == nil {
			return p, nil
		}
	}
	return "", err
}

func statfs(path string) (Space, error) {
	var fs unix.Statfs_t
	if err := unix.Statfs(path, &fs); err != nil {
		return Space{}, &os.PathError{Op: "statfs", Path: path, Err: err}
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return Space{}, &os.PathError{Op: "stat", Path: path, Err: err}
	}
	return Space{Free: fs.Bavail * uint64(fs.Bsize), Total: fs.Blocks * uint64(fs.Bsize), Dev: st.Dev}, nil
}
