package roothelper

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/hostcmd"
	"github.com/bangervm/banger/internal/network"
	"github.com/bangervm/banger/internal/network/nettest"
)

// startHelperIn runs the root helper (Main, with network.Local) as a child
// process inside namespace ns, so that every operation it performs, and
// every tool it runs, is confined there. It returns the socket path; the
// helper is stopped with SIGTERM when the test ends.
func startHelperIn(t *testing.T, ns string) string {
	t.Helper()
	return startHelper(t, exec.Command("ip", "netns", "exec", ns, os.Args[0], "-test.run=^TestHelperProcess$"))
}

// startHelper runs the root helper as cmd, a command that runs this test
// binary's TestHelperProcess, and returns its socket path; the helper is
// stopped with SIGTERM when the test ends.
func startHelper(t *testing.T, cmd *exec.Cmd) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "run", "root.sock")
	if cmd.Env == nil {
		cmd.Env = os.Environ()
	}
	cmd.Env = append(cmd.Env, envHelper+"=serve", envSocket+"="+sock)
	var logs bytes.Buffer
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("helper exited: %v\n%s", err, logs.String())
			}
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			t.Errorf("helper did not stop on SIGTERM\n%s", logs.String())
			return
		}
		if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("socket left behind: %v", err)
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.Dial("unix", sock)
		if err == nil {
			c.Close()
			return sock
		}
		select {
		case err := <-done:
			t.Fatalf("helper exited: %v\n%s", err, logs.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("helper not listening: %v\n%s", err, logs.String())
		}
	}
}

func iptablesSave(t *testing.T, ns string) string {
	t.Helper()
	var out string
	nettest.Do(t, ns, func() {
		var err error
		if out, err = hostcmd.IPTablesSave(context.Background()); err != nil {
			t.Fatal(err)
		}
	})
	return out
}

// tapOf returns the name of the tap f is attached to and its flags.
func tapOf(f *os.File) (string, uint16, error) {
	ifr, err := unix.NewIfreq("")
	if err != nil {
		return "", 0, err
	}
	raw, err := f.SyscallConn()
	if err != nil {
		return "", 0, err
	}
	var ierr error
	if err := raw.Control(func(fd uintptr) { ierr = unix.IoctlIfreq(int(fd), unix.TUNGETIFF, ifr) }); err != nil {
		return "", 0, err
	}
	return ifr.Name(), ifr.Uint16(), ierr
}

