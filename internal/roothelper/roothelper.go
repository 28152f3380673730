// Package roothelper is banger's root helper: a small process running as
// root that performs network.Ops for an unprivileged bangerd, and the
// Client that bangerd uses in place of network.Local.
//
// The helper listens on a unix socket (DefaultSocket). It accepts a
// connection only from root or the install owner (SO_PEERCRED) and
// answers one request at a time per connection. Every request is checked
// with the network package's validators before anything runs: bridges and
// taps only under banger's prefixes, addresses only inside banger's subnet,
// the gateway only .1 of it, every subnet inside the ranges the helper
// allows (--allow-subnet; banger's default ranges otherwise), a tap owned
// only by the caller's own uid (unless the caller is root), a DNS server
// only on loopback or a bridge gateway, and only the fixed set of
// operations below. A refused request gets an error reply of class
// errdefs.ErrInvalidArgument or errdefs.ErrPermissionDenied; the
// connection stays usable. The bridge's subnet is also refused when it
// overlaps a network of another interface (network.CheckSubnetFree, class
// errdefs.ErrFailedPrecondition).
//
// launchJailer starts Firecracker's jailer, which must start as root, for
// the owner's daemon: only the jailer and firecracker binaries the helper
// was started with, as the owner, in a jail the helper builds itself in
// one of the owner's VM directories (JailerPolicy, buildJail): root's from
// the top, the VM's files hard-linked from descriptors the daemon sends
// (after the console log's), reached by the jailer through a mount of the
// helper's so that no directory on its path is the owner's. The jailer's
// pidfd comes with the reply. killJailer sends SIGKILL only to a process
// launchJailer started (recorded with its start time in a state file that
// outlives the helper); removeJail removes a jail whose process exited.
//
// Wire format, both ways: a 4-byte big-endian length, then that many bytes
// of JSON (at most 64 KiB). A request is
//
//	{"op": "createTap", "bridge": "banger0", "gateway": "172.30.0.1/24",
//	 "tap": "bgr-k3x9", "uid": 1000, "server": "127.0.0.1:42069",
//	 "firewall": {"bridge": "banger0", "subnet": "172.30.0.0/24", "servicePorts": [53]},
//	 "vm": {"tap": "bgr-k3x9", "addr": "172.30.0.2", "subnet": "172.30.0.0/24", "mode": "public", "uplink": ""}}
//
// with only the fields its op uses; ops are ensureBridge, ensureForwarding,
// ensureFirewall, createTap, deleteTap, applyVMRules, removeVMRules,
// routeDNS, unrouteDNS, launchJailer, killJailer and removeJail. A reply is {"error": "...", "class": "permission
// denied", "wasOn": true, "policyDrop": true, "fd": true, "routed": true,
// "reason": "..."}:
// class is the errdefs class's text, so the client rebuilds an error that
// errdefs.Is* recognise. A createTap reply carries the open tap (see
// OpenTap) as an SCM_RIGHTS control message on its bytes.
package roothelper

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/engine/firecracker"
	"github.com/bangervm/banger/internal/network"
)

// DefaultSocket is where the helper listens unless told otherwise
// (bangerd --root-helper --socket PATH).
const DefaultSocket = "/run/banger/root.sock"

// The operations, as named on the wire.
const (
	OpEnsureBridge     = "ensureBridge"
	OpEnsureForwarding = "ensureForwarding"
	OpEnsureFirewall   = "ensureFirewall"
	OpCreateTap        = "createTap"
	OpDeleteTap        = "deleteTap"
	OpApplyVMRules     = "applyVMRules"
	OpRemoveVMRules    = "removeVMRules"
	OpRouteDNS         = "routeDNS"
	OpUnrouteDNS       = "unrouteDNS"
	// OpLaunchJailer: see jailer.go.
)

// maxFrame bounds a message's JSON; requests are a few hundred bytes.
const maxFrame = 64 << 10

// maxFDs bounds the descriptors that come with a message: launchJailer's
// console and jail files (see maxJailFiles).
const maxFDs = 1 + maxJailFiles

type request struct {
	Op       string         `json:"op"`
	Bridge   string         `json:"bridge,omitempty"`
	Gateway  netip.Prefix   `json:"gateway,omitzero"`
	Tap      string         `json:"tap,omitempty"`
	UID      int            `json:"uid,omitempty"`
	Server   netip.AddrPort `json:"server,omitzero"`
	Firewall *firewall      `json:"firewall,omitempty"`
	VM       *vmRules       `json:"vm,omitempty"`
	Ours     bool           `json:"ours,omitempty"` // ensureForwarding: see network.EnsureForwarding
	// Jailer is launchJailer's arguments; the console log comes with the
	// request as a descriptor.
	Jailer *firecracker.JailerConfig `json:"jailer,omitempty"`
	// JailFiles are the files launchJailer places in the jail; their
	// descriptors follow the console's, in this order.
	JailFiles []firecracker.JailFile `json:"jailFiles,omitempty"`
	PID       int                    `json:"pid,omitempty"` // killJailer
}

