// Package proc starts engine processes detached from the daemon and follows
// them through pidfds, whether this process started them or found them
// after a restart. It is shared by the engine implementations.
package proc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/consolelog"
	"github.com/bangervm/banger/internal/engine"
)

// StartOptions configures Start.
type StartOptions struct {
	// Dir is the working directory.
	Dir string
	// Log receives the process's stderr, and its stdout unless Console is
	// set. Required.
	Log string
	// Console, when set, receives the process's stdout: the guest console
	// of an engine that prints it there.
	Console string
	// LogMax caps Log and Console each; 0 means consolelog.DefaultMax.
	LogMax int64
	// ExtraFiles become fds 3, 4, ... in the child.
	ExtraFiles []*os.File
	// Env replaces the environment when non-nil.
	Env []string
}

// Process is a handle on one process, child or not. Its identity is pinned
// by a pidfd, so signals never reach a process that reused the pid.
type Process struct {
	pid   int
	pidfd *os.File // closed by the garbage collector with the handle

	// reaped is closed once a child started by Start has been reaped; nil
	// for processes found with Open.
	reaped chan struct{}
	// logsDone is closed once the copier of its output has written all of
	// it (see StartOptions.Log); nil for processes found with Open.
	logsDone <-chan struct{}
	// fifosDone is closed once the copier CopyFIFOs started has exited;
	// nil without one.
	fifosDone <-chan struct{}
	mu        sync.Mutex
}

// Start runs argv[0] with argv[1:] in a new session, stdin on /dev/null and
// output appended to opts.Log (and opts.Console). The guest controls what
// an engine prints, so its output goes through a copier process that caps
// each log and rotates it (package consolelog), and that, like the engine,
// outlives this process. The process is not tied to ctx or to this
// process's lifetime; a goroutine reaps it if it exits while this process
// lives.
func Start(argv []string, opts StartOptions) (*Process, error) {
	if len(argv) == 0 {
		return nil, fmt.Errorf("start: empty argv: %w", errdefs.ErrInvalidArgument)
	}
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return nil, err
	}
	defer devnull.Close()
	logs := []string{opts.Log}
	if opts.Console != "" {
		logs = []string{opts.Console, opts.Log}
	}
	pipes, logsDone, err := consolelog.StartCopier(logs, opts.LogMax)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", argv[0], err)
	}
	// The child holds its own copies; the copier ends when the child does.
	defer func() {
		for _, p := range pipes {
			p.Close()
		}
	}()
	// Deliberately not exec.CommandContext: the VM must outlive the
	// request, the caller and the daemon.
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = opts.Dir
	cmd.Env = opts.Env
	cmd.Stdin = devnull
	cmd.Stdout = pipes[0]
	cmd.Stderr = pipes[len(pipes)-1]
	cmd.ExtraFiles = opts.ExtraFiles
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", argv[0], err)
	}
	p := &Process{pid: cmd.Process.Pid, reaped: make(chan struct{}), logsDone: logsDone}
	// Not reaped yet (only the goroutine below reaps), so the pid is ours.
	fd, err := unix.PidfdOpen(p.pid, 0)
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, fmt.Errorf("pidfd_open %d: %w", p.pid, err)
	}
	p.pidfd = os.NewFile(uintptr(fd), "pidfd")
	go func() {
		cmd.Wait()
		close(p.reaped)
	}()
	return p, nil
}

// StartWith is Start for a process that another process starts (the root
// helper starts Firecracker's jailer): it starts opts.Log's copier as Start
// does and calls launch with the pipe for the process's stdout and stderr,
// then ties the copier to the handle launch returns (WaitLogs). Only Log
// and LogMax of opts are used.
func StartWith(opts StartOptions, launch func(out *os.File) (*Process, error)) (*Process, error) {
	pipes, logsDone, err := consolelog.StartCopier([]string{opts.Log}, opts.LogMax)
	if err != nil {
		return nil, err
	}
	defer pipes[0].Close() // the launched process holds its own copy
	p, err := launch(pipes[0])
	if err != nil {
		return nil, err
	}
	p.logsDone = logsDone
	return p, nil
}

// Open returns a handle on the running process pid, which need not be a
// child. It fails with errdefs.ErrNotFound when the process is gone.
func Open(pid int) (*Process, error) {
	if pid <= 0 {
		return nil, fmt.Errorf("pid %d: %w", pid, errdefs.ErrNotFound)
	}
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		if errors.Is(err, unix.ESRCH) {
			return nil, fmt.Errorf("process %d: %w", pid, errdefs.ErrNotFound)
		}
		return nil, fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	p := &Process{pid: pid, pidfd: os.NewFile(uintptr(fd), "pidfd")}
	if p.Exited() {
		return nil, fmt.Errorf("process %d has exited: %w", pid, errdefs.ErrNotFound)
	}
	return p, nil
}

// FromPidfd returns a handle on process pid pinned by pidfd, which came
// from whoever started it (the root helper, over SCM_RIGHTS); the
// handle owns pidfd. The pidfd's fdinfo must name pid, so a descriptor for
// another process is refused.
func FromPidfd(pid int, pidfd *os.File) (*Process, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/self/fdinfo/%d", pidfd.Fd()))
	if err != nil {
		pidfd.Close()
		return nil, fmt.Errorf("pidfd for %d: %w", pid, err)
	}
	got, ok := statusField(b, "Pid")
	if !ok || int(got) != pid {
		pidfd.Close()
		return nil, fmt.Errorf("pidfd is not for process %d (fdinfo Pid %d): %w", pid, got, errdefs.ErrInvalidArgument)
	}
	return &Process{pid: pid, pidfd: pidfd}, nil
}

