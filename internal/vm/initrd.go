package vm

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/agentproto"
	"github.com/bangervm/banger/internal/initrd"
	"github.com/bangervm/banger/internal/store"
)

// Files in a VM's directory besides the engine's own.
const (
	DiskFile   = "disk.ext4"  // the VM's own disk: overlay upper layer
	InitrdFile = "initrd.img" // kernel initrd + agent initramfs, made at each boot
)

// writeInitrd writes the VM's boot initrd: the kernel's initramfs (its
// modules), the agent archive and the boot configuration, each padded to a
// 512-byte boundary because the kernel looks for the next archive only at
// aligned offsets.
//
// The boot configuration holds nothing of this VM but its image: the agent
// stops at its ready point and takes the VM's identity (hostname, network,
// SSH host key) from the host over the agent channel (see identify).
func (m *Manager) writeInitrd(v store.VM, k api.Kernel, sp spec) error {
	return m.writeInitrdIn(v.Dir, k, sp)
}

// writeInitrdIn writes the boot initrd into dir (a VM's, or a template's
// being made: the same bytes for the same kernel, agent and image).
func (m *Manager) writeInitrdIn(dir string, k api.Kernel, sp spec) error {
	agentArchive, err := m.agentArchive()
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	if k.Initrd != "" {
		b, err := os.ReadFile(k.Initrd)
		if err != nil {
			return fmt.Errorf("kernel %s initrd: %w", k.Name, err)
		}
		buf.Write(b)
		initrd.Pad(&buf)
	}
	buf.Write(agentArchive)
	initrd.Pad(&buf)
	cfg := agentproto.BootConfig{
		Env: sp.Config.Env, Dir: sp.Config.WorkingDir, User: sp.Config.User,
		Cmd:           append(append([]string{}, sp.Config.Entrypoint...), sp.Config.Cmd...),
		Root:          &agentproto.RootConfig{Image: "/dev/vda", Disk: "/dev/vdb"},
		Init:          imageInit(sp.Config),
		AwaitIdentity: true,
	}
	if err := initrd.WriteBootConfigArchive(&buf, cfg); err != nil {
		return err
	}
	tmp := filepath.Join(dir, InitrdFile+".tmp")
	if err := os.WriteFile(tmp, buf.Bytes(), 0o600); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write initrd: %w", err)
	}
	return os.Rename(tmp, filepath.Join(dir, InitrdFile))
}

// imageInit returns the image's own init when its command is one (as in
// images built to run systemd or busybox init): the agent then hands PID 1
// to it and keeps serving as a process. Other images, the usual case for
// OCI images, get the agent as init.
func imageInit(c api.ImageConfig) string {
	argv := append(append([]string{}, c.Entrypoint...), c.Cmd...)
	if len(argv) != 1 || !filepath.IsAbs(argv[0]) {
		return ""
	}
	switch filepath.Base(argv[0]) {
	case "init", "systemd":
		return argv[0]
	}
	return ""
}

// agentArchive returns the agent's initramfs archive, built once per agent
// binary (a new binary, after an upgrade, is noticed by size and mtime).
func (m *Manager) agentArchive() ([]byte, error) {
	if m.cfg.AgentBinary == "" {
		return nil, fmt.Errorf("banger-agent not found beside bangerd: install it (make install): %w", errdefs.ErrFailedPrecondition)
	}
	st, err := os.Stat(m.cfg.AgentBinary)
	if err != nil {
		return nil, fmt.Errorf("banger-agent: %w", err)
	}
	key := fmt.Sprintf("%s:%d:%d", m.cfg.AgentBinary, st.Size(), st.ModTime().UnixNano())
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.agentKey == key {
		return m.agentCPIO, nil
	}
	var buf bytes.Buffer
	if err := initrd.WriteAgentArchive(&buf, m.cfg.AgentBinary); err != nil {
		return nil, err
	}
	m.agentKey, m.agentCPIO = key, buf.Bytes()
	return m.agentCPIO, nil
}
