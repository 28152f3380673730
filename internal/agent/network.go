package agent

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bangervm/banger/internal/agentproto"
)

// Guest network defaults. The guest has no ip binary: links, addresses and
// routes are set over rtnetlink directly.
const (
	defaultInterface = "eth0"
	resolvConfPath   = "/etc/resolv.conf"
	// linkWait bounds the wait for the NIC to appear once its driver is
	// loaded.
	linkWait = 3 * time.Second
)

// configureNetwork brings up lo and, when cfg is not nil, gives the NIC
// its address and default route and writes /etc/resolv.conf. It runs in
// the guest's root (after switch_root). A failed step is returned (all of
// them joined); the caller logs it and boots on.
func configureNetwork(log *slog.Logger, cfg *agentproto.NetworkConfig) error {
	return setupNetwork(log, cfg, resolvConfPath, linkWait)
}

func setupNetwork(log *slog.Logger, cfg *agentproto.NetworkConfig, resolvConf string, wait time.Duration) error {
	nl, err := dialRoute()
	if err != nil {
		return err
	}
	defer nl.close()
	var errs []error
	if err := nl.linkUp("lo"); err != nil {
		errs = append(errs, err)
	}
	if cfg == nil {
		return errors.Join(errs...)
	}
	if cfg.Address != "" {
		errs = append(errs, configureLink(log, nl, cfg, wait))
	}
	if len(cfg.DNS) > 0 {
		if err := writeResolvConf(resolvConf, cfg.DNS); err != nil {
			errs = append(errs, fmt.Errorf("write %s: %w", resolvConf, err))
		}
	}
	return errors.Join(errs...)
}

// configureLink waits for the interface, then sets its address, brings it
// up and adds the default route. Each step replaces what is there, so
// running it again is harmless.
func configureLink(log *slog.Logger, nl *routeSocket, cfg *agentproto.NetworkConfig, wait time.Duration) error {
	name := cfg.Interface
	if name == "" {
		name = defaultInterface
	}
	prefix, err := netip.ParsePrefix(cfg.Address)
	if err != nil {
		return fmt.Errorf("network address %q: %w", cfg.Address, err)
	}
	var gw netip.Addr
	if cfg.Gateway != "" {
		if gw, err = netip.ParseAddr(cfg.Gateway); err != nil {
			return fmt.Errorf("network gateway %q: %w", cfg.Gateway, err)
		}
		if gw.Is4() != prefix.Addr().Is4() {
			return fmt.Errorf("network gateway %s and address %s differ in family", gw, prefix)
		}
	}
	index, err := waitLink(name, wait)
	if err != nil {
		return err
	}
	if err := nl.do(addrMsg(nl.next(), index, prefix)); err != nil {
		return fmt.Errorf("add address %s to %s: %w", prefix, name, err)
	}
	if err := nl.do(linkUpMsg(nl.next(), index)); err != nil {
		return fmt.Errorf("bring up %s: %w", name, err)
	}
	if gw.IsValid() {
		if err := nl.do(defaultRouteMsg(nl.next(), index, gw)); err != nil {
			return fmt.Errorf("add default route via %s on %s: %w", gw, name, err)
		}
	}
	log.Info("network configured", "interface", name, "address", prefix.String(), "gateway", cfg.Gateway)
	return nil
}

