package network

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
)

// SetupFile is the name of the root helper's record of what it set up on
// the host, beside its socket.
const SetupFile = "network.json"

// Setup is what banger set up on the host's network: every bridge with
// its subnet (the firewall chains and the nftables table come with them),
// and whether banger turned IPv4 forwarding on. The root helper keeps it in
// its runtime directory, on /run: root's, so an owner cannot make
// uninstall undo something else, and gone at reboot, like the forwarding
// setting it records. `system uninstall` reads it to undo the set-up
// without asking the daemon. It holds every bridge set up since the
// record began, not only the latest: an owner who changes the bridge or
// subnet in config.toml and restarts leaves the old bridge behind, and
// uninstall must remove it too.
type Setup struct {
	Bridges []Bridge `json:"bridges,omitempty"`
	// Forwarding: banger turned net.ipv4.ip_forward on in this boot and
	// set the FORWARD policy to DROP; undoing it turns both back.
	Forwarding bool `json:"forwarding,omitempty"`
}

// Bridge is one bridge banger set up, and its subnet.
type Bridge struct {
	Name   string       `json:"name"`
	Subnet netip.Prefix `json:"subnet"`
}

// MaxBridges bounds the bridges a Setup holds; AddBridge drops the
// oldest beyond it. A host sees one or two in a boot: the bound only keeps
// a helper asked for many from growing the record without end.
const MaxBridges = 16

// AddBridge records bridge name with subnet, newest last. A bridge
// already recorded moves to the end with the new subnet: the bridge and
// its rules are found by name, so one entry per name is enough.
func (s *Setup) AddBridge(name string, subnet netip.Prefix) {
	s.Bridges = slices.DeleteFunc(s.Bridges, func(b Bridge) bool { return b.Name == name })
	s.Bridges = append(s.Bridges, Bridge{Name: name, Subnet: subnet})
	if n := len(s.Bridges) - MaxBridges; n > 0 {
		s.Bridges = slices.Delete(s.Bridges, 0, n)
	}
}

// HasBridge reports whether bridge name is recorded.
func (s Setup) HasBridge(name string) bool {
	return slices.ContainsFunc(s.Bridges, func(b Bridge) bool { return b.Name == name })
}

// setupFile is the record as stored: Setup, plus the single bridge of the
// first format, read and then folded into Bridges.
type setupFile struct {
	Setup
	Bridge string       `json:"bridge,omitempty"`
	Subnet netip.Prefix `json:"subnet,omitzero"`
}

// maxSetupFile bounds what ReadSetup reads.
const maxSetupFile = 4096

// ReadSetup reads the record at path, in either format; a missing file is
// an empty Setup. What it returns is validated: every entry a banger
// bridge name and a /24.
func ReadSetup(path string) (Setup, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return Setup{}, nil
	}
	if err != nil {
		return Setup{}, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSetupFile))
	if err != nil {
		return Setup{}, err
	}
	var sf setupFile
	if err := json.Unmarshal(b, &sf); err != nil {
		return Setup{}, fmt.Errorf("%s: %w", path, err)
	}
	all := sf.Bridges
	if sf.Bridge != "" || sf.Subnet.IsValid() {
		all = append([]Bridge{{Name: sf.Bridge, Subnet: sf.Subnet}}, all...)
	}
	if len(all) > MaxBridges {
		return Setup{}, fmt.Errorf("%s: %d bridges, more than the %d the helper records", path, len(all), MaxBridges)
	}
	s := Setup{Forwarding: sf.Forwarding}
	for _, br := range all {
		if err := (Firewall{Bridge: br.Name, Subnet: br.Subnet}).Validate(); err != nil {
			return Setup{}, fmt.Errorf("%s: %w", path, err)
		}
		s.AddBridge(br.Name, br.Subnet)
	}
	return s, nil
}

// UpdateSetup changes the record at path with fn, through a temporary
// file and a rename, so a reader never sees half a record. Callers
// serialize updates.
func UpdateSetup(path string, fn func(*Setup)) error {
	s, err := ReadSetup(path)
	if err != nil {
		return err
	}
	fn(&s)
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".network-*.json")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(append(b, '\n'))
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("record the network set-up in %s: %w", path, err)
	}
	return nil
}
