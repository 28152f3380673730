package network

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
)

// SetupFile is the name of the root helper's record of what it set up on
// the host, beside its socket.
const SetupFile = "network.json"

// Setup is what banger set up on the host's network: the bridge, its
// subnet (the firewall chains and the nftables table come with them), and
// whether banger turned IPv4 forwarding on. The root helper keeps it in its
// runtime directory, on /run: root's, so an owner cannot make uninstall
// undo something else, and gone at reboot, like the forwarding setting it
// records. `system uninstall` reads it to undo the set-up without asking
// the daemon.
type Setup struct {
	Bridge string       `json:"bridge,omitempty"`
	Subnet netip.Prefix `json:"subnet,omitzero"`
	// Forwarding: banger turned net.ipv4.ip_forward on in this boot and
	// set the FORWARD policy to DROP; undoing it turns both back.
	Forwarding bool `json:"forwarding,omitempty"`
}

// maxSetupFile bounds what ReadSetup reads.
const maxSetupFile = 4096

// ReadSetup reads the record at path; a missing file is an empty Setup.
// What it returns is validated.
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
	var s Setup
	if err := json.Unmarshal(b, &s); err != nil {
		return Setup{}, fmt.Errorf("%s: %w", path, err)
	}
	if s.Bridge != "" || s.Subnet.IsValid() {
		if err := (Firewall{Bridge: s.Bridge, Subnet: s.Subnet}).Validate(); err != nil {
			return Setup{}, fmt.Errorf("%s: %w", path, err)
		}
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
