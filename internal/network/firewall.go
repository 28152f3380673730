package network

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"sync"

	"github.com/bangervm/banger/internal/hostcmd"
)

// Modes of a VM's network access.
const (
	// ModePublic (the default): NAT to public addresses only. The guest
	// cannot reach other VMs, the host's networks (RFC 1918, CGNAT,
	// link-local including 169.254.169.254, and every network on the host's
	// interfaces) nor the host itself, except ServicePorts on the gateway.
	ModePublic = "public"
	// ModeFull: plain NAT; the guest reaches anything the host reaches,
	// the host included. Other VMs stay unreachable (isolated bridge ports).
	ModeFull = "full"
)

// Chains banger owns. Each is entered from its built-in chain by a single
// jump rule, inserted first; nothing else in the built-in chains is touched.
const (
	ChainInput       = "BANGER-INPUT"       // filter, from INPUT
	ChainForward     = "BANGER-FORWARD"     // filter, from FORWARD
	ChainPostrouting = "BANGER-POSTROUTING" // nat, from POSTROUTING
)

// DefaultServicePorts are the gateway ports (TCP and UDP) a public VM may
// reach on the host: DNS.
var DefaultServicePorts = []uint16{53}

// PublicBlocked are the destinations a public VM may not reach besides the
// host's own networks: RFC 1918, CGNAT, link-local (cloud metadata),
// loopback, "this network" and multicast.
var PublicBlocked = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("224.0.0.0/4"),
}

// VMRules describes one VM's firewall and NAT rules.
type VMRules struct {
	Tap    string       // the VM's tap, TapPrefix+id; the id tags the rules
	Addr   netip.Addr   // the VM's address, inside Subnet
	Subnet netip.Prefix // banger's subnet; must equal the Firewall's
	Mode   string       // ModePublic or ModeFull
	// Uplink, when set, is the only interface the VM's traffic may leave
	// by; otherwise any interface but the bridge.
	Uplink string
}

// Firewall manages banger's iptables chains for one bridge and subnet. The
// operations act on the calling thread's network namespace and are
// serialized within the process.
type Firewall struct {
	Bridge string
	Subnet netip.Prefix
	// ServicePorts are the TCP and UDP ports of the gateway address that
	// public VMs may reach; nil means DefaultServicePorts.
	ServicePorts []uint16
	// ServicesOnly holds full VMs to ServicePorts on the gateway too,
	// as public ones: the host itself is no destination in any mode.
	// A Kubernetes launcher sets it: its Pod is the "host", and the
	// guest has no business with the launcher beyond banger's services.
	ServicesOnly bool
}

var fwMu sync.Mutex

// rule is one iptables rule: table, chain and the rule specification.
type rule struct {
	table, chain string
	args         []string
}

var ifNameRe = regexp.MustCompile(`^[A-Za-z0-9_.@-]{1,15}$`)

// Validate checks the firewall's configuration.
func (f Firewall) Validate() error {
	if err := ValidateBridgeName(f.Bridge); err != nil {
		return err
	}
	if err := ValidateSubnet(f.Subnet); err != nil {
		return err
	}
	for _, p := range f.ServicePorts {
		if p == 0 {
			return invalid("service port 0")
		}
	}
	return nil
}

// ValidateVMRules checks vm against the firewall: a banger tap, an address
// inside banger's subnet, a known mode and a plausible uplink name.
func (f Firewall) ValidateVMRules(vm VMRules) error {
	if err := f.Validate(); err != nil {
		return err
	}
	if err := ValidateTapName(vm.Tap); err != nil {
		return err
	}
	if vm.Subnet != f.Subnet {
		return invalid("vm %s: subnet %s is not banger's %s", vm.Tap, vm.Subnet, f.Subnet)
	}
	if err := ValidateVMAddr(f.Subnet, vm.Addr); err != nil {
		return err
	}
	if vm.Mode != ModePublic && vm.Mode != ModeFull {
		return invalid("vm %s: network mode %q: want %q or %q", vm.Tap, vm.Mode, ModePublic, ModeFull)
	}
	if vm.Uplink != "" && (!ifNameRe.MatchString(vm.Uplink) || vm.Uplink == f.Bridge || ValidateTapName(vm.Uplink) == nil) {
		return invalid("vm %s: uplink %q", vm.Tap, vm.Uplink)
	}
	return nil
}

func (f Firewall) ports() []uint16 {
	if f.ServicePorts == nil {
		return DefaultServicePorts
	}
	return f.ServicePorts
}

// jumps are the rules in built-in chains that enter banger's chains.
func jumps() []rule {
	c := []string{"-m", "comment", "--comment", "banger"}
	return []rule{
		{"filter", "INPUT", append([]string{"-j", ChainInput}, c...)},
		{"filter", "FORWARD", append([]string{"-j", ChainForward}, c...)},
		{"nat", "POSTROUTING", append([]string{"-j", ChainPostrouting}, c...)},
	}
}

