package roothelper

import (
	"fmt"
	"net"
	"os"

	"golang.org/x/sys/unix"

	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/network"
)

// TapFlags are the flags OpenTap attaches with: a tap (Ethernet frames),
// no packet-information prefix, and a virtio-net header on every frame.
// They are what QEMU itself uses when it opens a tap by name; given an
// open file instead (-netdev tap,fd=N) QEMU probes the header with
// TUNGETIFF and uses it when IFF_VNET_HDR is set (offloads on), so the
// file works as is. Firecracker opens taps with the same flags.
const TapFlags = unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR

// OpenTap opens the existing tap name (a banger tap, see
// network.ValidateTapName) through /dev/net/tun with TapFlags and returns
// the file; the caller closes it. It needs root (or CAP_NET_ADMIN, or the
// tap's owner with access to /dev/net/tun) and acts in the calling
// thread's network namespace. It never creates a tap: a missing one is
// errdefs.ErrNotFound.
func OpenTap(name string) (*os.File, error) {
	if err := network.ValidateTapName(name); err != nil {
		return nil, err
	}
	// TUNSETIFF would create a missing device; insist on the one
	// network.CreateTap made, attached to the bridge.
	if _, err := net.InterfaceByName(name); err != nil {
		return nil, fmt.Errorf("open tap %s: %w: %w", name, err, errdefs.ErrNotFound)
	}
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open tap %s: /dev/net/tun: %w", name, err)
	}
	ifr, err := unix.NewIfreq(name)
	if err == nil {
		ifr.SetUint16(TapFlags)
		err = unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr)
	}
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("open tap %s: TUNSETIFF: %w", name, err)
	}
	return os.NewFile(uintptr(fd), "/dev/net/tun:"+name), nil
}