type firewall struct {
	Bridge       string       `json:"bridge"`
	Subnet       netip.Prefix `json:"subnet"`
	ServicePorts []uint16     `json:"servicePorts,omitempty"`
}

type vmRules struct {
	Tap    string       `json:"tap"`
	Addr   netip.Addr   `json:"addr"`
	Subnet netip.Prefix `json:"subnet"`
	Mode   string       `json:"mode"`
	Uplink string       `json:"uplink,omitempty"`
}

type response struct {
	Error string `json:"error,omitempty"`
	Class string `json:"class,omitempty"`
	// WasOn and PolicyDrop are ensureForwarding's network.Forwarding.
	WasOn      bool `json:"wasOn,omitempty"`
	PolicyDrop bool `json:"policyDrop,omitempty"`
	FD         bool `json:"fd,omitempty"`
	// Routed and Reason are routeDNS's network.DNSRoute.
	Routed bool   `json:"routed,omitempty"`
	Reason string `json:"reason,omitempty"`
	// PID is launchJailer's jailer; its pidfd comes as the descriptor.
	PID int `json:"pid,omitempty"`
}

func fromFirewall(f network.Firewall) *firewall {
	return &firewall{Bridge: f.Bridge, Subnet: f.Subnet, ServicePorts: f.ServicePorts}
}

func (f *firewall) network() network.Firewall {
	return network.Firewall{Bridge: f.Bridge, Subnet: f.Subnet, ServicePorts: f.ServicePorts}
}

func fromVMRules(v network.VMRules) *vmRules {
	return &vmRules{Tap: v.Tap, Addr: v.Addr, Subnet: v.Subnet, Mode: v.Mode, Uplink: v.Uplink}
}

func (v *vmRules) network() network.VMRules {
	return network.VMRules{Tap: v.Tap, Addr: v.Addr, Subnet: v.Subnet, Mode: v.Mode, Uplink: v.Uplink}
}

// validate checks req from a peer with uid peerUID before anything runs;
// every subnet it names must lie inside one of the allowed ranges. The
// error names what was refused and is InvalidArgument or
// PermissionDenied.
func validate(req *request, peerUID int, allowed []netip.Prefix, jail *JailerPolicy) error {
	var err error
	switch req.Op {
	case OpEnsureBridge:
		if err = network.ValidateBridgeName(req.Bridge); err == nil {
			if err = network.ValidateGateway(req.Gateway); err == nil {
				err = checkAllowed(req.Gateway.Masked(), allowed)
			}
		}
	case OpEnsureForwarding:
	case OpEnsureFirewall:
		if req.Firewall == nil {
			err = fmt.Errorf("no firewall: %w", errdefs.ErrInvalidArgument)
		} else if err = req.Firewall.network().Validate(); err == nil {
			err = checkAllowed(req.Firewall.Subnet, allowed)
		}
	case OpCreateTap:
		switch {
		case network.ValidateTapName(req.Tap) != nil:
			err = network.ValidateTapName(req.Tap)
		case network.ValidateBridgeName(req.Bridge) != nil:
			err = network.ValidateBridgeName(req.Bridge)
		case req.UID < 0:
			err = fmt.Errorf("tap %s: owner uid %d: %w", req.Tap, req.UID, errdefs.ErrInvalidArgument)
		case peerUID != 0 && req.UID != peerUID:
			err = fmt.Errorf("tap %s: owner uid %d is not the caller's uid %d: %w", req.Tap, req.UID, peerUID, errdefs.ErrPermissionDenied)
		}
	case OpDeleteTap:
		err = network.ValidateTapName(req.Tap)
	case OpApplyVMRules, OpRemoveVMRules:
		if req.Firewall == nil || req.VM == nil {
			err = fmt.Errorf("want firewall and vm: %w", errdefs.ErrInvalidArgument)
		} else if err = req.Firewall.network().ValidateVMRules(req.VM.network()); err == nil {
			err = checkAllowed(req.Firewall.Subnet, allowed)
		}
	case OpRouteDNS:
		if err = network.ValidateBridgeName(req.Bridge); err == nil {
			if err = network.ValidateDNSServer(req.Server); err == nil && !req.Server.Addr().IsLoopback() {
				// A gateway: of a subnet the helper allows.
				err = checkAllowed(netip.PrefixFrom(req.Server.Addr(), 24).Masked(), allowed)
			}
		}
	case OpUnrouteDNS:
		err = network.ValidateBridgeName(req.Bridge)
	case OpLaunchJailer:
		if err = validateJailer(req.Jailer, jail); err == nil {
			err = validateJailFiles(req.JailFiles, jail)
		}
	case OpRemoveJail:
		err = validateJailBase(req.Jailer, jail)
	case OpSealTemplate:
		if err = validateJailBase(req.Jailer, jail); err == nil && !isTemplateJail(req.Jailer, jail) {
			err = fmt.Errorf("chroot base %q is not a template VM's jail (<templates>/new<digits>/jail): %w", req.Jailer.ChrootBase, errdefs.ErrPermissionDenied)
		}
	case OpKillJailer:
		if jail == nil {
			err = validateJailer(nil, nil) // names the missing policy
		} else if req.PID <= 0 {
			err = fmt.Errorf("pid %d: %w", req.PID, errdefs.ErrInvalidArgument)
		}
	default:
		return fmt.Errorf("refused op %q: unknown operation: %w", req.Op, errdefs.ErrInvalidArgument)
	}
	if err != nil {
		return fmt.Errorf("refused %s: %w", req.Op, err)
	}
	return nil
}