// chainRules returns the fixed rules of banger's chains: head rules come
// before every VM's rules, tail rules after them.
func (f Firewall) chainRules() (head, tail []rule) {
	br := f.Bridge
	est := []string{"-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"}
	head = []rule{
		// Replies to connections the host opened to a VM (ssh).
		{"filter", ChainInput, append([]string{"-i", br}, est...)},
		// Replies to connections a VM opened.
		{"filter", ChainForward, append([]string{"-o", br}, est...)},
	}
	tail = []rule{
		{"filter", ChainInput, []string{"-i", br, "-j", "DROP"}},
		{"filter", ChainForward, []string{"-i", br, "-j", "DROP"}},
		{"filter", ChainForward, []string{"-o", br, "-j", "DROP"}},
	}
	return head, tail
}

func headLen(head []rule, table, chain string) int {
	n := 0
	for _, r := range head {
		if r.table == table && r.chain == chain {
			n++
		}
	}
	return n
}

func vmTag(id string) string { return "banger:vm=" + id }

// vmRuleSet returns a VM's rules in order; hostNets are the host's
// interface networks, blocked in public mode.
func (f Firewall) vmRuleSet(vm VMRules, id string, hostNets []netip.Prefix) []rule {
	br, src := f.Bridge, vm.Addr.String()+"/32"
	tag := []string{"-m", "comment", "--comment", vmTag(id)}
	in := []string{"-i", br, "-s", src}
	var out []string
	if vm.Uplink != "" {
		out = []string{"-o", vm.Uplink}
	}
	cat := func(parts ...[]string) []string { return slices.Concat(parts...) }
	var rs []rule
	if vm.Mode == ModeFull && !f.ServicesOnly {
		rs = append(rs, rule{"filter", ChainInput, cat(in, tag, []string{"-j", "ACCEPT"})})
	} else {
		gw := Gateway(f.Subnet).Addr().String() + "/32"
		for _, p := range f.ports() {
			for _, proto := range []string{"tcp", "udp"} {
				rs = append(rs, rule{"filter", ChainInput, cat(in, []string{"-d", gw, "-p", proto, "-m", proto, "--dport", strconv.Itoa(int(p))}, tag, []string{"-j", "ACCEPT"})})
			}
		}
	}
	switch vm.Mode {
	case ModeFull:
		rs = append(rs, rule{"filter", ChainForward, cat(in, out, tag, []string{"-j", "ACCEPT"})})
	default:
		for _, p := range publicBlocked(f.Subnet, hostNets) {
			rs = append(rs, rule{"filter", ChainForward, cat(in, []string{"-d", p.String()}, tag, []string{"-j", "DROP"})})
		}
		rs = append(rs, rule{"filter", ChainForward, cat(in, out, tag, []string{"-j", "ACCEPT"})})
	}
	if vm.Uplink != "" {
		rs = append(rs, rule{"nat", ChainPostrouting, cat([]string{"-s", src, "-o", vm.Uplink}, tag, []string{"-j", "MASQUERADE"})})
	} else {
		rs = append(rs, rule{"nat", ChainPostrouting, cat([]string{"-s", src, "!", "-o", br}, tag, []string{"-j", "MASQUERADE"})})
	}
	return rs
}

// publicBlocked returns the destinations denied to a public VM: banger's
// own subnet (other VMs through the gateway), PublicBlocked and the host's
// networks not already covered, in a stable order.
func publicBlocked(subnet netip.Prefix, hostNets []netip.Prefix) []netip.Prefix {
	out := []netip.Prefix{subnet}
	out = append(out, PublicBlocked...)
	for _, n := range hostNets {
		n = n.Masked()
		if !n.Addr().Is4() || n.Bits() == 0 {
			continue
		}
		if slices.ContainsFunc(out, func(b netip.Prefix) bool { return b.Bits() <= n.Bits() && b.Contains(n.Addr()) }) {
			continue
		}
		out = append(out, n)
	}
	return out
}

func ipt(ctx context.Context, table string, args ...string) error {
	return hostcmd.IPTables(ctx, table, args...)
}

// ensureChains creates banger's chains with their fixed rules and the jump
// rules, if missing.
func (f Firewall) ensureChains(ctx context.Context) error {
	head, tail := f.chainRules()
	for _, j := range jumps() {
		chain := j.args[1]
		if !hostcmd.IPTablesChainExists(ctx, j.table, chain) {
			if err := ipt(ctx, j.table, "-N", chain); err != nil {
				return fmt.Errorf("create chain %s: %w", chain, err)
			}
			for _, r := range slices.Concat(head, tail) {
				if r.chain == chain {
					if err := ipt(ctx, r.table, slices.Concat([]string{"-A", chain}, r.args)...); err != nil {
						return fmt.Errorf("populate chain %s: %w", chain, err)
					}
				}
			}
		}
		if ipt(ctx, j.table, slices.Concat([]string{"-C", j.chain}, j.args)...) != nil {
			if err := ipt(ctx, j.table, slices.Concat([]string{"-I", j.chain, "1"}, j.args)...); err != nil {
				return fmt.Errorf("jump from %s to %s: %w", j.chain, chain, err)
			}
		}
	}
	return nil
}

