package network

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/bangervm/banger/internal/hostcmd"
)

// The guard pins every VM to its own addresses at the bridge, before any
// routing or iptables rule sees its traffic. The per-address iptables
// rules alone trust a packet's source: a public VM that sent from a full
// VM's address would get the full VM's rights, and one that took another
// VM's MAC would teach the bridge to send it that VM's frames. So each
// frame from a banger tap must carry the tap's MAC and, for IPv4 and ARP,
// the VM's address; anything else (IPv6, VLAN tags, other ethertypes) is
// dropped. IPv6 is not offered to guests; dropping it here also keeps
// them off the host's link-local addresses on the bridge.
//
// It is an nftables table of the bridge family, entered only by frames
// from interfaces named TapPrefix*, with two sets keyed by tap name; a
// VM's create adds its elements and its delete removes them, so the rules
// themselves never change while VMs come and go.
const (
	// GuardTable is the guard's nftables table, of family bridge.
	GuardTable  = "banger"
	guardFamily = "bridge"
	guardAddrs  = "vm_addrs" // ifname . ipv4_addr
	guardMACs   = "vm_macs"  // ifname . ether_addr
)

// guardScript creates the guard table. A tap without elements in both
// sets (created, but its VM's rules not yet applied) passes nothing.
func guardScript() string {
	return fmt.Sprintf(`table %[1]s %[2]s {
	set %[3]s { type ifname . ipv4_addr; }
	set %[4]s { type ifname . ether_addr; }
	chain guard {
		type filter hook prerouting priority filter; policy accept;
		iifname != "%[5]s*" accept
		iifname . ether saddr != @%[4]s drop
		ether type arp iifname . arp saddr ether != @%[4]s drop
		ether type arp iifname . arp saddr ip != @%[3]s drop
		ether type ip iifname . ip saddr != @%[3]s drop
		ether type != { ip, arp } drop
	}
}
`, guardFamily, GuardTable, guardAddrs, guardMACs, TapPrefix)
}

// ensureGuard creates the guard table if it is missing.
func ensureGuard(ctx context.Context) error {
	if hostcmd.NFTTableExists(ctx, guardFamily, GuardTable) {
		return nil
	}
	if err := hostcmd.NFT(ctx, guardScript()); err != nil {
		return fmt.Errorf("create nftables table %s %s: %w", guardFamily, GuardTable, err)
	}
	return nil
}

// guardElems renders the set elements of tap with addr and mac.
func guardElems(verb, tap string, addr netip.Addr, mac net.HardwareAddr) string {
	return fmt.Sprintf("%[1]s element %[2]s %[3]s %[4]s { \"%[6]s\" . %[7]s }\n%[1]s element %[2]s %[3]s %[5]s { \"%[6]s\" . %[8]s }\n",
		verb, guardFamily, GuardTable, guardAddrs, guardMACs, tap, addr, mac)
}

// addGuard lets vm's tap pass frames from its MAC (MACFor its id) and
// address, replacing what the tap was allowed before.
func addGuard(ctx context.Context, vm VMRules) error {
	id, err := VMIDFromTap(vm.Tap)
	if err != nil {
		return err
	}
	if err := ensureGuard(ctx); err != nil {
		return err
	}
	if err := unpin(ctx, vm.Tap); err != nil {
		return err
	}
	if err := hostcmd.NFT(ctx, guardElems("add", vm.Tap, vm.Addr, MACFor(id))); err != nil {
		return fmt.Errorf("pin vm %s to its addresses: %w", id, err)
	}
	return nil
}

// removeGuard removes every element of tap from the guard's sets, so the
// tap passes nothing. A missing table or element is not an error.
func removeGuard(ctx context.Context, tap string) error {
	if !hostcmd.NFTTableExists(ctx, guardFamily, GuardTable) {
		return nil
	}
	return unpin(ctx, tap)
}

// unpin removes every element of tap from the guard's sets, which must
// exist.
func unpin(ctx context.Context, tap string) error {
	var script strings.Builder
	for _, set := range []string{guardAddrs, guardMACs} {
		elems, err := hostcmd.NFTSetElems(ctx, guardFamily, GuardTable, set)
		if err != nil {
			return err
		}
		for _, e := range elems {
			if len(e) != 2 || e[0] != tap {
				continue
			}
			// Re-render what nft listed rather than pasting it back:
			// only a parsed address or MAC goes into the script.
			var val string
			if a, err := netip.ParseAddr(e[1]); err == nil && set == guardAddrs {
				val = a.String()
			} else if m, err := net.ParseMAC(e[1]); err == nil && set == guardMACs {
				val = m.String()
			} else {
				return fmt.Errorf("set %s: unexpected element %q", set, e)
			}
			fmt.Fprintf(&script, "delete element %s %s %s { \"%s\" . %s }\n", guardFamily, GuardTable, set, tap, val)
		}
	}
	if script.Len() == 0 {
		return nil
	}
	if err := hostcmd.NFT(ctx, script.String()); err != nil {
		return fmt.Errorf("unpin tap %s: %w", tap, err)
	}
	return nil
}

// teardownGuard deletes the guard table, if present.
func teardownGuard(ctx context.Context) error {
	if !hostcmd.NFTTableExists(ctx, guardFamily, GuardTable) {
		return nil
	}
	if err := hostcmd.NFT(ctx, fmt.Sprintf("delete table %s %s\n", guardFamily, GuardTable)); err != nil {
		return fmt.Errorf("delete nftables table %s %s: %w", guardFamily, GuardTable, err)
	}
	return nil
}
