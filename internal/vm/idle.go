package vm

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/agentproto"
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
	t := time.NewTicker(min(max(after/4, time.Second), 30*time.Second))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			m.stopIdle(ctx, after, now)
		}
	}
}

func (m *Manager) stopIdle(ctx context.Context, after time.Duration, now time.Time) {
	vs, err := m.cfg.DB.ListVMs(ctx)
	if err != nil {
		m.log.Warn("idle check", "err", err)
		return
	}
	for _, v := range vs {
		if v.State != api.VMRunning || ctx.Err() != nil {
			continue
		}
		h := m.handle(v.ID)
		h.mu.Lock()
		running, sessions := h.inst != nil, h.sessions
		if h.lastActive.IsZero() {
			h.lastActive = now
		}
		h.mu.Unlock()
		if !running {
			continue
		}
		why := ""
		if sessions > 0 {
			why = fmt.Sprintf("%d session(s) open", sessions)
		} else {
			why = m.guestActivity(ctx, &v, h)
		}
		h.mu.Lock()
		if why != "" {
			h.lastActive = now
		}
		idle := now.Sub(h.lastActive)
		h.mu.Unlock()
		if why != "" || idle < after {
			continue
		}
		m.log.Info("stopping idle vm", "vm", v.ID, "name", v.Name, "idle", idle.Round(time.Second), "auto_stop", after)
		if _, err := m.Stop(ctx, v.ID); err != nil && !errdefs.IsFailedPrecondition(err) {
			m.log.Warn("stop idle vm", "vm", v.ID, "name", v.Name, "err", err)
		}
		h.mu.Lock()
		h.lastActive = time.Time{} // counted afresh if it runs again
		h.mu.Unlock()
	}
}

// guestActivity says why the guest is in use, or "" when it is idle.
func (m *Manager) guestActivity(ctx context.Context, v *store.VM, h *handle) string {
	c, err := m.connectAgent(ctx, v, h, 5*time.Second)
	if err != nil {
		return "agent unreachable: " + err.Error()
	}
	cpu, err := guestCPU(ctx, c)
	if err != nil {
		return "cannot read the guest's CPU use: " + err.Error()
	}
	h.mu.Lock()
	prev := h.cpuPrev
	h.cpuPrev = cpu
	h.mu.Unlock()
	if busy, ok := cpu.busyCPUs(prev); !ok {
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
// outside it (the remote end not a loopback address) whose local port is
// one the guest listens on: connections someone made to it.
func inboundConns(ctx context.Context, c *agentproto.Client) (int, error) {
	var rows []procNetRow
	for _, p := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		rc, _, err := c.ReadFile(ctx, p)
		if errdefs.IsNotFound(err) {
			continue // no IPv6 in the guest
		}
		if err != nil {
			return 0, err
		}
		r, err := procNetRows(rc)
		rc.Close()
		if err != nil {
			return 0, fmt.Errorf("%s: %w", p, err)
		}
		rows = append(rows, r...)
	}
	return countInbound(rows), nil
}

// countInbound counts the established rows on a listening port. The two
// files are taken together: a server on [::] accepts IPv4 connections as
// IPv4-mapped IPv6 sockets.
func countInbound(rows []procNetRow) int {
	listening := map[int]bool{}
	for _, r := range rows {
		if r.state == tcpListen {
			listening[r.port] = true
		}
	}
	n := 0
	for _, r := range rows {
		if r.state == tcpEstablished && listening[r.port] && !r.remote.IsLoopback() {
			n++
		}
	}
	return n
}

// cpuSample is the guest's CPU time in clock ticks since boot, from the
// "cpu" line of /proc/stat, and its number of CPUs.
type cpuSample struct {
	busy, total uint64
	cpus        int
}

// busyCPUs is how many CPUs were busy on average between prev and s; ok
// is false when prev is not an earlier sample of the same boot.
func (s cpuSample) busyCPUs(prev cpuSample) (float64, bool) {
	if prev.total == 0 || s.total <= prev.total || s.busy < prev.busy || s.cpus == 0 {
		return 0, false
	}
	wall := float64(s.total-prev.total) / float64(s.cpus) // ticks of one CPU
	return float64(s.busy-prev.busy) / wall, true
}

// guestCPU reads the guest's /proc/stat through the agent.
func guestCPU(ctx context.Context, c *agentproto.Client) (cpuSample, error) {
	rc, _, err := c.ReadFile(ctx, "/proc/stat")
	if err != nil {
		return cpuSample{}, err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, 1<<20))
	if err != nil {
		return cpuSample{}, err
	}
	return parseProcStat(string(b))
}

// parseProcStat reads /proc/stat's "cpu user nice system idle iowait irq
// softirq steal ..." line (idle and iowait are not busy; guest time is
// already in user) and counts the cpuN lines.
func parseProcStat(stat string) (cpuSample, error) {
	var s cpuSample
	found := false
	for _, line := range strings.Split(stat, "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) > 0 && strings.HasPrefix(f[0], "cpu") && f[0] != "cpu":
			s.cpus++
		case len(f) >= 9 && f[0] == "cpu":
			for i, v := range f[1:9] {
				n, err := strconv.ParseUint(v, 10, 64)
				if err != nil {
					return s, fmt.Errorf("/proc/stat: %q: %w", line, err)
				}
				s.total += n
				if i != 3 && i != 4 { // idle, iowait
					s.busy += n
				}
			}
			found = true
		}
	}
	if !found || s.cpus == 0 {
		return s, fmt.Errorf("/proc/stat: no cpu lines")
	}
	return s, nil
}
