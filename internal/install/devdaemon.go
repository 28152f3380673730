package install

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/paths"
)

// DevSockets are where a development daemon of o (one the CLI started on
// first use, before the install) would listen: the runtime directories
// paths.FromEnv picks for o.
func DevSockets(o Owner) []string {
	dirs := []string{
		filepath.Join("/run/user", strconv.Itoa(o.UID), "banger"),
		filepath.Join(os.TempDir(), "banger-"+strconv.Itoa(o.UID)),
	}
	if o.UID == 0 {
		dirs = append(dirs, paths.RootRuntime)
	}
	out := make([]string, len(dirs))
	for i, d := range dirs {
		out[i] = paths.Layout{Runtime: d}.Socket()
	}
	return out
}

// CheckNoDevDaemon refuses to install while a development daemon answers
// on one of sockets: it uses the same state store as the installed daemon
// would, and two daemons on one store would each think they own its VMs.
func CheckNoDevDaemon(ctx context.Context, o Owner, sockets []string) error {
	for _, s := range sockets {
		d := net.Dialer{Timeout: time.Second}
		c, err := d.DialContext(ctx, "unix", s)
		if err != nil {
			continue
		}
		c.Close()
		return fmt.Errorf("a banger daemon of %s, started by banger on first use, answers on %s and uses the data the installed daemon would: stop it first (as %s: banger daemon stop): %w", o.Name, s, o.Name, errdefs.ErrFailedPrecondition)
	}
	return nil
}