// waitLink returns the index of the interface called name, polling until
// it appears or wait has passed (the driver may still be probing).
func waitLink(name string, wait time.Duration) (int, error) {
	deadline := time.Now().Add(wait)
	for {
		ifi, err := net.InterfaceByName(name)
		if err == nil {
			return ifi.Index, nil
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("network interface %s did not appear within %s: %w", name, wait, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// writeResolvConf replaces path (a symlink in many images: the link itself
// is replaced, never written through) with a file naming servers.
func writeResolvConf(path string, servers []string) error {
	var b strings.Builder
	b.WriteString("# Written by banger-agent at boot.\n")
	for _, s := range servers {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return fmt.Errorf("dns server %q: %w", s, err)
		}
		fmt.Fprintf(&b, "nameserver %s\n", a)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".banger-tmp"
	_ = os.Remove(tmp)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	_, err = f.WriteString(b.String())
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
	}
	return err
}

// routeSocket is an rtnetlink socket for request/acknowledge exchanges.
type routeSocket struct {
	fd  int
	seq uint32
}

func dialRoute() (*routeSocket, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("open rtnetlink socket: %w", err)
	}
	tv := unix.NsecToTimeval(int64(2 * time.Second))
	err = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	if err == nil {
		err = unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
	}
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("set up rtnetlink socket: %w", err)
	}
	return &routeSocket{fd: fd}, nil
}

func (s *routeSocket) close() { unix.Close(s.fd) }

func (s *routeSocket) next() uint32 { s.seq++; return s.seq }

func (s *routeSocket) linkUp(name string) error {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return fmt.Errorf("bring up %s: %w", name, err)
	}
	if err := s.do(linkUpMsg(s.next(), ifi.Index)); err != nil {
		return fmt.Errorf("bring up %s: %w", name, err)
	}
	return nil
}

