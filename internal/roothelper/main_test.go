package roothelper

import (
	"fmt"
	"io"
	"net/netip"
	"strings"
	"testing"
)

func TestParseFlags(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		allowed string // fmt of options.allowed; "error" when refused
		owner   int
		socket  string
	}{
		{args: []string{"--owner", "1000"}, allowed: "[]", owner: 1000, socket: DefaultSocket},
		{args: []string{"--root-helper", "--owner", "0", "--socket", "/tmp/x.sock"}, allowed: "[]", owner: 0, socket: "/tmp/x.sock"},
		{args: []string{"--owner", "1000", "--allow-subnet", "10.50.0.0/16"}, allowed: "[10.50.0.0/16]", owner: 1000, socket: DefaultSocket},
		{args: []string{"--owner", "1000", "--allow-subnet", "10.50.0.0/16", "--allow-subnet=192.168.7.0/24"}, allowed: "[10.50.0.0/16 192.168.7.0/24]", owner: 1000, socket: DefaultSocket},
		{args: []string{"--owner", "1000", "--allow-subnet", "10.50.0.1/16"}, allowed: "error"}, // not masked
		{args: []string{"--owner", "1000", "--allow-subnet", "10.50.0.0/25"}, allowed: "error"}, // narrower than banger's /24
		{args: []string{"--owner", "1000", "--allow-subnet", "fd00::/64"}, allowed: "error"},
		{args: []string{"--owner", "1000", "--allow-subnet", "lan"}, allowed: "error"},
		{args: []string{"--allow-subnet", "10.50.0.0/16"}, allowed: "error"}, // no owner
		{args: []string{"--owner", "1000", "extra"}, allowed: "error"},
		{args: []string{"--owner", "1000", "--jailer", "/usr/bin/jailer", "--firecracker", "/usr/bin/firecracker", "--vms", "/home/u/.local/state/banger/vms"}, allowed: "[]", owner: 1000, socket: DefaultSocket},
		{args: []string{"--owner", "1000", "--jailer", "/usr/bin/jailer"}, allowed: "error"}, // jailer policy needs all three
		{args: []string{"--owner", "1000", "--jailer", "jailer", "--firecracker", "/usr/bin/firecracker", "--vms", "/srv/j"}, allowed: "error"},
		{args: []string{"--owner", "1000", "--jailer", "/usr/bin/jailer", "--firecracker", "/usr/bin/firecracker", "--vms", "/srv/j/../etc"}, allowed: "error"},
		{args: []string{"--owner", "1000", "--jailer", "/usr/bin/jailer", "--firecracker", "/usr/bin/firecracker", "--vms", "/srv/j", "--templates", "/home/u/.cache/banger/templates"}, allowed: "[]", owner: 1000, socket: DefaultSocket},
		{args: []string{"--owner", "1000", "--templates", "/home/u/.cache/banger/templates"}, allowed: "error"}, // templates only with the jailer
		{args: []string{"--owner", "1000", "--jailer", "/usr/bin/jailer", "--firecracker", "/usr/bin/firecracker", "--vms", "/srv/j", "--templates", "cache/templates"}, allowed: "error"},
		{args: []string{"--owner", "1000", "--jailer", "/usr/bin/jailer", "--firecracker", "/usr/bin/firecracker", "--vms", "/srv/j", "--templates", "/srv/t/../etc"}, allowed: "error"},
	} {
		var stderr strings.Builder
		o, err := parseFlags(tc.args, &stderr)
		if tc.allowed == "error" {
			if err == nil {
				t.Errorf("%q: accepted: %+v", tc.args, o)
			} else if stderr.Len() == 0 {
				t.Errorf("%q: refused without a word", tc.args)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v\n%s", tc.args, err, stderr.String())
			continue
		}
		got := fmt.Sprint(o.allowed)
		if o.allowed == nil {
			got = "[]"
		}
		if got != tc.allowed || o.owner != tc.owner || o.socket != tc.socket {
			t.Errorf("%q: got %+v, want allowed %s owner %d socket %s", tc.args, o, tc.allowed, tc.owner, tc.socket)
		}
	}
}

// TestRunUsage: bad usage exits 2 before anything else (no root needed).
func TestRunUsage(t *testing.T) {
	if code := run([]string{"--owner", "1000", "--allow-subnet", "0.0.0.0/33"}, io.Discard); code != 2 {
		t.Errorf("exit %d, want 2", code)
	}
}

func TestParseAllowedSubnet(t *testing.T) {
	if p, err := ParseAllowedSubnet("172.16.0.0/12"); err != nil || p != netip.MustParsePrefix("172.16.0.0/12") {
		t.Errorf("172.16.0.0/12: %v, %v", p, err)
	}
	if _, err := ParseAllowedSubnet("172.16.0.1/12"); err == nil || !strings.Contains(err.Error(), "masked") {
		t.Errorf("unmasked: %v", err)
	}
}
