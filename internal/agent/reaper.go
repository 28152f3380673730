package agent

import (
	"context"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"sync"
	"syscall"
)

// waiter starts commands and reports how they end. As PID 1 the agent must
// reap every orphan with wait4(-1), which would steal the status of its own
// children from exec.Cmd.Wait; reaper hands those statuses back instead.
type waiter interface {
	start(cmd *exec.Cmd) (<-chan syscall.WaitStatus, error)
}

// directWaiter waits for each child by pid: for an agent that is not PID 1
// (and for tests, where wait4(-1) would take other children of the test).
type directWaiter struct{}

func (directWaiter) start(cmd *exec.Cmd) (<-chan syscall.WaitStatus, error) {
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	ch := make(chan syscall.WaitStatus, 1)
	go func() {
		st, err := cmd.Process.Wait()
		if err != nil {
			ch <- syscall.WaitStatus(0xff << 8) // exit 255: the status is lost
			return
		}
		ch <- st.Sys().(syscall.WaitStatus)
	}()
	return ch, nil
}

// reaper reaps every child of PID 1 and routes the agent's own children's
// statuses to their waiters.
type reaper struct {
	log     *slog.Logger
	mu      sync.Mutex
	waiters map[int]chan syscall.WaitStatus
}

func newReaper(log *slog.Logger) *reaper {
	return &reaper{log: log, waiters: map[int]chan syscall.WaitStatus{}}
}

// start holds the lock across Start so the child cannot be reaped before
// its waiter is registered.
func (r *reaper) start(cmd *exec.Cmd) (<-chan syscall.WaitStatus, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	ch := make(chan syscall.WaitStatus, 1)
	r.waiters[cmd.Process.Pid] = ch
	return ch, nil
}

// run reaps on every SIGCHLD until ctx ends.
func (r *reaper) run(ctx context.Context) {
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, syscall.SIGCHLD)
	defer signal.Stop(sigs)
	for {
		r.reap()
		select {
		case <-ctx.Done():
			return
		case <-sigs:
		}
	}
}

func (r *reaper) reap() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if err == syscall.EINTR {
			continue
		}
		if pid <= 0 || err != nil {
			return
		}
		if ch, ok := r.waiters[pid]; ok {
			ch <- ws
			delete(r.waiters, pid)
		}
	}
}
