package network

import (
	"encoding/binary"
	"fmt"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// ipv4DevconfForwarding is IPV4_DEVCONF_FORWARDING, the index of the
// forwarding switch among an interface's IPv4 settings (IFLA_INET_CONF).
const ipv4DevconfForwarding = 1

// SetLinkForwarding turns IPv4 forwarding on or off for one interface of
// the calling thread's network namespace, over rtnetlink (RTM_SETLINK,
// IFLA_AF_SPEC → AF_INET → IFLA_INET_CONF), the way the kernel's
// inet_set_link_af takes it. The kernel routes a packet onward only if
// forwarding is on for the interface it came in by, so turning it on for
// banger's bridge and the uplink alone makes the namespace forward
// between those two and nowhere else. It needs only CAP_NET_ADMIN in the
// namespace: no writable /proc/sys, which an unprivileged container lacks
// (a Kubernetes launcher Pod), and net.ipv4.ip_forward stays as it was.
func SetLinkForwarding(name string, on bool) error {
	if !ifNameRe.MatchString(name) {
		return invalid("interface name %q", name)
	}
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return fmt.Errorf("ip forwarding on %s: %w", name, err)
	}
	var v uint32
	if on {
		v = 1
	}
	if err := setlink(ifi.Index, linkForwardingAttr(v)); err != nil {
		return fmt.Errorf("ip forwarding on %s: %w", name, err)
	}
	return nil
}

// nlattr renders one netlink attribute: length, type, value, padded to 4
// bytes.
func nlattr(typ uint16, val []byte) []byte {
	b := make([]byte, unix.SizeofRtAttr, unix.NLA_ALIGNTO*((unix.SizeofRtAttr+len(val)+unix.NLA_ALIGNTO-1)/unix.NLA_ALIGNTO))
	binary.NativeEndian.PutUint16(b[0:2], uint16(unix.SizeofRtAttr+len(val)))
	binary.NativeEndian.PutUint16(b[2:4], typ)
	b = append(b, val...)
	return b[:cap(b)]
}

// linkForwardingAttr is IFLA_AF_SPEC { AF_INET { IFLA_INET_CONF {
// IPV4_DEVCONF_FORWARDING: v } } }.
func linkForwardingAttr(v uint32) []byte {
	val := binary.NativeEndian.AppendUint32(nil, v)
	conf := nlattr(unix.IFLA_INET_CONF|unix.NLA_F_NESTED, nlattr(ipv4DevconfForwarding, val))
	return nlattr(unix.IFLA_AF_SPEC|unix.NLA_F_NESTED, nlattr(unix.AF_INET|unix.NLA_F_NESTED, conf))
}

// setlink sends RTM_SETLINK for interface index with attrs and waits for
// the kernel's acknowledgement.
func setlink(index int, attrs []byte) error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("netlink socket: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("netlink bind: %w", err)
	}
	msg := make([]byte, unix.SizeofNlMsghdr+unix.SizeofIfInfomsg)
	binary.NativeEndian.PutUint16(msg[4:6], unix.RTM_SETLINK)
	binary.NativeEndian.PutUint16(msg[6:8], unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	binary.NativeEndian.PutUint32(msg[8:12], 1) // sequence
	ifi := msg[unix.SizeofNlMsghdr:]
	ifi[0] = unix.AF_UNSPEC
	binary.NativeEndian.PutUint32(ifi[4:8], uint32(index))
	msg = append(msg, attrs...)
	binary.NativeEndian.PutUint32(msg[0:4], uint32(len(msg)))
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("netlink send: %w", err)
	}
	buf := make([]byte, 4096)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return fmt.Errorf("netlink receive: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return fmt.Errorf("netlink reply: %w", err)
		}
		for _, m := range msgs {
			if m.Header.Type != unix.NLMSG_ERROR || m.Header.Seq != 1 {
				continue
			}
			if len(m.Data) < 4 {
				return fmt.Errorf("netlink reply: short error message")
			}
			if errno := int32(binary.NativeEndian.Uint32(m.Data[0:4])); errno != 0 {
				return unix.Errno(-errno)
			}
			return nil
		}
	}
}