// checkAllowed refuses subnet unless it lies inside one of the allowed
// ranges.
func checkAllowed(subnet netip.Prefix, allowed []netip.Prefix) error {
	for _, r := range allowed {
		if r.Bits() <= subnet.Bits() && r.Contains(subnet.Addr()) {
			return nil
		}
	}
	return fmt.Errorf("subnet %s is outside the ranges this root helper allows (%s): set subnet = \"<a /24 inside them>\" in config.toml, or start the helper with --allow-subnet %s: %w",
		subnet, joinPrefixes(allowed), subnet, errdefs.ErrPermissionDenied)
}

func joinPrefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ", ")
}

// ParseAllowedSubnet parses an --allow-subnet value: a masked IPv4 prefix
// of length 24 or shorter (banger's subnets are /24s).
func ParseAllowedSubnet(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil || !p.Addr().Is4() || p.Bits() > 24 || p.Masked() != p {
		return netip.Prefix{}, fmt.Errorf("allowed subnet %q: want a masked IPv4 prefix of length 24 or shorter, e.g. 10.50.0.0/16: %w", s, errdefs.ErrInvalidArgument)
	}
	return p, nil
}

// writeMsg sends v as one frame, with the descriptors of files (nil
// entries skipped) attached.
func writeMsg(c *net.UnixConn, v any, files ...*os.File) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if len(b) > maxFrame {
		return fmt.Errorf("message of %d bytes: %w", len(b), errdefs.ErrInvalidArgument)
	}
	buf := binary.BigEndian.AppendUint32(make([]byte, 0, 4+len(b)), uint32(len(b)))
	buf = append(buf, b...)
	var fds []int
	for _, f := range files {
		if f != nil {
			fds = append(fds, int(f.Fd()))
		}
	}
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	n, _, err := c.WriteMsgUnix(buf, oob, nil)
	if err == nil && n < len(buf) {
		_, err = c.Write(buf[n:])
	}
	return err
}

var errProtocol = errors.New("protocol error")

// readMsg reads one frame into v and returns the descriptors that came
// with it; the caller owns them. It returns io.EOF if the peer closed the
// connection between messages.
func readMsg(c *net.UnixConn, v any) (files []*os.File, err error) {
	defer func() {
		if err != nil {
			for _, f := range files {
				f.Close()
			}
			files = nil
		}
	}()
	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(4*maxFDs))
	var got []byte
	for {
		n, oobn, flags, _, rerr := c.ReadMsgUnix(buf, oob)
		n, oobn = max(n, 0), max(oobn, 0)
		if oobn > 0 {
			fs, perr := parseRights(oob[:oobn])
			files = append(files, fs...)
			if perr != nil {
				return files, perr
			}
		}
		if flags&unix.MSG_CTRUNC != 0 {
			return files, fmt.Errorf("control message truncated: %w", errProtocol)
		}
		got = append(got, buf[:n]...)
		if rerr != nil || n == 0 {
			if len(got) == 0 && (rerr == nil || errors.Is(rerr, io.EOF)) {
				return files, io.EOF
			}
			if rerr == nil {
				rerr = io.ErrUnexpectedEOF
			}
			return files, rerr
		}
		if len(got) < 4 {
			continue
		}
		size := int(binary.BigEndian.Uint32(got))
		if size > maxFrame {
			return files, fmt.Errorf("message of %d bytes: %w", size, errProtocol)
		}
		if len(got) < 4+size {
			continue
		}
		if len(got) > 4+size {
			return files, fmt.Errorf("data after message: %w", errProtocol)
		}
		dec := json.NewDecoder(bytes.NewReader(got[4:]))
		dec.DisallowUnknownFields()
		if err := dec.Decode(v); err != nil {
			return files, fmt.Errorf("decode message: %w: %w", err, errProtocol)
		}
		return files, nil
	}
}

func parseRights(oob []byte) ([]*os.File, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("control message: %w: %w", err, errProtocol)
	}
	var files []*os.File
	var errs []error
	for _, m := range msgs {
		fds, err := unix.ParseUnixRights(&m)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, fd := range fds {
			files = append(files, os.NewFile(uintptr(fd), "roothelper-fd"))
		}
	}
	if len(errs) > 0 {
		return files, fmt.Errorf("control message: %w: %w", errors.Join(errs...), errProtocol)
	}
	return files, nil
}
