package network

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"time"

	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/hostcmd"
)

// DNSDomain is the one domain RouteDNS routes. It is fixed here, not
// chosen by the caller, so that the root helper can never redirect the
// host's queries for any other name.
const DNSDomain = "vm"

// DNSRoute says what RouteDNS did.
type DNSRoute struct {
	// Routed is true when systemd-resolved now sends queries for names
	// under DNSDomain to banger's DNS server.
	Routed bool
	// Reason says why not, when Routed is false: no systemd-resolved here,
	// so the user has to point the host's resolver at the server.
	Reason string
}

// ValidateDNSServer accepts the addresses RouteDNS may point the host's
// resolver at: a port on a loopback address (where bangerd's DNS server
// listens by default) or on a bridge gateway (.1 of an IPv4 /24). Anything
// else would let the caller send the host's .vm queries off the machine.
func ValidateDNSServer(server netip.AddrPort) error {
	a := server.Addr()
	if !server.IsValid() || server.Port() == 0 {
		return invalid("dns server %q: want IP:port", server)
	}
	if a.IsLoopback() {
		return nil
	}
	if !a.Is4() || ValidateGateway(netip.PrefixFrom(a, 24)) != nil {
		return invalid("dns server %s: want a loopback address or banger's bridge gateway (.1)", server)
	}
	return nil
}

// RouteDNS makes the host's resolver send queries for names under
// DNSDomain to server, through bridge's per-link settings in
// systemd-resolved: no default route (so no other query goes there), the
// routing domain ~vm, and server. It is idempotent. A server that is not
// loopback must be bridge's own address. Where no systemd-resolved runs in
// the calling thread's network namespace it does nothing and says why.
//
// resolved forgets a link's settings when the link goes away; the bridge
// outlives the daemon, so the daemon calls UnrouteDNS when it stops.
func RouteDNS(ctx context.Context, bridge string, server netip.AddrPort) (DNSRoute, error) {
	if err := ValidateBridgeName(bridge); err != nil {
		return DNSRoute{}, err
	}
	if err := ValidateDNSServer(server); err != nil {
		return DNSRoute{}, err
	}
	ok, err := linkExists(ctx, bridge)
	if err != nil {
		return DNSRoute{}, fmt.Errorf("route dns: bridge %s: %w", bridge, err)
	}
	if !ok {
		return DNSRoute{}, fmt.Errorf("route dns: bridge %s does not exist (bangerd creates it first): %w", bridge, errdefs.ErrFailedPrecondition)
	}
	if a := server.Addr(); !a.IsLoopback() {
		if err := checkOnLink(ctx, bridge, a); err != nil {
			return DNSRoute{}, err
		}
	}
	if why := resolvedHere(ctx); why != "" {
		return DNSRoute{Reason: why}, nil
	}
	// Default route off first and the server last: a link with servers
	// and no routing domain yet would, for a moment, take every query
	// of the host.
	steps := []func() error{
		func() error { return hostcmd.ResolvectlDefaultRoute(ctx, bridge, false) },
		func() error { return hostcmd.ResolvectlDomain(ctx, bridge, "~"+DNSDomain) },
		func() error { return hostcmd.ResolvectlDNS(ctx, bridge, server.String()) },
	}
	for _, step := range steps {
		if err := step(); err != nil {
			// Leave nothing half set.
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), resolvedTimeout)
			defer cancel()
			return DNSRoute{}, errors.Join(fmt.Errorf("route .%s through systemd-resolved on %s: %w", DNSDomain, bridge, err), hostcmd.ResolvectlRevert(rctx, bridge))
		}
	}
	return DNSRoute{Routed: true}, nil
}

// UnrouteDNS reverts bridge's per-link settings in systemd-resolved. A
// missing bridge (its settings went with it) or no systemd-resolved here
// is not an error.
func UnrouteDNS(ctx context.Context, bridge string) error {
	if err := ValidateBridgeName(bridge); err != nil {
		return err
	}
	if ok, err := linkExists(ctx, bridge); err != nil || !ok {
		return err
	}
	if resolvedHere(ctx) != "" {
		return nil
	}
	if err := hostcmd.ResolvectlRevert(ctx, bridge); err != nil {
		return fmt.Errorf("revert systemd-resolved settings of %s: %w", bridge, err)
	}
	return nil
}

// resolvedTimeout bounds the probe for systemd-resolved and a revert after
// a failure; each is one D-Bus round trip.
const resolvedTimeout = 10 * time.Second

// resolvedHere returns "" when systemd-resolved runs in the calling
// thread's network namespace, else why it cannot be used. resolvectl names
// links by index, and an index means another link in another namespace:
// a daemon in a network namespace must not configure the host's resolver.
func resolvedHere(ctx context.Context) string {
	ctx, cancel := context.WithTimeout(ctx, resolvedTimeout)
	defer cancel()
	pid, err := hostcmd.ResolvedPID(ctx)
	if err != nil {
		return fmt.Sprintf("systemd-resolved is not running (%v)", err)
	}
	ours, err := os.Readlink("/proc/thread-self/ns/net")
	if err != nil {
		return fmt.Sprintf("cannot tell this process's network namespace: %v", err)
	}
	theirs, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid))
	if err != nil {
		return fmt.Sprintf("cannot tell the network namespace of systemd-resolved (pid %d): %v", pid, err)
	}
	if ours != theirs {
		return fmt.Sprintf("systemd-resolved (pid %d) runs in another network namespace (%s, not %s)", pid, theirs, ours)
	}
	return ""
}

// checkOnLink refuses addr unless it is an address of link.
func checkOnLink(ctx context.Context, link string, addr netip.Addr) error {
	var links []struct {
		AddrInfo []struct {
			Local string `json:"local"`
		} `json:"addr_info"`
	}
	if err := hostcmd.IPJSON(ctx, &links, "addr", "show", "dev", link); err != nil {
		return fmt.Errorf("addresses of %s: %w", link, err)
	}
	for _, l := range links {
		for _, a := range l.AddrInfo {
			if got, err := netip.ParseAddr(a.Local); err == nil && got == addr {
				return nil
			}
		}
	}
	return invalid("dns server address %s: not an address of %s", addr, link)
}
