package agent

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"log/slog"
	"testing"
	"time"

	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/agentproto"
)

func validIdentity() agentproto.Identity {
	return agentproto.Identity{Hostname: "c1", MAC: "52:54:00:aa:bb:cc", Time: time.Now(),
		Entropy: bytes.Repeat([]byte{1}, agentproto.IdentityEntropy)}
}

func TestValidateIdentity(t *testing.T) {
	for name, mutate := range map[string]func(*agentproto.Identity){
		"short entropy":  func(id *agentproto.Identity) { id.Entropy = id.Entropy[:8] },
		"huge entropy":   func(id *agentproto.Identity) { id.Entropy = make([]byte, maxEntropy+1) },
		"no time":        func(id *agentproto.Identity) { id.Time = time.Time{} },
		"multicast MAC":  func(id *agentproto.Identity) { id.MAC = "01:00:5e:00:00:01" },
		"malformed MAC":  func(id *agentproto.Identity) { id.MAC = "52:54:00" },
		"infiniband MAC": func(id *agentproto.Identity) { id.MAC = "00:00:00:00:fe:80:00:00:00:00:00:00:02:00:5e:10:00:00:00:01" },
	} {
		id := validIdentity()
		mutate(&id)
		if err := validateIdentity(id); !errdefs.IsInvalidArgument(err) {
			t.Errorf("%s: %v, want InvalidArgument", name, err)
		}
	}
	if err := validateIdentity(validIdentity()); err != nil {
		t.Errorf("valid identity refused: %v", err)
	}
}

// TestRndPoolInfo: the ioctl argument is struct rand_pool_info, entropy
// credited in bits.
func TestRndPoolInfo(t *testing.T) {
	b := rndPoolInfo([]byte{9, 8, 7})
	if got := binary.NativeEndian.Uint32(b[0:]); got != 24 {
		t.Errorf("entropy_count = %d, want 24 bits", got)
	}
	if got := binary.NativeEndian.Uint32(b[4:]); got != 3 {
		t.Errorf("buf_size = %d, want 3", got)
	}
	if !bytes.Equal(b[8:], []byte{9, 8, 7}) {
		t.Errorf("buf = %v", b[8:])
	}
}

// TestSetMACInNetns sets a link's MAC over rtnetlink, as a clone does with
// its NIC before the link is used.
func TestSetMACInNetns(t *testing.T) {
	n := newNetns(t)
	n.ip("link", "add", "bgt0", "type", "veth", "peer", "name", "bgt1")
	const mac = "52:54:00:12:34:56"
	if err := n.run(func() error { return setMAC("bgt0", mac, time.Second) }); err != nil {
		t.Fatalf("setMAC: %v", err)
	}
	var links []struct {
		Address string `json:"address"`
	}
	if err := json.Unmarshal(n.ip("-j", "link", "show", "bgt0"), &links); err != nil {
		t.Fatal(err)
	}
	if len(links) != 1 || links[0].Address != mac {
		t.Fatalf("bgt0 = %+v, want address %s", links, mac)
	}
}

// TestBootGate: before its identity the guest answers Health as waiting,
// holds other operations until the boot finishes, takes exactly one
// identity, and asks the host to reconnect when it hands PID 1 over.
func TestBootGate(t *testing.T) {
	g := newBootGate(slog.New(slog.DiscardHandler), false)
	ctx := context.Background()
	info, err := g.Health(ctx)
	if err != nil || !info.AwaitingIdentity {
		t.Fatalf("health before identity: %+v, %v; want AwaitingIdentity", info, err)
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := g.Stats(short); !errdefs.IsUnavailable(err) {
		t.Fatalf("stats before the boot finished: %v, want Unavailable", err)
	}
	if _, err := g.Identify(ctx, agentproto.Identity{}); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("empty identity: %v, want InvalidArgument", err)
	}
	res, err := g.Identify(ctx, validIdentity())
	if err != nil || res.Reconnect {
		t.Fatalf("identify: %+v, %v", res, err)
	}
	if got := g.wait(); got.Hostname != "c1" {
		t.Fatalf("boot got identity %+v", got)
	}
	if _, err := g.Identify(ctx, validIdentity()); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("second identify: %v, want FailedPrecondition", err)
	}
	done := make(chan error, 1)
	go func() { _, err := g.Health(ctx); done <- err }()
	g.open(NewHandler(HandlerConfig{Logger: slog.New(slog.DiscardHandler)}))
	if err := <-done; err != nil {
		t.Fatalf("health after the boot: %v", err)
	}
	// Copies reach the real handler's archiver (vm cp).
	rc, err := g.TarOut(ctx, t.TempDir())
	if err != nil {
		t.Fatalf("TarOut through the gate: %v", err)
	}
	rc.Close()

	h := newBootGate(slog.New(slog.DiscardHandler), true)
	h.srv = &agentproto.Server{Handler: h, Logger: slog.New(slog.DiscardHandler)}
	if res, err := h.Identify(ctx, validIdentity()); err != nil || !res.Reconnect {
		t.Fatalf("identify before a hand-over: %+v, %v; want Reconnect", res, err)
	}
}
