package roothelper

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/network"
)

// startServer serves ops on a socket in a new directory and returns its
// path; the server stops when the test ends.
func startServer(t *testing.T, dir string, owner int, ops network.Ops) string {
	t.Helper()
	path := filepath.Join(dir, "root.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, ln, ServerConfig{Owner: owner, Ops: ops}) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return")
		}
	})
	return path
}

func TestClientRoundTrip(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ops := &fakeOps{tapFile: func() (*os.File, error) { return w, nil }}
	c := New(startServer(t, t.TempDir(), os.Getuid(), ops))
	ctx := context.Background()
	fw := network.Firewall{Bridge: "banger0", Subnet: testSubnet}
	vm := network.VMRules{Tap: "bgr-a1", Addr: netip.MustParseAddr("172.30.4.9"), Subnet: testSubnet, Mode: network.ModeFull}

	if err := c.EnsureBridge(ctx, "banger0", testGW); err != nil {
		t.Fatal(err)
	}
	if st, err := c.EnsureForwarding(ctx, false); err != nil || !st.WasOn {
		t.Fatalf("EnsureForwarding = %+v, %v", st, err)
	}
	if err := c.EnsureFirewall(ctx, fw); err != nil {
		t.Fatal(err)
	}
	f, err := c.CreateTap(ctx, "bgr-a1", "banger0", os.Getuid())
	if err != nil {
		t.Fatal(err)
	}
	// The descriptor that came back is the pipe's write end the fake
	// returned (the server closed its own copy).
	if _, err := io.WriteString(f, "via scm_rights"); err != nil {
		t.Fatal(err)
	}
	f.Close()
	b, err := io.ReadAll(r)
	if err != nil || string(b) != "via scm_rights" {
		t.Fatalf("read %q, %v", b, err)
	}
	if err := c.ApplyVMRules(ctx, fw, vm); err != nil {
		t.Fatal(err)
	}
	if err := c.RemoveVMRules(ctx, fw, vm); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteTap(ctx, "bgr-a1"); err != nil {
		t.Fatal(err)
	}
	want := []string{OpEnsureBridge, OpEnsureForwarding, OpEnsureFirewall, OpCreateTap, OpApplyVMRules, OpRemoveVMRules, OpDeleteTap}
	if got := ops.Calls(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("calls %v, want %v", got, want)
	}

	// Refusals and the ops' own errors keep their class.
	if _, err := c.CreateTap(ctx, "eth0", "banger0", os.Getuid()); !errdefs.IsInvalidArgument(err) {
		t.Errorf("CreateTap eth0: %v", err)
	}
	if os.Getuid() != 0 {
		if _, err := c.CreateTap(ctx, "bgr-a1", "banger0", 0); !errdefs.IsPermissionDenied(err) {
			t.Errorf("CreateTap for root: %v", err)
		}
	}
	ops.setErr(fmt.Errorf("bridge banger0: %w", errdefs.ErrNotFound))
	if err := c.DeleteTap(ctx, "bgr-a1"); !errdefs.IsNotFound(err) {
		t.Errorf("DeleteTap with failing ops: %v", err)
	}
}

// RouteDNS's report crosses the socket both ways it can go.
func TestClientRouteDNS(t *testing.T) {
	ops := &fakeOps{route: network.DNSRoute{Reason: "systemd-resolved is not running"}}
	c := New(startServer(t, t.TempDir(), os.Getuid(), ops))
	ctx := context.Background()
	server := netip.MustParseAddrPort("127.0.0.1:42069")
	if r, err := c.RouteDNS(ctx, "banger0", server); err != nil || r != ops.route {
		t.Fatalf("RouteDNS = %+v, %v; want %+v", r, err, ops.route)
	}
	ops.mu.Lock()
	ops.route = network.DNSRoute{Routed: true}
	ops.mu.Unlock()
	if r, err := c.RouteDNS(ctx, "banger0", server); err != nil || !r.Routed || r.Reason != "" {
		t.Fatalf("RouteDNS = %+v, %v; want routed", r, err)
	}
	if err := c.UnrouteDNS(ctx, "banger0"); err != nil {
		t.Fatal(err)
	}
	if r, err := c.RouteDNS(ctx, "banger0", netip.MustParseAddrPort("192.0.2.1:53")); !errdefs.IsPermissionDenied(err) || r.Routed {
		t.Fatalf("RouteDNS to a gateway outside the allowed ranges = %+v, %v", r, err)
	}
	want := []string{OpRouteDNS, OpRouteDNS, OpUnrouteDNS}
	if got := ops.Calls(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("calls %v, want %v", got, want)
	}
}

func TestClientUnavailable(t *testing.T) {
	c := New(filepath.Join(t.TempDir(), "none.sock"))
	if err := c.DeleteTap(context.Background(), "bgr-a1"); !errdefs.IsUnavailable(err) {
		t.Fatalf("no helper: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := c.DeleteTap(ctx, "bgr-a1"); !errdefs.IsCanceled(err) {
		t.Fatalf("cancelled: %v", err)
	}
	if New("").Path() != DefaultSocket || (&Client{}).Path() != DefaultSocket {
		t.Fatal("default path")
	}
}

// A malformed request (unknown field) is refused and the connection closed.
func TestMalformedRequest(t *testing.T) {
	ops := &fakeOps{}
	path := startServer(t, t.TempDir(), os.Getuid(), ops)
	conn, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := writeMsg(conn, map[string]any{"op": OpDeleteTap, "tap": "bgr-a1", "cmd": "rm -rf /"}, nil); err != nil {
		t.Fatal(err)
	}
	var resp response
	if _, err := readMsg(conn, &resp); err != nil {
		t.Fatal(err)
	}
	if !errdefs.IsInvalidArgument(errdefs.FromCode(resp.Class, resp.Error)) {
		t.Fatalf("reply %+v", resp)
	}
	if _, err := readMsg(conn, &resp); !errors.Is(err, io.EOF) {
		t.Fatalf("connection not closed: %v", err)
	}
	if calls := ops.Calls(); len(calls) > 0 {
		t.Fatalf("ops ran: %v", calls)
	}
}

func TestListen(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "run", "root.sock")
	ln, err := Listen(path, os.Getuid())
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v, %v", fi.Mode(), err)
	}
	if di, err := os.Stat(filepath.Dir(path)); err != nil || di.Mode().Perm() != 0o755 {
		t.Fatalf("dir mode %v, %v", di.Mode(), err)
	}
	if _, err := Listen(path, os.Getuid()); !errdefs.IsAlreadyExists(err) {
		t.Fatalf("second helper: %v", err)
	}
	// A stale socket (nobody listening) is replaced.
	ln.SetUnlinkOnClose(false)
	ln.Close()
	ln, err = Listen(path, os.Getuid())
	if err != nil {
		t.Fatalf("stale socket: %v", err)
	}
	ln.Close()
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket left after close: %v", err)
	}
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(path, os.Getuid()); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("regular file: %v", err)
	}
}
