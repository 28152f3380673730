package vm

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/bangervm/banger/internal/agentproto"
	"github.com/bangervm/banger/internal/sshconf"
	"github.com/bangervm/banger/internal/store"
)

// HostKeyFile holds a VM's SSH host key. banger makes it with the VM and
// pins its public half in banger's known_hosts at once, so even the first
// connection is checked; a guest that presents another key is refused.
const HostKeyFile = "ssh_host_ed25519_key"

func sshNames(m *Manager, v store.VM) []string {
	names := []string{v.Name + ".vm"}
	if a, ok := m.vmAddr(v); ok {
		names = append(names, a.String())
	}
	return names
}

// makeHostKey creates and pins the VM's host key.
func (m *Manager) makeHostKey(v store.VM) error {
	if m.cfg.SSH == nil {
		return nil
	}
	priv, pub, err := sshconf.NewKey(v.Name + ".vm")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(v.Dir, HostKeyFile), priv, 0o600); err != nil {
		return fmt.Errorf("host key: %w", err)
	}
	return m.cfg.SSH.Pin(sshNames(m, v), pub)
}

// sshBoot is the SSH part of a VM's boot configuration: its host key and
// banger's client key. VMs without a network get none.
func (m *Manager) sshBoot(v store.VM) (*agentproto.SSHConfig, error) {
	if m.cfg.SSH == nil {
		return nil, nil
	}
	if _, ok := m.vmAddr(v); !ok {
		return nil, nil
	}
	key, err := os.ReadFile(filepath.Join(v.Dir, HostKeyFile))
	if err != nil {
		return nil, fmt.Errorf("host key: %w", err)
	}
	client, err := m.cfg.SSH.ClientKey()
	if err != nil {
		return nil, err
	}
	return &agentproto.SSHConfig{Port: 22, HostKey: string(key), AuthorizedKeys: []string{client}}, nil
}

// unpin forgets the VM's host key.
func (m *Manager) unpin(v store.VM) error {
	if m.cfg.SSH == nil {
		return nil
	}
	return m.cfg.SSH.Unpin(sshNames(m, v))
}
