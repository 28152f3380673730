package vm

import (
	"context"
	"crypto/rand"
	"fmt"
	"time"

	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/agentproto"
	"github.com/bangervm/banger/internal/engine"
	"github.com/bangervm/banger/internal/store"
)

// identify tells the agent, waiting at its ready point, who the guest is,
// with the host's clock and fresh host entropy, and waits until the boot
// has finished (root mounted, network and SSH up). A cold boot and a
// clone of a template take this same path. Caller holds h.lock.
func (m *Manager) identify(ctx context.Context, v *store.VM, h *handle, c *agentproto.Client, id agentproto.Identity) error {
	ctx, cancel := context.WithTimeout(ctx, m.cfg.BootTimeout)
	defer cancel()
	id.Entropy = make([]byte, agentproto.IdentityEntropy)
	if _, err := rand.Read(id.Entropy); err != nil {
		return fmt.Errorf("identify: host entropy: %w", err)
	}
	id.Time = time.Now()
	res, err := c.Identify(ctx, id)
	if err != nil {
		return fmt.Errorf("identify the guest: %w", err)
	}
	if res.Reconnect {
		// The image's init took PID 1; the agent now serves from a
		// child process, which answers a new handshake.
		h.mu.Lock()
		if h.agent == c {
			h.closeAgentLocked()
		}
		h.mu.Unlock()
		if c, err = m.connectAgent(ctx, v, h, m.cfg.BootTimeout); err != nil {
			return fmt.Errorf("reconnect to the agent after the hand-over to the image's init: %w", err)
		}
	}
	// Health waits for the boot to finish.
	info, err := c.Health(ctx)
	if err != nil {
		return fmt.Errorf("guest agent after identify: %w", err)
	}
	if info.AwaitingIdentity {
		return fmt.Errorf("guest agent still waits for its identity after identify: %w", errdefs.ErrUnavailable)
	}
	// The clock again, now that the guest's path is warm (see
	// agentproto.Client.SetClock): one short round trip. An agent that
	// cannot keeps the identity's clock.
	if err := c.SetClock(ctx, time.Now()); err != nil {
		m.log.Debug("set the guest's clock again", "vm", v.ID, "err", err)
	}
	return nil
}

// identifyAdopted finishes the boot of an adopted VM whose agent still
// waits at its ready point: a daemon that died between starting the engine
// and sending the identity left it there.
func (m *Manager) identifyAdopted(ctx context.Context, v store.VM, h *handle, netSpec *engine.NetSpec, guestNet *agentproto.NetworkConfig) {
	c, err := m.connectAgent(ctx, &v, h, m.cfg.BootTimeout)
	if err != nil || c.ProtocolVersion() < 2 {
		return // commands will report it
	}
	info, err := c.Health(ctx)
	if err != nil || !info.AwaitingIdentity {
		return
	}
	sshCfg, err := m.sshBoot(v)
	if err != nil {
		m.log.Warn("identify adopted vm", "vm", v.ID, "err", err)
		return
	}
	id := agentproto.Identity{Hostname: v.Name, Network: guestNet, SSH: sshCfg}
	if netSpec != nil {
		id.MAC = netSpec.MAC
	}
	if err := m.identify(ctx, &v, h, c, id); err != nil {
		m.log.Warn("identify adopted vm", "vm", v.ID, "err", err)
		return
	}
	m.log.Info("adopted vm was waiting for its identity; sent", "vm", v.ID)
}
