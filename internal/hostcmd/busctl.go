package hostcmd

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/bangervm/banger/errdefs"
)

// BusNamePID returns the process id of the owner of name on the D-Bus
// system bus, asking the bus itself (busctl call org.freedesktop.DBus
// GetConnectionUnixProcessID). A question to the bus never starts a
// service, where a call to name would D-Bus-activate it. No system bus, or
// nobody owning name, is errdefs.ErrNotFound.
func BusNamePID(ctx context.Context, name string) (int, error) {
	if name == "" || strings.HasPrefix(name, "-") {
		return 0, fmt.Errorf("bus name %q: %w", name, errdefs.ErrInvalidArgument)
	}
	out, err := Run(ctx, Cmd{
		Name:    "busctl",
		Args:    []string{"--system", "call", "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "GetConnectionUnixProcessID", "s", name},
		Package: "systemd",
	})
	if err != nil {
		if ctx.Err() != nil {
			return 0, err
		}
		return 0, fmt.Errorf("%w: %w", err, errdefs.ErrNotFound)
	}
	return parseBusPID(string(out))
}

// parseBusPID parses busctl's reply to GetConnectionUnixProcessID: "u 1234".
func parseBusPID(out string) (int, error) {
	f := strings.Fields(out)
	if len(f) == 2 && f[0] == "u" {
		if pid, err := strconv.Atoi(f[1]); err == nil && pid > 0 {
			return pid, nil
		}
	}
	return 0, fmt.Errorf("busctl GetConnectionUnixProcessID: unexpected reply %q", strings.TrimSpace(out))
}
