package network

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// The helper's record holds every bridge it set up, once each, newest
// last, at most MaxBridges; it reads the first format (one bridge) and
// rewrites it in the new one; entries that are not a banger bridge and a
// /24 are refused.
func TestSetupRecord(t *testing.T) {
	path := filepath.Join(t.TempDir(), SetupFile)
	a := Bridge{Name: "banger0", Subnet: netip.MustParsePrefix("172.30.9.0/24")}
	b := Bridge{Name: "bangerb", Subnet: netip.MustParsePrefix("172.30.10.0/24")}

	// The first format, as a helper before this one left it on /run
	// (an upgrade in place keeps /run).
	if err := os.WriteFile(path, []byte(`{"bridge":"banger0","subnet":"172.30.9.0/24","forwarding":true}`), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := ReadSetup(path)
	if want := (Setup{Bridges: []Bridge{a}, Forwarding: true}); err != nil || !reflect.DeepEqual(s, want) {
		t.Fatalf("first format: %+v, %v; want %+v", s, err, want)
	}
	// The owner changed bridge and subnet in config.toml and restarted.
	if err := UpdateSetup(path, func(s *Setup) { s.AddBridge(b.Name, b.Subnet) }); err != nil {
		t.Fatal(err)
	}
	s, err = ReadSetup(path)
	if want := (Setup{Bridges: []Bridge{a, b}, Forwarding: true}); err != nil || !reflect.DeepEqual(s, want) {
		t.Fatalf("after a second bridge: %+v, %v; want %+v", s, err, want)
	}
	if raw, _ := os.ReadFile(path); strings.Contains(string(raw), `"bridge":`) {
		t.Errorf("record still in the first format: %s", raw)
	}
	// Set up again (every daemon start), with another subnet: one entry.
	a.Subnet = netip.MustParsePrefix("172.30.11.0/24")
	s.AddBridge(a.Name, a.Subnet)
	s.AddBridge(a.Name, a.Subnet)
	if want := []Bridge{b, a}; !reflect.DeepEqual(s.Bridges, want) {
		t.Fatalf("bridge set up again: %+v; want %+v", s.Bridges, want)
	}
	if !s.HasBridge("bangerb") || s.HasBridge("banger1") {
		t.Errorf("HasBridge: bangerb %v, banger1 %v", s.HasBridge("bangerb"), s.HasBridge("banger1"))
	}
	// Bounded: the newest MaxBridges stay.
	for i := range MaxBridges + 3 {
		s.AddBridge(fmt.Sprintf("bangern%d", i), netip.MustParsePrefix(fmt.Sprintf("172.30.%d.0/24", 100+i)))
	}
	if len(s.Bridges) != MaxBridges || s.Bridges[0].Name != "bangern3" || s.Bridges[MaxBridges-1].Name != fmt.Sprintf("bangern%d", MaxBridges+2) {
		t.Fatalf("after %d more bridges: %+v; want the newest %d", MaxBridges+3, s.Bridges, MaxBridges)
	}
	if err := UpdateSetup(path, func(r *Setup) { *r = s }); err != nil {
		t.Fatal(err)
	}
	if got, err := ReadSetup(path); err != nil || !reflect.DeepEqual(got, s) {
		t.Fatalf("a full record read back: %+v, %v", got, err)
	}

	for name, body := range map[string]string{
		"first format, not a banger bridge": `{"bridge":"eth0","subnet":"172.30.9.0/24"}`,
		"not a banger bridge":               `{"bridges":[{"name":"banger0","subnet":"172.30.9.0/24"},{"name":"docker0","subnet":"172.17.0.0/24"}]}`,
		"not a /24":                         `{"bridges":[{"name":"banger0","subnet":"10.0.0.0/8"}]}`,
		"no subnet":                         `{"bridges":[{"name":"banger0"}]}`,
	} {
		os.WriteFile(path, []byte(body), 0o644)
		if s, err := ReadSetup(path); err == nil {
			t.Errorf("%s: read as %+v, want an error", name, s)
		}
	}
	if s, err := ReadSetup(filepath.Join(t.TempDir(), SetupFile)); err != nil || !reflect.DeepEqual(s, Setup{}) {
		t.Errorf("no record: %+v, %v; want nothing set up", s, err)
	}
}
