package cli

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/bangervm/banger/client"
	"github.com/bangervm/banger/internal/paths"
)

// Usage mistakes are caught before the daemon is contacted, exit 2 and
// name the problem.
func TestUsageErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"vm", "run", "-d", "--rm"}, "cannot be combined"},
		{[]string{"vm", "run", "-d", "--", "true"}, "cannot be combined"},
		{[]string{"vm", "run", "a", "b"}, "one PATH at most"},
		{[]string{"vm", "run", "--dry-run"}, "--dry-run needs a PATH"},
		{[]string{"vm", "create", "--disk-size", "lots"}, `size "lots"`},
		{[]string{"vm", "exec", "box"}, "want a VM and a command"},
		{[]string{"vm", "stop"}, "at least one VM"},
		{[]string{"vm", "set", "box"}, "--vcpu or --memory"},
		{[]string{"image", "pull", "x", "--size", "0"}, "positive"},
		{[]string{"image", "register", "--name", "x"}, "--rootfs are required"},
		{[]string{"kernel", "import", "--name", "k"}, "kernel file or --deb"},
		{[]string{"kernel", "import", "k", "--deb", "d", "--name", "k"}, "either a kernel file or --deb"},
		{[]string{"kernel", "import", "--deb", "d", "--initrd", "i", "--name", "k"}, "do not go with --deb"},
		{[]string{"image", "delete"}, "at least one image"},
		{[]string{"--no-such-flag"}, "unknown flag"},
		{[]string{"vm", "create", "--disk-size", "4X"}, `size "4X"`},
		{[]string{"vm", "create", "--disk-size", "1e400"}, `size "1e400"`},
		{[]string{"vm", "create", "--memory", "abc"}, `"--memory" flag: want MiB (512) or`},
		{[]string{"vm", "set", "box", "--memory", "1.5K"}, `"--memory" flag: want MiB`},
		{[]string{"vm", "frobnicate"}, `unknown command "frobnicate" for "banger vm"`},
		{[]string{"vm", "workspace", "frob"}, `unknown command "frob" for "banger vm workspace"`},
		{[]string{"image", "cache", "frob"}, `unknown command "frob" for "banger image cache"`},
		{[]string{"frobnicate"}, `unknown command "frobnicate" for "banger"`},
		{[]string{"vm", "stats"}, "banger vm stats: want one VM"},
		{[]string{"vm", "create", "--label", "owner"}, `--label: label "owner": want key=value`},
		{[]string{"vm", "run", "-d", "--label", "-bad=x"}, `label key "-bad"`},
		{[]string{"vm", "create", "--label", "a=1", "--label", "a=2"}, `label "a" given twice`},
		{[]string{"vm", "create", "--label", "a=has space"}, `value "has space"`},
		{[]string{"vm", "list", "--label", "x"}, "want key=value"},
		{[]string{"vm", "prune", "-f", "--label", "k=" + strings.Repeat("v", 64)}, "at most 63"},
		{[]string{"vm", "create", "--ttl", "500ms"}, "--ttl 500ms: want a positive whole number of seconds"},
		{[]string{"vm", "run", "-d", "--ttl", "-1h"}, "--ttl -1h0m0s"},
		{[]string{"vm", "create", "--ttl", "9000h"}, "at most 8760h"},
		{[]string{"mcp", "--max-vms", "0"}, "--max-vms 0: want at least 1"},
		{[]string{"mcp", "--ttl", "0s"}, "--ttl 0s: want 1s to"},
		{[]string{"mcp", "--net", "wide"}, `--net "wide"`},
		{[]string{"vm", "create", "--ttl", "soon"}, `invalid argument "soon" for "--ttl"`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			io, _, errOut := TestStreams()
			f := &Factory{IO: io, Layout: paths.Under(t.TempDir()), Client: func(context.Context) (*client.Client, error) {
				t.Fatal("contacted the daemon")
				return nil, errors.New("unreachable")
			}}
			code := Run(f, tt.args)
			if code != ExitUsage || !strings.Contains(errOut.String(), tt.want) {
				t.Errorf("exit %d, stderr %q; want %d mentioning %q", code, errOut.String(), ExitUsage, tt.want)
			}
			if strings.Contains(errOut.String(), "banger: banger") {
				t.Errorf("stderr %q: a doubled prefix", errOut.String())
			}
		})
	}
}

// --memory takes MiB, or a size with a unit as --disk-size does.
func TestMemoryFlag(t *testing.T) {
	for in, want := range map[string]int{"512": 512, "512M": 512, "2G": 2048, "1.5G": 1536, "2GiB": 2048, "1048576K": 1024} {
		var m mibFlag
		if err := m.Set(in); err != nil || int(m) != want {
			t.Errorf("--memory %s: %d, %v; want %d MiB", in, m, err, want)
		}
	}
	for _, in := range []string{"abc", "0", "-5", "1.5M", "100K", "4X", ""} {
		var m mibFlag
		if err := m.Set(in); err == nil {
			t.Errorf("--memory %q accepted as %d MiB", in, m)
		}
	}
}
