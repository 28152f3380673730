package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/client"
	"github.com/bangervm/banger/internal/network"
	"github.com/bangervm/banger/internal/network/nettest"
	"github.com/bangervm/banger/internal/testutil"
	"github.com/bangervm/banger/internal/vm"
)

// dnsOps records RouteDNS and UnrouteDNS; the other ops are not called.
type dnsOps struct {
	network.Ops
	route  network.DNSRoute
	err    error
	server netip.AddrPort
	calls  []string
}

func (o *dnsOps) RouteDNS(_ context.Context, bridge string, server netip.AddrPort) (network.DNSRoute, error) {
	o.calls = append(o.calls, "route "+bridge)
	o.server = server
	return o.route, o.err
}

func (o *dnsOps) UnrouteDNS(_ context.Context, bridge string) error {
	o.calls = append(o.calls, "unroute "+bridge)
	return nil
}

func TestRouteDNS(t *testing.T) {
	for _, tc := range []struct {
		name   string
		ops    dnsOps
		addr   string
		server string // what RouteDNS was given
		says   string // in the log
		revert bool
	}{
		{"routed", dnsOps{route: network.DNSRoute{Routed: true}}, "127.0.0.1:42069", "127.0.0.1:42069", "routing .vm through systemd-resolved", true},
		{"every address", dnsOps{route: network.DNSRoute{Routed: true}}, "0.0.0.0:42069", "127.0.0.1:42069", "routing", true},
		{"no resolved", dnsOps{route: network.DNSRoute{Reason: "systemd-resolved is not running"}}, "127.0.0.1:42069", "127.0.0.1:42069", "point your resolver", false},
		{"refused", dnsOps{err: errors.New("root helper: refused routeDNS")}, "127.0.0.1:42069", "127.0.0.1:42069", "refused routeDNS", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs bytes.Buffer
			log := slog.New(slog.NewTextHandler(&logs, nil))
			ops := tc.ops
			revert, whyNot := routeDNS(context.Background(), &vm.Network{Bridge: "banger0", Ops: &ops}, netip.MustParseAddrPort(tc.addr), log)
			// A reason exactly when not routed, and the one the log gave.
			if (whyNot == "") != tc.revert || !strings.Contains(logs.String(), whyNot) {
				t.Errorf("whyNot = %q (routed: %v), log:\n%s", whyNot, tc.revert, logs.String())
			}
			if ops.server.String() != tc.server {
				t.Errorf("RouteDNS got server %s, want %s", ops.server, tc.server)
			}
			if !strings.Contains(logs.String(), tc.says) {
				t.Errorf("log does not say %q:\n%s", tc.says, logs.String())
			}
			if (revert != nil) != tc.revert {
				t.Fatalf("revert = %v, want one: %v", revert != nil, tc.revert)
			}
			if revert != nil {
				revert()
			}
			want := "[route banger0]"
			if tc.revert {
				want = "[route banger0 unroute banger0]"
			}
			if got := fmt.Sprint(ops.calls); got != want {
				t.Errorf("calls %s, want %s", got, want)
			}
		})
	}
}

// Environment of TestDaemonProcess.
const envDaemon = "BANGER_DAEMON_TEST_PROCESS"

// TestDaemonProcess is not a test: it is bangerd, run by the tests below.
// It logs to bangerd.log in $BANGER_HOME/state.
func TestDaemonProcess(t *testing.T) {
	if os.Getenv(envDaemon) == "" {
		testutil.NotApplicable(t, "the daemon process of the tests below")
	}
	os.Exit(Main(nil))
}

