// Package nettest gives root tests private network namespaces: created per
// test, deleted at cleanup, entered by locking the goroutine's OS thread.
// Tests never touch the host's own namespace.
package nettest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bangervm/banger/internal/hostcmd"
	"github.com/bangervm/banger/internal/testutil"
)

// Prefix starts the name of every namespace this package creates.
const Prefix = "banger-t-"

// Require skips the test unless it runs as root with ip and iptables
// available (fails instead under CI=true).
func Require(t testing.TB) {
	t.Helper()
	testutil.RequireRoot(t)
	testutil.RequireTool(t, "ip", "iproute2")
	testutil.RequireTool(t, "iptables", "iptables")
}

// NewNS creates a network namespace named Prefix+random with lo up and
// IPv4 forwarding off, and deletes it when the test ends. A new namespace
// copies net.ipv4.ip_forward from the host's (net.core.devconf_inherit_init_net
// 0, the default), so without the reset a test's start would depend on the
// machine it runs on.
func NewNS(t testing.TB) string {
	t.Helper()
	b := make([]byte, 4)
	rand.Read(b)
	name := Prefix + hex.EncodeToString(b)
	ctx := context.Background()
	if _, err := hostcmd.IP(ctx, "netns", "add", name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := hostcmd.IP(context.Background(), "netns", "del", name); err != nil {
			t.Errorf("delete netns: %v", err)
		}
	})
	MustIP(t, name, "link", "set", "lo", "up")
	SetForwarding(t, name, false)
	return name
}

// SetForwarding sets net.ipv4.ip_forward in namespace ns.
func SetForwarding(t testing.TB, ns string, on bool) {
	t.Helper()
	v := "0\n"
	if on {
		v = "1\n"
	}
	Do(t, ns, func() {
		if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte(v), 0o644); err != nil {
			t.Fatalf("ip_forward in %s: %v", ns, err)
		}
	})
}

// Forwarding reports net.ipv4.ip_forward in namespace ns.
func Forwarding(t testing.TB, ns string) bool {
	t.Helper()
	var b []byte
	Do(t, ns, func() {
		var err error
		if b, err = os.ReadFile("/proc/sys/net/ipv4/ip_forward"); err != nil {
			t.Fatal(err)
		}
	})
	return strings.TrimSpace(string(b)) == "1"
}

// Do runs fn on the calling goroutine with its OS thread switched into
// namespace ns; host tools started by fn run there too. If the thread
// cannot be switched back it is discarded, never reused.
func Do(t testing.TB, ns string, fn func()) {
	t.Helper()
	runtime.LockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	defer orig.Close()
	target, err := os.Open("/run/netns/" + ns)
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("setns %s: %v", ns, err)
	}
	defer func() {
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			t.Errorf("setns back from %s: %v (thread discarded)", ns, err)
			return // the thread stays locked and exits with the goroutine
		}
		runtime.UnlockOSThread()
	}()
	fn()
}

// IP runs ip -n ns args and returns its output.
func IP(ns string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := hostcmd.IP(ctx, append([]string{"-n", ns}, args...)...)
	return string(out), err
}

// MustIP is IP failing the test on error.
func MustIP(t testing.TB, ns string, args ...string) string {
	t.Helper()
	out, err := IP(ns, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Exec runs a program inside ns (ip netns exec) and returns its output.
func Exec(ns string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := hostcmd.IP(ctx, append([]string{"netns", "exec", ns}, args...)...)
	return string(out), err
}

// Script runs each line of script as ip -n ns arguments (split on spaces).
func Script(t testing.TB, ns, script string) {
	t.Helper()
	for _, line := range strings.Split(script, "\n") {
		if line = strings.TrimSpace(line); line != "" {
			MustIP(t, ns, strings.Fields(line)...)
		}
	}
}
