package vm

import (
	"context"
	"fmt"
	"time"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/agentproto"
	"github.com/bangervm/banger/internal/engine"
	"github.com/bangervm/banger/internal/store"
)

// session returns the VM's live agent session, or nil. A session that
// has ended, or that was made with another engine instance than the one
// the VM runs now (the VM was restarted meanwhile), is closed and
// forgotten, which frees the engine's agent channel: a command must never
// go to a previous boot's agent.
func (h *handle) session() *agentproto.Client {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.agent == nil {
		return nil
	}
	select {
	case <-h.agent.Done():
	default:
		if h.agentOf == h.inst {
			return h.agent
		}
	}
	h.closeAgentLocked()
	return nil
}

// closeAgentLocked closes and forgets the agent session. Caller holds
// h.mu.
func (h *handle) closeAgentLocked() {
	if h.agent != nil {
		h.agent.Close()
	}
	h.agent, h.agentOf = nil, nil
}

// setInstLocked makes inst the VM's engine instance; a session made with
// another one is closed. Caller holds h.mu.
func (h *handle) setInstLocked(inst engine.Instance) {
	if h.agentOf != inst {
		h.closeAgentLocked()
	}
	h.inst = inst
}

// connectAgent returns the VM's agent session, dialling and handshaking
// when there is none. The daemon keeps one session per running VM and
// every command multiplexes its streams over it: the engine's channel
// takes a single client, so concurrent callers that find no session wait
// (within timeout) for the one being made instead of failing. While the
// guest boots, an engine process that exits ends the wait at once.
func (m *Manager) connectAgent(ctx context.Context, v *store.VM, h *handle, timeout time.Duration) (*agentproto.Client, error) {
	if c := h.session(); c != nil {
		return c, nil
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	select {
	case h.dial <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("vm %s: waiting for the agent channel: %w", v.Name, ctx.Err())
	}
	defer func() { <-h.dial }()
	if c := h.session(); c != nil {
		return c, nil
	}
	h.mu.Lock()
	inst := h.inst
	h.mu.Unlock()
	if inst == nil {
		return nil, fmt.Errorf("vm %s is not running: start it (banger vm start %s): %w", v.Name, v.Name, errdefs.ErrFailedPrecondition)
	}
	exited := make(chan struct{})
	go func() {
		if inst.Wait(ctx) == nil {
			close(exited)
			cancel()
		}
	}()
	conn, err := inst.DialAgent(ctx)
	if err != nil {
		return nil, fmt.Errorf("agent channel: %w", err)
	}
	c, err := agentproto.Connect(ctx, conn, agentproto.ClientConfig{Logger: m.log.With("vm", v.ID)})
	if err != nil {
		// A dropped channel usually means the VM is going away: give
		// the process a moment to exit so the error says so.
		select {
		case <-exited:
			return nil, fmt.Errorf("the guest powered off or its kernel panicked before the agent answered: %w", errdefs.ErrFailedPrecondition)
		case <-time.After(time.Second):
		}
		return nil, fmt.Errorf("guest agent: %w", err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.inst != inst {
		c.Close()
		return nil, fmt.Errorf("vm %s stopped while its agent was being reached: %w", v.Name, errdefs.ErrFailedPrecondition)
	}
	h.agent, h.agentOf = c, inst
	return c, nil
}

// Agent returns the agent session of a running VM, shared with every
// other command on it. A VM its engine paused is refused with the reason:
// its agent cannot answer until it is resumed.
func (m *Manager) Agent(ctx context.Context, ref string) (*agentproto.Client, api.VM, error) {
	v, err := m.cfg.DB.GetVM(ctx, ref)
	if err != nil {
		return nil, api.VM{}, err
	}
	h := m.handle(v.ID)
	out := m.toAPI(v)
	if out.State == api.VMPaused {
		return nil, out, fmt.Errorf("vm %s is paused (%s): %w", v.Name, out.Reason, errdefs.ErrFailedPrecondition)
	}
	c, err := m.connectAgent(ctx, &v, h, 15*time.Second)
	return c, out, err
}

// ExecDefaults fills what the exec request leaves empty from the image
// config: working directory and user.
func ExecDefaults(vm api.VM, req api.ExecRequest) agentproto.ExecRequest {
	out := agentproto.ExecRequest{Argv: req.Argv, Env: req.Env, Dir: req.Dir, User: req.User, TTY: req.TTY, Rows: req.Rows, Cols: req.Cols}
	if out.Dir == "" {
		out.Dir = vm.Workspace
	}
	if out.Dir == "" {
		out.Dir = vm.Config.WorkingDir
	}
	if out.User == "" {
		out.User = vm.Config.User
	}
	return out
}