// do sends the request msg (built with NLM_F_ACK) and waits for its
// acknowledgement.
func (s *routeSocket) do(msg []byte) error {
	seq := binary.NativeEndian.Uint32(msg[8:12])
	if err := unix.Sendto(s.fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	buf := make([]byte, 4096)
	for {
		n, _, err := unix.Recvfrom(s.fd, buf, 0)
		if err != nil {
			return fmt.Errorf("read rtnetlink reply: %w", err)
		}
		if done, err := parseAck(buf[:n], seq); done {
			return err
		}
	}
}

// Netlink message layout (see rtnetlink(7)). All of these headers are a
// multiple of 4 bytes, so attributes follow unpadded.
const (
	ifInfoLen  = 16 // struct ifinfomsg
	ifAddrLen  = 8  // struct ifaddrmsg
	rtMsgLen   = 12 // struct rtmsg
	nlAlignTo  = 4
	requestAck = unix.NLM_F_REQUEST | unix.NLM_F_ACK
)

func nlAlign(n int) int { return (n + nlAlignTo - 1) &^ (nlAlignTo - 1) }

// nlMessage is a netlink message of type typ: header, body, attributes.
func nlMessage(typ, flags uint16, seq uint32, body []byte, attrs ...[]byte) []byte {
	b := make([]byte, unix.SizeofNlMsghdr, 64)
	b = append(b, body...)
	for _, a := range attrs {
		b = append(b, a...)
	}
	ne := binary.NativeEndian
	ne.PutUint32(b[0:], uint32(len(b)))
	ne.PutUint16(b[4:], typ)
	ne.PutUint16(b[6:], flags)
	ne.PutUint32(b[8:], seq)
	ne.PutUint32(b[12:], 0) // port id: the kernel
	return b
}

// rtAttr is a route attribute, padded to the netlink alignment.
func rtAttr(typ uint16, data []byte) []byte {
	n := unix.SizeofRtAttr + len(data)
	b := make([]byte, nlAlign(n))
	binary.NativeEndian.PutUint16(b[0:], uint16(n))
	binary.NativeEndian.PutUint16(b[2:], typ)
	copy(b[unix.SizeofRtAttr:], data)
	return b
}

func family(a netip.Addr) byte {
	if a.Is4() {
		return unix.AF_INET
	}
	return unix.AF_INET6
}

// linkUpMsg is RTM_NEWLINK setting IFF_UP on the link index.
func linkUpMsg(seq uint32, index int) []byte {
	body := make([]byte, ifInfoLen)
	body[0] = unix.AF_UNSPEC
	binary.NativeEndian.PutUint32(body[4:], uint32(index))
	binary.NativeEndian.PutUint32(body[8:], unix.IFF_UP)  // flags
	binary.NativeEndian.PutUint32(body[12:], unix.IFF_UP) // change mask
	return nlMessage(unix.RTM_NEWLINK, requestAck, seq, body)
}

// addrMsg is RTM_NEWADDR giving the link index the address p (replacing it
// if present), with the broadcast address for IPv4 and no duplicate
// address detection for IPv6 (the address is usable at once).
func addrMsg(seq uint32, index int, p netip.Prefix) []byte {
	a := p.Addr().Unmap()
	body := make([]byte, ifAddrLen)
	body[0] = family(a)
	body[1] = byte(p.Bits())
	body[3] = unix.RT_SCOPE_UNIVERSE
	binary.NativeEndian.PutUint32(body[4:], uint32(index))
	attrs := [][]byte{rtAttr(unix.IFA_LOCAL, a.AsSlice()), rtAttr(unix.IFA_ADDRESS, a.AsSlice())}
	if a.Is4() && p.Bits() < 31 {
		attrs = append(attrs, rtAttr(unix.IFA_BROADCAST, broadcast(p).AsSlice()))
	}
	if a.Is6() {
		flags := make([]byte, 4)
		binary.NativeEndian.PutUint32(flags, unix.IFA_F_NODAD)
		attrs = append(attrs, rtAttr(unix.IFA_FLAGS, flags))
	}
	return nlMessage(unix.RTM_NEWADDR, requestAck|unix.NLM_F_CREATE|unix.NLM_F_REPLACE, seq, body, attrs...)
}

// broadcast is the last address of the IPv4 prefix p.
func broadcast(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := binary.BigEndian.Uint32(b[:]) | host
	binary.BigEndian.PutUint32(b[:], v)
	return netip.AddrFrom4(b)
}

// defaultRouteMsg is RTM_NEWROUTE for the default route via gw out of the
// link index, in the main table (replacing an existing default route).
func defaultRouteMsg(seq uint32, index int, gw netip.Addr) []byte {
	gw = gw.Unmap()
	body := make([]byte, rtMsgLen)
	body[0] = family(gw)
	body[1] = 0 // dst_len: default
	body[4] = unix.RT_TABLE_MAIN
	body[5] = unix.RTPROT_BOOT
	body[6] = unix.RT_SCOPE_UNIVERSE
	body[7] = unix.RTN_UNICAST
	oif := make([]byte, 4)
	binary.NativeEndian.PutUint32(oif, uint32(index))
	return nlMessage(unix.RTM_NEWROUTE, requestAck|unix.NLM_F_CREATE|unix.NLM_F_REPLACE, seq, body,
		rtAttr(unix.RTA_GATEWAY, gw.AsSlice()), rtAttr(unix.RTA_OIF, oif))
}

// parseAck looks in the netlink messages b for the acknowledgement of
// request seq: done reports whether it was there, err is the error the
// kernel returned for the request.
func parseAck(b []byte, seq uint32) (done bool, err error) {
	ne := binary.NativeEndian
	for len(b) >= unix.SizeofNlMsghdr {
		n := int(ne.Uint32(b[0:]))
		if n < unix.SizeofNlMsghdr || n > len(b) {
			return true, fmt.Errorf("malformed rtnetlink reply")
		}
		typ, mseq := ne.Uint16(b[4:]), ne.Uint32(b[8:])
		if typ == unix.NLMSG_ERROR && mseq == seq {
			if n < unix.SizeofNlMsghdr+4 {
				return true, fmt.Errorf("short rtnetlink error message")
			}
			if code := int32(ne.Uint32(b[unix.SizeofNlMsghdr:])); code != 0 {
				return true, syscall.Errno(-code)
			}
			return true, nil
		}
		b = b[min(nlAlign(n), len(b)):]
	}
	return false, nil
}
