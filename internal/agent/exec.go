package agent

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
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
	"github.com/bangervm/banger/internal/agentproto"
)

// DefaultPath is the PATH of a process whose image sets none.
const DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// outputGrace is how long output may keep arriving after the process has
// exited, from children that inherited its stdout; then it is cut off so
// a daemon left behind cannot hold the exec open.
const outputGrace = 2 * time.Second

// Start implements agentproto.Handler.
func (h *Handler) Start(ctx context.Context, req agentproto.ExecRequest, stdout, stderr io.Writer) (agentproto.GuestProcess, error) {
	u, err := h.lookupUser(req.User)
	if err != nil {
		return nil, err
	}
	env := mergeEnv(h.defaultEnv(u, req.TTY), req.Env)
	path, err := lookPath(req.Argv[0], envValue(env, "PATH"))
	if err != nil {
		return nil, err
	}
	dir := req.Dir
	if dir == "" {
		dir = h.cfg.Dir
	}
	if dir == "" {
		dir = u.home
	}
	if dir == "" {
		dir = "/"
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("exec %s: working directory %s does not exist: %w", req.Argv[0], dir, errdefs.ErrNotFound)
	}
	cmd := &exec.Cmd{Path: path, Args: req.Argv, Env: env, Dir: dir, SysProcAttr: &syscall.SysProcAttr{}}
	if u.set {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: u.uid, Gid: u.gid, Groups: u.groups}
	}
	p := &process{}
	if req.TTY {
		err = p.startTTY(h.waiter, cmd, req.Rows, req.Cols, stdout)
	} else {
		err = p.startPipes(h.waiter, cmd, stdout, stderr)
	}
	if err != nil {
		return nil, fmt.Errorf("exec %s: %w", req.Argv[0], err)
	}
	h.log.Info("exec", "argv", req.Argv, "pid", p.pid, "tty", req.TTY)
	return p, nil
}

// process is a started command. Its stdout and stderr are copied by
// goroutines counted in copies; Wait waits for them.
type process struct {
	pid    int
	status <-chan syscall.WaitStatus
	stdin  io.WriteCloser
	pty    *os.File // the terminal's master side, with TTY
	copies sync.WaitGroup
	outs   []*os.File // read ends, closed when output is cut off
}

