package roothelper

import (
	"context"
	"net/netip"
	"os"
	"sync"

	"github.com/bangervm/banger/internal/network"
)

// fakeOps records the operations it is asked to run. Its CreateTap returns
// tapFile (or nil) instead of touching the host.
type fakeOps struct {
	mu      sync.Mutex
	calls   []string
	err     error
	tapFile func() (*os.File, error)
	route   network.DNSRoute // what RouteDNS reports
}

var _ network.Ops = (*fakeOps)(nil)

func (f *fakeOps) record(op string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, op)
	return f.err
}

func (f *fakeOps) setErr(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err = err
}

func (f *fakeOps) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func (f *fakeOps) EnsureBridge(context.Context, string, netip.Prefix) error {
	return f.record(OpEnsureBridge)
}

func (f *fakeOps) EnsureForwarding(context.Context, bool) (network.Forwarding, error) {
	return network.Forwarding{WasOn: true}, f.record(OpEnsureForwarding)
}

func (f *fakeOps) EnsureFirewall(context.Context, network.Firewall) error {
	return f.record(OpEnsureFirewall)
}

func (f *fakeOps) CreateTap(context.Context, string, string, int) (*os.File, error) {
	if err := f.record(OpCreateTap); err != nil {
		return nil, err
	}
	if f.tapFile == nil {
		return os.Open(os.DevNull)
	}
	return f.tapFile()
}

func (f *fakeOps) DeleteTap(context.Context, string) error { return f.record(OpDeleteTap) }

func (f *fakeOps) ApplyVMRules(context.Context, network.Firewall, network.VMRules) error {
	return f.record(OpApplyVMRules)
}

func (f *fakeOps) RemoveVMRules(context.Context, network.Firewall, network.VMRules) error {
	return f.record(OpRemoveVMRules)
}

func (f *fakeOps) RouteDNS(context.Context, string, netip.AddrPort) (network.DNSRoute, error) {
	err := f.record(OpRouteDNS)
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.route, err
}

func (f *fakeOps) UnrouteDNS(context.Context, string) error { return f.record(OpUnrouteDNS) }