// TestNetnsRoundTrip runs the helper with network.Local in a namespace the
// test creates and drives it through the Client, as bangerd would.
func TestNetnsRoundTrip(t *testing.T) {
	nettest.Require(t)
	ns := nettest.NewNS(t)
	sock := startHelperIn(t, ns)
	c := New(sock)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	const (
		bridge = "bangerrh0"
		tap    = "bgr-rh1"
	)
	subnet := netip.MustParsePrefix("172.30.77.0/24")
	fw := network.Firewall{Bridge: bridge, Subnet: subnet}
	vm := network.VMRules{Tap: tap, Addr: netip.MustParseAddr("172.30.77.2"), Subnet: subnet, Mode: network.ModePublic}

	if err := c.EnsureBridge(ctx, bridge, network.Gateway(subnet)); err != nil {
		t.Fatal(err)
	}
	if out := nettest.MustIP(t, ns, "-o", "addr", "show", "dev", bridge); !strings.Contains(out, "172.30.77.1/24") {
		t.Fatalf("bridge address: %s", out)
	}
	if st, err := c.EnsureForwarding(ctx, false); err != nil || st.WasOn || !st.PolicyDrop {
		t.Fatalf("EnsureForwarding = %+v, %v; want off before, then on with the FORWARD policy DROP", st, err)
	}
	if st, err := c.EnsureForwarding(ctx, false); err != nil || !st.WasOn || st.PolicyDrop {
		t.Fatalf("EnsureForwarding again = %+v, %v; want on, policy untouched", st, err)
	}
	if err := c.EnsureFirewall(ctx, fw); err != nil {
		t.Fatal(err)
	}
	// What the helper set up, recorded beside its socket for a
	// daemon-less uninstall.
	record := filepath.Join(filepath.Dir(sock), network.SetupFile)
	if s, err := network.ReadSetup(record); err != nil || !reflect.DeepEqual(s, network.Setup{Bridges: []network.Bridge{{Name: bridge, Subnet: subnet}}, Forwarding: true}) {
		t.Errorf("recorded set-up: %+v, %v; want %s, %s, forwarding turned on", s, err, bridge, subnet)
	}
	// The owner changes the bridge in config.toml and restarts: the
	// record keeps the first bridge, which uninstall must remove too.
	other := network.Bridge{Name: "bangerrh9", Subnet: netip.MustParsePrefix("172.30.78.0/24")}
	if err := c.EnsureBridge(ctx, other.Name, network.Gateway(other.Subnet)); err != nil {
		t.Fatal(err)
	}
	if s, err := network.ReadSetup(record); err != nil || !reflect.DeepEqual(s.Bridges, []network.Bridge{{Name: bridge, Subnet: subnet}, other}) {
		t.Errorf("recorded set-up after a second bridge: %+v, %v; want both bridges", s, err)
	}
	before := iptablesSave(t, ns)

	f, err := c.CreateTap(ctx, tap, bridge, nobody)
	if err != nil {
		t.Fatal(err)
	}
	name, flags, err := tapOf(f)
	if err != nil || name != tap || flags&TapFlags != TapFlags {
		t.Fatalf("received fd: TUNGETIFF = %q, %#x, %v; want %q with %#x", name, flags, err, tap, TapFlags)
	}
	out := nettest.MustIP(t, ns, "-d", "-o", "link", "show", "dev", tap)
	for _, want := range []string{"master " + bridge, "tun type tap", "isolated on"} {
		if !strings.Contains(out, want) {
			t.Errorf("tap lacks %q: %s", want, out)
		}
	}
	if !strings.Contains(out, "user nobody") && !strings.Contains(out, "user 65534") {
		t.Errorf("tap not owned by 65534: %s", out)
	}
	if _, err := net.InterfaceByName(tap); err == nil {
		t.Fatalf("tap %s appeared in the host's namespace", tap)
	}

	if err := c.ApplyVMRules(ctx, fw, vm); err != nil {
		t.Fatal(err)
	}
	if s := iptablesSave(t, ns); !strings.Contains(s, "banger:vm=rh1") {
		t.Fatalf("no VM rules after ApplyVMRules:\n%s", s)
	}
	if err := c.RemoveVMRules(ctx, fw, vm); err != nil {
		t.Fatal(err)
	}
	if after := iptablesSave(t, ns); after != before {
		t.Errorf("ruleset changed after remove:\nbefore:\n%s\nafter:\n%s", before, after)
	}

	// Refused by the real helper too, and nothing happens.
	if _, err := c.CreateTap(ctx, "eth0", bridge, nobody); !errdefs.IsInvalidArgument(err) {
		t.Errorf("CreateTap eth0: %v", err)
	}
	if err := c.EnsureBridge(ctx, "docker0", network.Gateway(subnet)); !errdefs.IsInvalidArgument(err) {
		t.Errorf("EnsureBridge docker0: %v", err)
	}

	f.Close()
	if err := c.DeleteTap(ctx, tap); err != nil {
		t.Fatal(err)
	}
	if _, err := nettest.IP(ns, "link", "show", "dev", tap); err == nil {
		t.Errorf("tap %s still exists", tap)
	}
	if err := c.DeleteTap(ctx, tap); err != nil {
		t.Errorf("DeleteTap of a missing tap: %v", err)
	}
}

// TestBridgeShadowingRefused: the helper refuses a bridge whose subnet
// overlaps a network on another interface of its namespace (the user's
// LAN, say), and accepts the /24 next to it.
func TestBridgeShadowingRefused(t *testing.T) {
	nettest.Require(t)
	ns := nettest.NewNS(t)
	nettest.Script(t, ns, `
		link add lan0 type veth peer name lan1
		addr add 172.30.7.5/24 dev lan0
		link set lan0 up
		link set lan1 up
	`)
	c := New(startHelperIn(t, ns))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	err := c.EnsureBridge(ctx, "banger0", netip.MustParsePrefix("172.30.7.1/24"))
	if !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("EnsureBridge over lan0's network: %v; want failed precondition", err)
	}
	for _, want := range []string{"172.30.7.0/24", "lan0", "subnet = "} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if _, err := nettest.IP(ns, "link", "show", "dev", "banger0"); err == nil {
		t.Error("bridge created although refused")
	}
	if err := c.EnsureBridge(ctx, "banger0", netip.MustParsePrefix("172.30.8.1/24")); err != nil {
		t.Fatalf("EnsureBridge next to lan0's network: %v", err)
	}
	// banger's own bridge is no conflict: ensuring it again works.
	if err := c.EnsureBridge(ctx, "banger0", netip.MustParsePrefix("172.30.8.1/24")); err != nil {
		t.Fatalf("EnsureBridge again: %v", err)
	}
	// A route over the subnet, through another interface, is a conflict too.
	nettest.MustIP(t, ns, "route", "add", "10.213.0.0/16", "dev", "lan0")
	if err := c.EnsureBridge(ctx, "banger1", netip.MustParsePrefix("10.213.4.1/24")); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("EnsureBridge under a route of lan0: %v", err)
	}
}