// TestDaemonRoutesDNS runs bangerd as root with networking on inside a
// sandbox with a real systemd-resolved (network and mount namespaces the
// test creates): it routes .vm to its DNS server once up, reverts on
// SIGTERM, and routes again after a kill -9 and a restart.
func TestDaemonRoutesDNS(t *testing.T) {
	sb := nettest.NewSandbox(t)
	sb.StartResolved(t)
	home := t.TempDir()
	if err := os.MkdirAll(filepath.Join(home, "config"), 0o700); err != nil {
		t.Fatal(err)
	}
	conf := "bridge = \"banger0\"\nsubnet = \"172.30.9.0/24\"\ndns_addr = \"127.0.0.1:42069\"\n"
	if err := os.WriteFile(filepath.Join(home, "config", "config.toml"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	routed := func() bool {
		s, err := sb.Resolvectl("status", "banger0")
		return err == nil && strings.Contains(s, "127.0.0.1:42069") && strings.Contains(s, "~vm")
	}
	logFile := filepath.Join(home, "state", "bangerd.log")
	// logged counts the lines of bangerd.log (every run appends) that say
	// what.
	logged := func(what string) int {
		b, _ := os.ReadFile(logFile)
		return strings.Count(string(b), what)
	}
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(logFile)
			t.Logf("bangerd.log:\n%s", b)
		}
	})
	start := func() (*exec.Cmd, chan struct{}) {
		t.Helper()
		started := logged("bangerd started")
		cmd := sb.Command(os.Args[0], "-test.run=^TestDaemonProcess$")
		cmd.Env = append(cmd.Env, envDaemon+"=1", "BANGER_HOME="+home, "BANGER_NETWORK=on")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{}) // closed once bangerd exited
		go func() { cmd.Wait(); close(done) }()
		t.Cleanup(func() {
			cmd.Process.Kill()
			<-done
		})
		for deadline := time.Now().Add(60 * time.Second); logged("bangerd started") == started; time.Sleep(100 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("bangerd did not start")
			}
		}
		return cmd, done
	}
	stop := func(cmd *exec.Cmd, done chan struct{}, sig syscall.Signal) {
		t.Helper()
		cmd.Process.Signal(sig)
		select {
		case <-done:
		case <-time.After(40 * time.Second):
			t.Fatalf("bangerd did not exit on %v", sig)
		}
	}

	const routing, reverted = "routing .vm through systemd-resolved", "reverted .vm routing"
	cmd, done := start()
	if !routed() || logged(routing) != 1 {
		t.Fatalf("not routed after start")
	}
	// What banger doctor reads: as set up, through the API. The sandbox
	// starts with forwarding off, so bangerd turns it on, with the FORWARD
	// policy DROP; after a restart it still knows forwarding is its own.
	checkInfo := func() {
		t.Helper()
		info, err := client.New(filepath.Join(home, "run", "bangerd.sock")).Network(context.Background())
		want := api.NetworkInfo{Configured: true, Enabled: true, Bridge: "banger0", Subnet: "172.30.9.0/24", Gateway: "172.30.9.1",
			Ops: api.OpsLocal, ForwardingWasOn: false, ForwardPolicyDrop: true, DNSAddr: "127.0.0.1:42069", DNSRouted: true}
		if err != nil || info != want {
			t.Errorf("GET /v1/network = %+v, %v\nwant %+v", info, err, want)
		}
	}
	checkInfo()
	stop(cmd, done, syscall.SIGTERM)
	if routed() || logged(reverted) != 1 {
		t.Fatalf("still routed after SIGTERM")
	}

	cmd, done = start()
	stop(cmd, done, syscall.SIGKILL)
	if !routed() {
		t.Fatalf("a killed daemon reverts nothing: routing should stay")
	}
	cmd, done = start()
	if !routed() || logged(routing) != 3 {
		t.Fatalf("not routed after a restart")
	}
	checkInfo()
	stop(cmd, done, syscall.SIGTERM)
	if routed() {
		t.Fatalf("still routed after SIGTERM")
	}
}

func TestCapInStatus(t *testing.T) {
	status := "Name:\tbangerd\nCapInh:\t0000000000000000\nCapPrm:\t%s\nCapEff:\t%s\nCapBnd:\t000001ffffffffff\n"
	for _, tc := range []struct {
		eff  string
		want bool
	}{
		{"000001ffffffffff", true},  // root with every capability
		{"0000000000001000", true},  // CAP_NET_ADMIN alone
		{"0000000000000000", false}, // root in a unit with CapabilityBoundingSet= empty
		{"0000000000002000", false}, // CAP_NET_RAW only
		{"zz", false},
	} {
		if got := capInStatus(fmt.Sprintf(status, tc.eff, tc.eff), capNetAdmin); got != tc.want {
			t.Errorf("CapEff %s: %v, want %v", tc.eff, got, tc.want)
		}
	}
	if capInStatus("Name:\tx\n", capNetAdmin) {
		t.Error("no CapEff line: reported the capability")
	}
}