// WaitLogs waits, once the process has exited, until its logs hold all it
// wrote (or ctx ends): for quoting them in an error. A no-op for processes
// found with Open.
func (p *Process) WaitLogs(ctx context.Context) {
	for _, done := range []<-chan struct{}{p.logsDone, p.fifosDone} {
		if done == nil {
			continue
		}
		select {
		case <-done:
		case <-ctx.Done():
			return
		}
	}
}

// CopyFIFOs starts a copier that drains the named pipes fifos, which the
// process writes to by path, into the capped logs paths (as
// consolelog.StartFIFOCopier) until the process exits. The caller keeps
// and closes its fifos.
func (p *Process) CopyFIFOs(fifos []*os.File, paths []string, max int64) error {
	done, err := consolelog.StartFIFOCopier(fifos, paths, max, p.pidfd)
	if err != nil {
		return err
	}
	p.fifosDone = done
	return nil
}

// PID returns the process id.
func (p *Process) PID() int { return p.pid }

// Signal sends sig to the process. Signalling an exited process is not an
// error.
func (p *Process) Signal(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	err := unix.PidfdSendSignal(int(p.pidfd.Fd()), sig, nil, 0)
	if errors.Is(err, unix.ESRCH) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("signal %d: %w", p.pid, err)
	}
	return nil
}

// Exited reports, without blocking, whether the process has exited.
func (p *Process) Exited() bool {
	if p.reaped != nil {
		select {
		case <-p.reaped:
			return true
		default:
		}
	}
	fds := []unix.PollFd{{Fd: int32(p.pidfd.Fd()), Events: unix.POLLIN}}
	n, err := unix.Poll(fds, 0)
	return err == nil && n > 0
}

// Wait blocks until the process has exited (and, for a child, has been
// reaped) or ctx is done.
func (p *Process) Wait(ctx context.Context) error {
	if p.reaped != nil {
		select {
		case <-p.reaped:
			return nil
		case <-ctx.Done():
			return fmt.Errorf("wait for process %d: %w", p.pid, ctx.Err())
		}
	}
	// Not a child: poll the pidfd in short steps so ctx is honoured
	// without a goroutine that could outlive the call.
	for {
		fds := []unix.PollFd{{Fd: int32(p.pidfd.Fd()), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, 50)
		if err != nil && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("poll pidfd %d: %w", p.pid, err)
		}
		if n > 0 {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("wait for process %d: %w", p.pid, err)
		}
	}
}

// Stats reads the process's CPU times and memory from /proc.
func (p *Process) Stats() (engine.Stats, error) {
	st, err := ReadStat(p.pid)
	if err != nil {
		return engine.Stats{}, err
	}
	// /proc/<pid>/stat could belong to a new process after exit: check
	// after reading.
	if p.Exited() {
		return engine.Stats{}, fmt.Errorf("process %d has exited: %w", p.pid, errdefs.ErrNotFound)
	}
	return st, nil
}

// clockTicks is USER_HZ, which Linux fixes at 100 on every architecture
// for /proc.
const clockTicks = 100

// ReadStat parses /proc/<pid>/stat and /proc/<pid>/status.
func ReadStat(pid int) (engine.Stats, error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return engine.Stats{}, fmt.Errorf("process %d: %w", pid, errdefs.ErrNotFound)
		}
		return engine.Stats{}, err
	}
	s, err := parseStat(b)
	if err != nil {
		return engine.Stats{}, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	s.PID = pid
	if b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status")); err == nil {
		if v, ok := statusField(b, "VmRSS"); ok {
			s.RSSBytes = v
		}
	}
	return s, nil
}

// parseStat reads the fields of /proc/<pid>/stat that Stats reports. The
// command name (field 2) may contain spaces and parentheses, so fields are
// counted from the last ')'.
func parseStat(b []byte) (engine.Stats, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return engine.Stats{}, errors.New("malformed stat")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); field n is f[n-3].
	if len(f) < 24-3+1 {
		return engine.Stats{}, errors.New("short stat")
	}
	num := func(field int) uint64 {
		v, _ := strconv.ParseUint(f[field-3], 10, 64)
		return v
	}
	tick := time.Second / clockTicks
	return engine.Stats{
		UserTime:   time.Duration(num(14)) * tick,
		SystemTime: time.Duration(num(15)) * tick,
		Threads:    int(num(20)),
		VSizeBytes: num(23),
		RSSBytes:   num(24) * uint64(os.Getpagesize()),
	}, nil
}

// statusField returns a "kB" field of /proc/<pid>/status in bytes.
func statusField(b []byte, key string) (uint64, bool) {
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || k != key {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			return 0, false
		}
		n, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			return 0, false
		}
		if len(f) > 1 && f[1] == "kB" {
			n *= 1024
		}
		return n, true
	}
	return 0, false
}

// Cmdline returns the argv of process pid.
func Cmdline(pid int) ([]string, error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
	if err != nil {
		return nil, err
	}
	b = bytes.TrimSuffix(b, []byte{0})
	if len(b) == 0 {
		return nil, nil // zombie or kernel thread
	}
	return strings.Split(string(b), "\x00"), nil
}

// Find returns the pids of live processes whose argv satisfies match.
// Processes that vanish while being read are skipped.
func Find(match func(argv []string) bool) ([]int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 0 {
			continue
		}
		argv, err := Cmdline(pid)
		if err != nil || len(argv) == 0 {
			continue
		}
		if match(argv) {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}
