package guestdata

import (
	"encoding/hex"
	"errors"
	"io"
	"net/netip"
	"strconv"
	"strings"
)

// ProcNetLimits are ProcNet's defaults: a real /proc/net/tcp line is 150
// bytes, so 16 MiB holds about 100,000 of them; 65,536 sockets is far
// more than a development VM keeps open.
var ProcNetLimits = Limits{Bytes: 16 << 20, Lines: 1 << 17, Entries: 1 << 16}

// TCP states in /proc/net/tcp (include/net/tcp_states.h).
const (
	TCPEstablished = 0x01
	TCPListen      = 0x0A
)

// Socket is one row of /proc/net/{tcp,tcp6,udp,udp6}.
type Socket struct {
	State  uint8
	Local  netip.AddrPort
	Remote netip.Addr
}

// ProcNet reads the sockets of /proc/net/tcp, tcp6, udp or udp6 (what
// names the file in errors): after a header line, "sl local_address
// rem_address st ...", addresses as HEX:PORT. Rows that do not parse are
// skipped. Zero fields of lim take ProcNetLimits'; past a limit the error
// is a *LimitError.
func ProcNet(what string, r io.Reader, lim Limits) ([]Socket, error) {
	lim = orDefault(lim, ProcNetLimits)
	lr := newLineReader(what, r, lim, false)
	var out []Socket
	first := true
	for {
		line, ok, err := lr.next()
		if err != nil {
			return nil, err
		}
		if !ok {
			return out, nil
		}
		if first {
			first = false
			continue
		}
		s, ok := procNetRow(line)
		if !ok {
			continue
		}
		if len(out) == lim.Entries {
			return nil, lr.tooMany()
		}
		out = append(out, s)
	}
}

func procNetRow(line string) (Socket, bool) {
	f := strings.Fields(line)
	if len(f) < 4 {
		return Socket{}, false
	}
	hostHex, portHex, ok := strings.Cut(f[1], ":")
	if !ok {
		return Socket{}, false
	}
	port, err := strconv.ParseUint(portHex, 16, 16)
	if err != nil {
		return Socket{}, false
	}
	addr, err := procAddr(hostHex)
	if err != nil {
		return Socket{}, false
	}
	st, err := strconv.ParseUint(f[3], 16, 8)
	if err != nil {
		return Socket{}, false
	}
	remHex, _, _ := strings.Cut(f[2], ":")
	remote, _ := procAddr(remHex)
	return Socket{State: uint8(st), Local: netip.AddrPortFrom(addr, uint16(port)), Remote: remote}, true
}

// procAddr decodes /proc/net's address: 32-bit words in host (little-
// endian) order.
func procAddr(h string) (netip.Addr, error) {
	b, err := hex.DecodeString(h)
	if err != nil || (len(b) != 4 && len(b) != 16) {
		return netip.Addr{}, errors.New("bad address")
	}
	for i := 0; i < len(b); i += 4 {
		b[i], b[i+1], b[i+2], b[i+3] = b[i+3], b[i+2], b[i+1], b[i]
	}
	a, _ := netip.AddrFromSlice(b)
	return a.Unmap(), nil
}

// InboundConns counts the established connections from outside the guest
// (the remote end not a loopback address) to a port the guest listens on:
// connections someone made to it. Pass the rows of tcp and tcp6 together:
// a server on [::] accepts IPv4 connections as IPv4-mapped IPv6 sockets.
func InboundConns(rows []Socket) int {
	listening := map[uint16]bool{}
	for _, r := range rows {
		if r.State == TCPListen {
			listening[r.Local.Port()] = true
		}
	}
	n := 0
	for _, r := range rows {
		if r.State == TCPEstablished && listening[r.Local.Port()] && !r.Remote.IsLoopback() {
			n++
		}
	}
	return n
}