// Ensure creates banger's chains, their fixed rules and the jumps to them,
// if missing. The daemon calls it at start, so that a VM's rules are the
// only change its create and delete make to the host's ruleset.
func (f Firewall) Ensure(ctx context.Context) error {
	if err := f.Validate(); err != nil {
		return err
	}
	fwMu.Lock()
	defer fwMu.Unlock()
	if err := f.ensureChains(ctx); err != nil {
		return err
	}
	return ensureGuard(ctx)
}

// ApplyVMRules creates banger's chains if needed and installs vm's rules,
// replacing any rules the VM had (so it also changes a VM's mode). Call
// EnsureForwarding once as well.
func (f Firewall) ApplyVMRules(ctx context.Context, vm VMRules) error {
	if err := f.ValidateVMRules(vm); err != nil {
		return err
	}
	id, _ := VMIDFromTap(vm.Tap)
	var hostNets []netip.Prefix
	if vm.Mode == ModePublic {
		var err error
		if hostNets, err = hostAddrPrefixes(ctx); err != nil {
			return fmt.Errorf("rules for vm %s: %w", id, err)
		}
	}
	fwMu.Lock()
	defer fwMu.Unlock()
	if err := f.ensureChains(ctx); err != nil {
		return fmt.Errorf("rules for vm %s: %w", id, err)
	}
	if err := removeTagged(ctx, id); err != nil {
		return fmt.Errorf("rules for vm %s: %w", id, err)
	}
	head, _ := f.chainRules()
	next := map[string]int{}
	for _, r := range f.vmRuleSet(vm, id, hostNets) {
		if _, ok := next[r.chain]; !ok {
			next[r.chain] = headLen(head, r.table, r.chain) + 1
		}
		pos := strconv.Itoa(next[r.chain])
		next[r.chain]++
		if err := ipt(ctx, r.table, slices.Concat([]string{"-I", r.chain, pos}, r.args)...); err != nil {
			return errors.Join(fmt.Errorf("rules for vm %s: %w", id, err), removeTagged(context.WithoutCancel(ctx), id))
		}
	}
	if err := addGuard(ctx, vm); err != nil {
		ctx := context.WithoutCancel(ctx)
		return errors.Join(err, removeTagged(ctx, id), removeGuard(ctx, vm.Tap))
	}
	return nil
}

// RemoveVMRules removes every rule tagged with vm's id from banger's
// chains. Rules already gone are not an error.
func (f Firewall) RemoveVMRules(ctx context.Context, vm VMRules) error {
	id, err := VMIDFromTap(vm.Tap)
	if err != nil {
		return err
	}
	fwMu.Lock()
	defer fwMu.Unlock()
	if err := errors.Join(removeTagged(ctx, id), removeGuard(ctx, vm.Tap)); err != nil {
		return fmt.Errorf("remove rules for vm %s: %w", id, err)
	}
	return nil
}

func removeTagged(ctx context.Context, id string) error {
	tag := vmTag(id)
	var errs []error
	for _, j := range jumps() {
		chain := j.args[1]
		if !hostcmd.IPTablesChainExists(ctx, j.table, chain) {
			continue
		}
		rules, err := hostcmd.IPTablesRules(ctx, j.table, chain)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, r := range rules {
			if hasComment(r, tag) {
				errs = append(errs, ipt(ctx, j.table, slices.Concat([]string{"-D", chain}, r)...))
			}
		}
	}
	return errors.Join(errs...)
}

func hasComment(args []string, tag string) bool {
	for i := 0; i+1 < len(args); i++ {
		if args[i] == "--comment" && args[i+1] == tag {
			return true
		}
	}
	return false
}

// Teardown removes the jump rules, banger's chains (with every VM's rules)
// and the bridge. It runs every step and joins the errors; what is already
// gone is skipped.
func (f Firewall) Teardown(ctx context.Context) error {
	if err := f.Validate(); err != nil {
		return err
	}
	fwMu.Lock()
	defer fwMu.Unlock()
	var errs []error
	for _, j := range jumps() {
		for ipt(ctx, j.table, slices.Concat([]string{"-C", j.chain}, j.args)...) == nil {
			if err := ipt(ctx, j.table, slices.Concat([]string{"-D", j.chain}, j.args)...); err != nil {
				errs = append(errs, fmt.Errorf("remove jump to %s: %w", j.args[1], err))
				break
			}
		}
	}
	for _, j := range jumps() {
		chain := j.args[1]
		if !hostcmd.IPTablesChainExists(ctx, j.table, chain) {
			continue
		}
		if err := ipt(ctx, j.table, "-F", chain); err != nil {
			errs = append(errs, fmt.Errorf("flush chain %s: %w", chain, err))
			continue
		}
		if err := ipt(ctx, j.table, "-X", chain); err != nil {
			errs = append(errs, fmt.Errorf("delete chain %s: %w", chain, err))
		}
	}
	if err := teardownGuard(ctx); err != nil {
		errs = append(errs, err)
	}
	if err := DeleteBridge(ctx, f.Bridge); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
