package vm

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/agentproto"
	"github.com/bangervm/banger/internal/guestdata"
	"github.com/bangervm/banger/internal/store"
)

// busyCPUs is how many of the guest's CPUs must have been busy, on
// average since the last idle check, for it to count as working: a build
// left running in the background keeps at least one busy, an idle guest
// almost none. (The load average reacts too slowly: a minute-long
// average needs about two minutes of work to get near 1.)
const busyCPUs = 0.5

// Session marks one exec or copy session with VM id as in flight, for
// StopIdle, until the returned func is called.
func (m *Manager) Session(id string) (done func()) {
	h := m.handle(id)
	h.mu.Lock()
	h.sessions++
	h.lastActive = time.Now()
	h.mu.Unlock()
	return func() {
		h.mu.Lock()
		h.sessions--
		h.lastActive = time.Now()
		h.mu.Unlock()
	}
}

// StopIdle stops, gracefully (as vm stop does), every running VM that has
// been idle for after, looking every quarter of that (between 1 s and
// 30 s), until ctx is done. A VM is in use, and its idle time starts
// again, while any of these holds:
//   - an exec, shell or copy session through banger is open;
//   - a TCP connection from outside the guest into one of its listening
//     ports is established: ssh (the agent's or the image's sshd), a web
//     page being served, a vm forward's relay (connections between the
//     guest's own processes, such as a database pool, do not count);
//   - since the last look, the guest kept at least busyCPUs of its CPUs
//     busy (a job left running in the background);
//   - the agent cannot be asked (what cannot be seen is not stopped).
//
// A VM's idle time starts when StopIdle first sees it running.
func (m *Manager) StopIdle(ctx context.Context, after time.Duration) {
	if after <= 0 {
		return
	}
	every(ctx, min(max(after/4, time.Second), 30*time.Second), func(now time.Time) { m.stopIdle(ctx, after, now) })
}

// Idle checks run idleChecks VMs at a time, each within idleCheckTimeout
// (its agent handshake and reads; a stop it decides on has its own
// bounds): a stalled or hostile guest delays only its own check.
const (
	idleChecks       = 4
	idleCheckTimeout = 30 * time.Second
)

func (m *Manager) stopIdle(ctx context.Context, after time.Duration, now time.Time) {
	vs, err := m.cfg.DB.ListVMs(ctx)
	if err != nil {
		m.log.Warn("idle check", "err", err)
		return
	}
	sem := make(chan struct{}, idleChecks)
	var wg sync.WaitGroup
	for _, v := range vs {
		if v.State != api.VMRunning {
			continue
		}
		select {
		case <-ctx.Done():
		case sem <- struct{}{}:
			wg.Add(1)
			go func() {
				defer func() { <-sem; wg.Done() }()
				m.stopIfIdle(ctx, v, after, now)
			}()
		}
	}
	wg.Wait()
}

// stopIfIdle stops v if it has been idle for after.
func (m *Manager) stopIfIdle(ctx context.Context, v store.VM, after time.Duration, now time.Time) {
	h := m.handle(v.ID)
	h.mu.Lock()
	running, sessions := h.inst != nil, h.sessions
	if h.lastActive.IsZero() {
		h.lastActive = now
	}
	h.mu.Unlock()
	if !running {
		return
	}
	why := ""
	if sessions > 0 {
		why = fmt.Sprintf("%d session(s) open", sessions)
	} else {
		cctx, cancel := context.WithTimeout(ctx, idleCheckTimeout)
		why = m.guestActivity(cctx, &v, h)
		cancel()
	}
	h.mu.Lock()
	if why != "" {
		h.lastActive = now
	}
	idle := now.Sub(h.lastActive)
	h.mu.Unlock()
	if why != "" || idle < after {
		return
	}
	m.log.Info("stopping idle vm", "vm", v.ID, "name", v.Name, "idle", idle.Round(time.Second), "auto_stop", after)
	if _, err := m.Stop(ctx, v.ID); err != nil && !errdefs.IsFailedPrecondition(err) {
		m.log.Warn("stop idle vm", "vm", v.ID, "name", v.Name, "err", err)
	}
	h.mu.Lock()
	h.lastActive = time.Time{} // counted afresh if it runs again
	h.mu.Unlock()
}

// guestActivity says why the guest is in use, or "" when it is idle.
func (m *Manager) guestActivity(ctx context.Context, v *store.VM, h *handle) string {
	c, err := m.connectAgent(ctx, v, h, 5*time.Second)
	if err != nil {
		return "agent unreachable: " + err.Error()
	}
	cpu, err := readGuest(ctx, c, "/proc/stat", func(r io.Reader) (guestdata.CPU, error) {
		return guestdata.ProcStat(r, guestdata.Limits{})
	})
	if err != nil {
		return "cannot read the guest's CPU use: " + err.Error()
	}
	h.mu.Lock()
	prev := h.cpuPrev
	h.cpuPrev = cpu
	h.mu.Unlock()
	if busy, ok := cpu.BusyCPUs(prev); !ok {
		return "first look at its CPU use"
	} else if busy >= busyCPUs {
		return fmt.Sprintf("%.1f CPUs busy", busy)
	}
	n, err := inboundConns(ctx, c)
	if err != nil {
		return "cannot read the guest's connections: " + err.Error()
	}
	if n > 0 {
		return fmt.Sprintf("%d inbound connection(s)", n)
	}
	return ""
}

// inboundConns counts the guest's established TCP connections from
// outside it (see guestdata.InboundConns).
func inboundConns(ctx context.Context, c *agentproto.Client) (int, error) {
	var rows []guestdata.Socket
	for _, p := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		r, err := readGuest(ctx, c, p, procNet(p))
		if errdefs.IsNotFound(err) {
			continue // no IPv6 in the guest
		}
		if err != nil {
			return 0, err
		}
		rows = append(rows, r...)
	}
	return guestdata.InboundConns(rows), nil
}
