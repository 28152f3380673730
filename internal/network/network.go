// Package network is banger's host networking: one bridge, a tap per VM, an
// IPv4 /24 that overlaps nothing on the host, deterministic guest addresses
// and the iptables rules that give each VM its --net mode.
//
// Everything that needs root is a small fixed set of operations
// (EnsureBridge, CreateTap, DeleteTap, EnsureForwarding, Firewall's
// ApplyVMRules, RemoveVMRules and Teardown, RouteDNS and UnrouteDNS), each
// of which validates every argument with the pure Validate* functions of
// this package first: they are the guard the root helper applies to
// requests. Operations act on
// the network namespace of the calling OS thread.
//
// Forwarding: IPv4 forwarding is one switch for every interface, so when
// banger turns it on it sets the FORWARD chain's policy to DROP, as Docker
// does, and the host forwards only what a rule accepts: BANGER-FORWARD for
// banger's bridge, other tools' rules for theirs (see EnsureForwarding).
//
// VM-to-VM isolation: every tap is an isolated bridge port (ip link set
// dev TAP type bridge_slave isolated on), so the bridge never forwards
// frames between two VMs whatever br_netfilter does, in every mode. In
// public mode banger's subnet is also a dropped destination in
// BANGER-FORWARD, which catches VM traffic routed through the gateway and,
// where br_netfilter is loaded, bridged traffic too.
//
// Without br_netfilter a routed packet does not record which tap it came
// from, so per-VM rules match the bridge plus the VM's source address; a
// guest that forges another VM's address gets that VM's rules (anti-spoofing
// needs bridge-family filtering, not done yet).
package network

import (
	"crypto/sha256"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strings"

	"github.com/bangervm/banger/errdefs"
)

const (
	// DefaultBridge is the bridge name used unless configured otherwise.
	DefaultBridge = "banger0"
	// BridgePrefix starts every bridge name banger may touch.
	BridgePrefix = "banger"
	// TapPrefix starts every tap name banger may touch; the rest is the VM id.
	TapPrefix = "bgr-"
	// maxIfName is IFNAMSIZ-1, the kernel's limit on interface names.
	maxIfName = 15
)

var (
	bridgeRe = regexp.MustCompile(`^banger[a-z0-9]{0,9}$`)
	vmIDRe   = regexp.MustCompile(`^[a-z0-9]{1,11}$`)
)

func invalid(format string, args ...any) error {
	return fmt.Errorf(format+": %w", append(args, errdefs.ErrInvalidArgument)...)
}

// ValidateBridgeName accepts "banger" followed by up to nine lower-case
// letters or digits (at most 15 characters, the kernel's limit).
func ValidateBridgeName(name string) error {
	if !bridgeRe.MatchString(name) {
		return invalid("bridge name %q: want %q followed by at most 9 of [a-z0-9]", name, BridgePrefix)
	}
	return nil
}

// ValidateVMID accepts 1 to 11 lower-case letters or digits, so that the
// tap name TapPrefix+id fits in 15 characters.
func ValidateVMID(id string) error {
	if !vmIDRe.MatchString(id) {
		return invalid("vm id %q: want 1 to 11 of [a-z0-9]", id)
	}
	return nil
}

// TapName returns the tap device name of a VM: "bgr-<id>".
func TapName(vmID string) (string, error) {
	if err := ValidateVMID(vmID); err != nil {
		return "", err
	}
	return TapPrefix + vmID, nil
}

// VMIDFromTap returns the VM id a tap name belongs to, or an error if the
// name is not a banger tap.
func VMIDFromTap(tap string) (string, error) {
	id, ok := strings.CutPrefix(tap, TapPrefix)
	if !ok || ValidateVMID(id) != nil {
		return "", invalid("tap name %q: want %q followed by 1 to 11 of [a-z0-9]", tap, TapPrefix)
	}
	return id, nil
}

// ValidateTapName accepts only names TapName can return.
func ValidateTapName(tap string) error {
	_, err := VMIDFromTap(tap)
	return err
}

// ValidateSubnet accepts a masked IPv4 /24.
func ValidateSubnet(subnet netip.Prefix) error {
	if !subnet.IsValid() || !subnet.Addr().Is4() || subnet.Bits() != 24 || subnet.Masked() != subnet {
		return invalid("subnet %s: want a masked IPv4 /24", subnet)
	}
	return nil
}

// Gateway returns the bridge's address in subnet, .1, with the subnet's
// prefix length.
func Gateway(subnet netip.Prefix) netip.Prefix {
	return netip.PrefixFrom(subnet.Addr().Next(), subnet.Bits())
}

// ValidateGateway accepts only Gateway(subnet) of a valid subnet.
func ValidateGateway(gw netip.Prefix) error {
	if err := ValidateSubnet(gw.Masked()); err != nil {
		return invalid("gateway %s: %v", gw, err)
	}
	if gw != Gateway(gw.Masked()) {
		return invalid("gateway %s: want %s", gw, Gateway(gw.Masked()))
	}
	return nil
}

// MaxIndex is the largest VM index AddrFor accepts: .2 through .254.
const MaxIndex = 252

// AddrFor returns the address of the VM with the given index: .(index+2).
// The caller recycles an index only after the VM is deleted.
func AddrFor(subnet netip.Prefix, index int) (netip.Addr, error) {
	if err := ValidateSubnet(subnet); err != nil {
		return netip.Addr{}, err
	}
	if index < 0 || index > MaxIndex {
		return netip.Addr{}, invalid("vm index %d: want 0..%d", index, MaxIndex)
	}
	b := subnet.Addr().As4()
	b[3] = byte(index + 2)
	return netip.AddrFrom4(b), nil
}

// ValidateVMAddr accepts the addresses AddrFor can return for subnet:
// inside it, neither the network, the gateway nor the broadcast address.
func ValidateVMAddr(subnet netip.Prefix, addr netip.Addr) error {
	if err := ValidateSubnet(subnet); err != nil {
		return err
	}
	if !addr.Is4() || !subnet.Contains(addr) {
		return invalid("vm address %s: not in subnet %s", addr, subnet)
	}
	if last := addr.As4()[3]; last < 2 || last > 254 {
		return invalid("vm address %s: reserved in subnet %s", addr, subnet)
	}
	return nil
}

// MACFor returns the guest MAC address of a VM: stable for its id, locally
// administered and unicast.
func MACFor(vmID string) net.HardwareAddr {
	sum := sha256.Sum256([]byte("banger-mac:" + vmID))
	mac := net.HardwareAddr(sum[:6:6])
	mac[0] = mac[0]&0xfc | 0x02
	return mac
}