func (p *process) startPipes(w waiter, cmd *exec.Cmd, stdout, stderr io.Writer) error {
	// Own pipes rather than exec.Cmd's so that waiting can go through the
	// reaper instead of Cmd.Wait.
	inR, inW, err := os.Pipe()
	if err != nil {
		return err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		outR.Close()
		outW.Close()
		return err
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, errW
	// Its own process group, so a signal reaches the whole pipeline.
	cmd.SysProcAttr.Setpgid = true
	p.status, err = w.start(cmd)
	inR.Close()
	outW.Close()
	errW.Close()
	if err != nil {
		inW.Close()
		outR.Close()
		errR.Close()
		return startError(err)
	}
	p.pid = cmd.Process.Pid
	p.stdin = inW
	p.outs = []*os.File{outR, errR}
	p.copy(stdout, outR)
	p.copy(stderr, errR)
	return nil
}

func (p *process) startTTY(w waiter, cmd *exec.Cmd, rows, cols uint16, stdout io.Writer) error {
	master, slave, err := openPTY()
	if err != nil {
		return fmt.Errorf("open pty: %w", err)
	}
	if rows > 0 && cols > 0 {
		_ = setWinsize(master, rows, cols)
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr.Setsid = true
	cmd.SysProcAttr.Setctty = true
	cmd.SysProcAttr.Ctty = 0
	p.status, err = w.start(cmd)
	slave.Close()
	if err != nil {
		master.Close()
		return startError(err)
	}
	p.pid = cmd.Process.Pid
	p.pty = master
	p.stdin = ttyInput{master}
	p.outs = []*os.File{master}
	p.copy(stdout, master)
	return nil
}

func startError(err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: %w", err, errdefs.ErrNotFound)
	}
	if errors.Is(err, fs.ErrPermission) {
		return fmt.Errorf("%w: %w", err, errdefs.ErrPermissionDenied)
	}
	return err
}

func (p *process) copy(w io.Writer, r *os.File) {
	p.copies.Add(1)
	go func() {
		defer p.copies.Done()
		// A terminal's master gives EIO once the last slave is closed:
		// that is its end of file.
		_, _ = io.CopyBuffer(w, r, make([]byte, 32<<10))
	}()
}

func (p *process) Stdin() io.WriteCloser { return p.stdin }

func (p *process) Resize(rows, cols uint16) error {
	if p.pty == nil {
		return fmt.Errorf("resize: process has no terminal: %w", errdefs.ErrFailedPrecondition)
	}
	return setWinsize(p.pty, rows, cols)
}

func (p *process) Signal(sig syscall.Signal) error {
	// The process leads its own group (Setpgid or Setsid).
	if err := syscall.Kill(-p.pid, sig); err != nil {
		return syscall.Kill(p.pid, sig)
	}
	return nil
}

func (p *process) Wait() (agentproto.ExitStatus, error) {
	ws := <-p.status
	done := make(chan struct{})
	go func() { p.copies.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(outputGrace):
		for _, f := range p.outs {
			f.Close()
		}
		<-done
	}
	for _, f := range p.outs {
		f.Close()
	}
	return exitStatus(ws), nil
}

func exitStatus(ws syscall.WaitStatus) agentproto.ExitStatus {
	if ws.Signaled() {
		return agentproto.ExitStatus{Code: 128 + int(ws.Signal()), Signal: int(ws.Signal())}
	}
	return agentproto.ExitStatus{Code: ws.ExitStatus()}
}

// ttyInput writes stdin to the terminal; closing it sends the terminal's
// end-of-file character rather than closing the master, which would hang
// up the session.
type ttyInput struct{ f *os.File }

func (t ttyInput) Write(b []byte) (int, error) { return t.f.Write(b) }
func (t ttyInput) Close() error {
	_, err := t.f.Write([]byte{4}) // ^D, VEOF by default
	return err
}

// openPTY opens a new pseudo-terminal pair through /dev/ptmx.
func openPTY() (master, slave *os.File, err error) {
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, nil, err
	}
	var n int
	err = control(m, func(fd int) error {
		if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
			return fmt.Errorf("unlock pty: %w", err)
		}
		var err error
		n, err = unix.IoctlGetInt(fd, unix.TIOCGPTN)
		return err
	})
	if err != nil {
		m.Close()
		return nil, nil, err
	}
	name := "/dev/pts/" + strconv.Itoa(n)
	s, err := os.OpenFile(name, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		m.Close()
		return nil, nil, err
	}
	return m, s, nil
}

func setWinsize(f *os.File, rows, cols uint16) error {
	return control(f, func(fd int) error {
		return unix.IoctlSetWinsize(fd, unix.TIOCSWINSZ, &unix.Winsize{Row: rows, Col: cols})
	})
}

// control runs fn on f's descriptor without File.Fd, which would switch
// the file to blocking mode and so break deadlines and Close unblocking a
// Read.
func control(f *os.File, fn func(fd int) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

// lookPath finds file in the PATH the process will get (not the agent's).
func lookPath(file, path string) (string, error) {
	if strings.Contains(file, "/") {
		if err := executable(file); err != nil {
			return "", fmt.Errorf("exec %s: %w", file, err)
		}
		return file, nil
	}
	if path == "" {
		path = DefaultPath
	}
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, file)
		if executable(p) == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("exec %s: executable file not found in PATH %s: %w", file, path, errdefs.ErrNotFound)
}

func executable(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%w: %w", err, errdefs.ErrNotFound)
		}
		return err
	}
	if fi.IsDir() || fi.Mode()&0o111 == 0 {
		return fmt.Errorf("%s is not an executable file: %w", p, errdefs.ErrPermissionDenied)
	}
	return nil
}

// defaultEnv is the environment every process starts from: the image's,
// with PATH, HOME, USER and (with a terminal) TERM filled in if missing.
func (h *Handler) defaultEnv(u user, tty bool) []string {
	env := mergeEnv(nil, h.cfg.Env)
	add := func(k, v string) {
		if envValue(env, k) == "" && v != "" {
			env = append(env, k+"="+v)
		}
	}
	add("PATH", DefaultPath)
	add("HOME", u.home)
	add("HOME", "/")
	add("USER", u.name)
	if tty {
		add("TERM", "xterm-256color")
	}
	return env
}

