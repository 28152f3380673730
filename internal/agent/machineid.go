package agent

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// machineIDFile is systemd's machine-id, relative to a root.
const machineIDFile = "etc/machine-id"

// ensureMachineID gives the VM a machine-id of its own in the root at
// root, whose overlay upper layer (the VM's disk) is upper. One the VM's
// disk already holds is kept: it is the VM's, written at its first boot,
// and a machine-id must not change across restarts. Anything else (the
// image's, shared by every VM of that image, or none) is replaced by a
// fresh random one. It runs after applyIdentity reseeded the kernel's
// random pool, and after the template's ready point, so two clones of one
// template never draw the same one, nor get the template's (a template
// has no root mounted, hence no machine-id).
func ensureMachineID(root, upper string) (id string, kept bool, err error) {
	if b, err := os.ReadFile(filepath.Join(upper, machineIDFile)); err == nil && validMachineID(b) {
		return string(bytes.TrimSpace(b)), true, nil
	}
	var raw [16]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", false, fmt.Errorf("machine-id: %w", err)
	}
	// systemd formats a generated id as a v4 UUID (sd_id128_randomize).
	raw[6] = raw[6]&0x0f | 0x40
	raw[8] = raw[8]&0x3f | 0x80
	id = hex.EncodeToString(raw[:])
	p := filepath.Join(root, machineIDFile)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return "", false, fmt.Errorf("machine-id: %w", err)
	}
	// Removed first: the image's may be a symlink, which a write would
	// follow.
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", false, fmt.Errorf("machine-id: %w", err)
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return "", false, fmt.Errorf("machine-id: %w", err)
	}
	_, err = f.WriteString(id + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", false, fmt.Errorf("machine-id: %w", err)
	}
	return id, false, nil
}

// validMachineID: 32 lowercase hex digits and a newline, as
// machine-id(5) says; not all zeros.
func validMachineID(b []byte) bool {
	s := bytes.TrimSuffix(b, []byte("\n"))
	if len(s) != 32 || bytes.Equal(s, bytes.Repeat([]byte("0"), 32)) {
		return false
	}
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}
