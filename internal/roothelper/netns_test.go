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
	sock := filepath.Join(t.TempDir(), "run", "root.sock")
	cmd := exec.Command("ip", "netns", "exec", ns, os.Args[0], "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(), envHelper+"=serve", envSocket+"="+sock)
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
	c := New(startHelperIn(t, ns))
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
	if on, err := c.EnsureForwarding(ctx); err != nil || on {
		t.Fatalf("EnsureForwarding = %v, %v; want off before", on, err)
	}
	if on, err := c.EnsureForwarding(ctx); err != nil || !on {
		t.Fatalf("EnsureForwarding again = %v, %v", on, err)
	}
	if err := c.EnsureFirewall(ctx, fw); err != nil {
		t.Fatal(err)
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