// mergeEnv returns base with over applied: later entries replace earlier
// ones with the same key, order of first appearance is kept.
func mergeEnv(base, over []string) []string {
	var out []string
	idx := map[string]int{}
	for _, kv := range append(append([]string(nil), base...), over...) {
		k, _, _ := strings.Cut(kv, "=")
		if i, ok := idx[k]; ok {
			out[i] = kv
			continue
		}
		idx[k] = len(out)
		out = append(out, kv)
	}
	return out
}

func envValue(env []string, key string) string {
	for i := len(env) - 1; i >= 0; i-- {
		if k, v, ok := strings.Cut(env[i], "="); ok && k == key {
			return v
		}
	}
	return ""
}

// user is a resolved ExecRequest.User.
type user struct {
	set      bool // false: keep the agent's own credentials
	name     string
	uid, gid uint32
	groups   []uint32
	home     string
}

// lookupUser resolves "name", "uid", "name:group" or "uid:gid" against the
// guest's /etc/passwd and /etc/group. A numeric uid needs no passwd entry
// (as in OCI runtimes; its group is then 0).
func (h *Handler) lookupUser(spec string) (user, error) {
	if spec == "" {
		spec = h.cfg.User
	}
	if spec == "" {
		u := user{name: "root", home: "/root"}
		if pw, ok := findPasswd(h.etc("passwd"), "0"); ok {
			u.name, u.home = pw[0], pw[5]
		}
		return u, nil
	}
	uspec, gspec, _ := strings.Cut(spec, ":")
	u := user{set: true}
	if pw, ok := findPasswd(h.etc("passwd"), uspec); ok {
		uid, _ := strconv.ParseUint(pw[2], 10, 32)
		gid, _ := strconv.ParseUint(pw[3], 10, 32)
		u.name, u.uid, u.gid, u.home = pw[0], uint32(uid), uint32(gid), pw[5]
	} else if n, err := strconv.ParseUint(uspec, 10, 32); err == nil {
		u.uid = uint32(n)
	} else {
		return user{}, fmt.Errorf("user %q: no such user in /etc/passwd: %w", uspec, errdefs.ErrNotFound)
	}
	groups := readGroups(h.etc("group"))
	if gspec != "" {
		if n, err := strconv.ParseUint(gspec, 10, 32); err == nil {
			u.gid = uint32(n)
		} else if g, ok := groups[gspec]; ok {
			u.gid = g.gid
		} else {
			return user{}, fmt.Errorf("group %q: no such group in /etc/group: %w", gspec, errdefs.ErrNotFound)
		}
	}
	for _, g := range groups {
		if u.name != "" && g.members[u.name] && g.gid != u.gid {
			u.groups = append(u.groups, g.gid)
		}
	}
	if u.groups == nil {
		u.groups = []uint32{} // drop the agent's own supplementary groups
	}
	return u, nil
}

func (h *Handler) etc(name string) string { return filepath.Join(h.cfg.EtcDir, name) }

// findPasswd returns the fields of the passwd line whose name or uid is id.
func findPasswd(path, id string) ([]string, bool) {
	f, err := os.Open(path)
	if err != nil {
		return nil, false
	}
	defer f.Close()
	return scanPasswd(f, id)
}

// scanPasswd returns the fields of the passwd line in r whose name or uid
// is id.
func scanPasswd(r io.Reader, id string) ([]string, bool) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		fields := strings.Split(sc.Text(), ":")
		if len(fields) >= 7 && (fields[0] == id || fields[2] == id) {
			return fields, true
		}
	}
	return nil, false
}

type group struct {
	gid     uint32
	members map[string]bool
}

func readGroups(path string) map[string]group {
	out := map[string]group{}
	f, err := os.Open(path)
	if err != nil {
		return out
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Split(sc.Text(), ":")
		if len(fields) < 4 {
			continue
		}
		gid, err := strconv.ParseUint(fields[2], 10, 32)
		if err != nil {
			continue
		}
		g := group{gid: uint32(gid), members: map[string]bool{}}
		for _, m := range strings.Split(fields[3], ",") {
			if m != "" {
				g.members[m] = true
			}
		}
		out[fields[0]] = g
	}
	return out
}
