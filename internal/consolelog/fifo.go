package consolelog

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// fifoEnv, beside copierEnv, makes the copier read named pipes until the
// process whose pidfd is its last descriptor exits (see StartFIFOCopier).
const fifoEnv = "BANGER_CONSOLELOG_FIFOS"

// MakeFIFO makes a named pipe at path (replacing a stale one), mode 0600,
// owned by uid:gid unless uid < 0, and opens it for reading and writing
// without blocking. An engine that logs to a path (Firecracker's log and
// metrics) writes into it; StartFIFOCopier's copier drains it into a
// capped file. Opening it read-write keeps the pipe's reader alive from
// the start, so the engine's open never fails for want of a reader.
func MakeFIFO(path string, uid, gid int) (*os.File, error) {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("log pipe: %w", err)
	}
	if err := unix.Mkfifo(path, 0o600); err != nil {
		return nil, fmt.Errorf("log pipe %s: %w", path, err)
	}
	if uid >= 0 {
		if err := os.Lchown(path, uid, gid); err != nil {
			os.Remove(path)
			return nil, fmt.Errorf("log pipe %s: %w", path, err)
		}
	}
	f, err := os.OpenFile(path, os.O_RDWR|syscall.O_NONBLOCK|syscall.O_NOFOLLOW, 0)
	if err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("log pipe %s: %w", path, err)
	}
	return f, nil
}

// StartFIFOCopier starts a copier process that appends what is written to
// fifos[i] to the log paths[i], each capped at max bytes (0 means
// DefaultMax), until the process pidfd refers to has exited; it then
// copies what is left in the pipes and exits. The pipes must be named
// pipes opened for reading and writing (MakeFIFO): they never reach end
// of file, which is why the engine's exit, not the pipes, ends the copier.
// The caller may close its copies of fifos and pidfd once this returns;
// done is closed when the copier has exited (seen only while this process
// lives). Like StartCopier's, the copier outlives the caller.
func StartFIFOCopier(fifos []*os.File, paths []string, max int64, pidfd *os.File) (done <-chan struct{}, err error) {
	if max <= 0 {
		max = DefaultMax
	}
	if len(fifos) == 0 || len(fifos) != len(paths) || pidfd == nil {
		return nil, fmt.Errorf("log pipe copier: %d pipes for %d paths", len(fifos), len(paths))
	}
	cmd := exec.Command("/proc/self/exe", paths...)
	cmd.Args[0] = CopierName
	cmd.Env = []string{copierEnv + "=" + strconv.FormatInt(max, 10), fifoEnv + "=1"}
	cmd.Stdin = fifos[0]
	cmd.ExtraFiles = append(append([]*os.File{}, fifos[1:]...), pidfd)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("log pipe copier: %w", err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	return exited, nil
}

// runFIFOCopier is the copier of StartFIFOCopier: pipe i is fd 0, then 3,
// 4, ...; the pidfd follows them.
func runFIFOCopier(max int64, paths []string) int {
	fds := make([]int, len(paths))
	ws := make([]*Writer, len(paths))
	for i, p := range paths {
		fds[i] = 0
		if i > 0 {
			fds[i] = 2 + i
		}
		// The pipes' data comes from the engine (and through it the
		// guest): a log that cannot be written is still drained.
		ws[i], _ = Open(p, max)
		unix.SetNonblock(fds[i], true)
	}
	pidfd := 3 + len(paths) - 1
	buf := make([]byte, 32<<10)
	drain := func(i int) {
		for {
			n, err := unix.Read(fds[i], buf)
			if n > 0 && ws[i] != nil {
				if _, werr := ws[i].Write(buf[:n]); werr != nil {
					ws[i].Close()
					ws[i] = nil
				}
			}
			if err != nil || n <= 0 {
				return // EAGAIN: empty for now
			}
		}
	}
	poll := make([]unix.PollFd, len(fds)+1)
	for i, fd := range fds {
		poll[i] = unix.PollFd{Fd: int32(fd), Events: unix.POLLIN}
	}
	poll[len(fds)] = unix.PollFd{Fd: int32(pidfd), Events: unix.POLLIN}
	for {
		if _, err := unix.Poll(poll, -1); err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			fmt.Fprintln(os.Stderr, "banger-consolelog:", err)
			break
		}
		for i := range fds {
			if poll[i].Revents != 0 {
				drain(i)
			}
		}
		if poll[len(fds)].Revents != 0 { // the engine has exited
			break
		}
	}
	for i := range fds {
		drain(i)
		if ws[i] != nil {
			ws[i].Close()
		}
	}
	return 0
}
