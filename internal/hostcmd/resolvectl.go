package hostcmd

import (
	"context"
	"fmt"
	"strings"

	"github.com/bangervm/banger/errdefs"
)

// ResolvedBusName is systemd-resolved's name on the system bus.
const ResolvedBusName = "org.freedesktop.resolve1"

// ResolvedPID returns the process id of the systemd-resolved that answers
// on the system bus; errdefs.ErrNotFound when none does.
//
// Why the bus name: resolvectl talks to resolved over exactly that name,
// so its owner is the process our per-link settings reach, and asking the
// bus starts nothing. The alternatives say less: /run/systemd/resolve/
// outlives the service (RuntimeDirectoryPreserve=yes); the unit's state
// needs systemd as PID 1 and systemctl; `resolvectl status` may
// D-Bus-activate a stopped resolved; and /etc/resolv.conf naming 127.0.0.53
// tells what the host's resolver uses, not whether resolved takes
// per-link settings. The pid also lets the caller check that resolved
// lives in its network namespace, where the link named is the same link.
func ResolvedPID(ctx context.Context) (int, error) {
	pid, err := BusNamePID(ctx, ResolvedBusName)
	if err != nil {
		return 0, fmt.Errorf("systemd-resolved: %w", err)
	}
	return pid, nil
}

// ResolvectlArgs returns resolvectl's arguments for verb on link, e.g.
// ("dns", "banger0", "127.0.0.1:42069"). It refuses a link or value that
// resolvectl would read as an option.
func ResolvectlArgs(verb, link string, values ...string) ([]string, error) {
	switch verb {
	case "dns", "domain", "default-route", "revert":
	default:
		return nil, fmt.Errorf("resolvectl %q: not a link setting banger uses: %w", verb, errdefs.ErrInvalidArgument)
	}
	if link == "" || strings.HasPrefix(link, "-") {
		return nil, fmt.Errorf("resolvectl %s: link %q: %w", verb, link, errdefs.ErrInvalidArgument)
	}
	for _, v := range values {
		if v == "" || strings.HasPrefix(v, "-") {
			return nil, fmt.Errorf("resolvectl %s %s: value %q: %w", verb, link, v, errdefs.ErrInvalidArgument)
		}
	}
	return append([]string{verb, link}, values...), nil
}

func resolvectl(ctx context.Context, verb, link string, values ...string) error {
	args, err := ResolvectlArgs(verb, link, values...)
	if err != nil {
		return err
	}
	_, err = Run(ctx, Cmd{Name: "resolvectl", Args: args, Package: "systemd-resolved"})
	return err
}

// ResolvectlDNS sets link's DNS servers (IP or IP:port), replacing any it
// had.
func ResolvectlDNS(ctx context.Context, link string, servers ...string) error {
	return resolvectl(ctx, "dns", link, servers...)
}

// ResolvectlDomain sets link's search and routing domains ("~vm" routes
// queries under vm to link's servers without adding a search domain).
func ResolvectlDomain(ctx context.Context, link string, domains ...string) error {
	return resolvectl(ctx, "domain", link, domains...)
}

// ResolvectlDefaultRoute says whether link's servers may answer queries
// that no link's routing domain matches.
func ResolvectlDefaultRoute(ctx context.Context, link string, on bool) error {
	return resolvectl(ctx, "default-route", link, fmt.Sprint(on))
}

// ResolvectlRevert drops every per-link setting made on link through
// resolvectl (or the bus).
func ResolvectlRevert(ctx context.Context, link string) error {
	return resolvectl(ctx, "revert", link)
}
