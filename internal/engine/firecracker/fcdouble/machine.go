package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bangervm/banger/internal/engine"
	"github.com/bangervm/banger/internal/engine/proc"
	"github.com/bangervm/banger/internal/engine/qemu"
)

// startTimeout bounds how long InstanceStart waits for QEMU's QMP socket.
const startTimeout = 15 * time.Second

// qemuMachine runs the guest as a QEMU child process. QEMU gets
// PR_SET_PDEATHSIG (SIGKILL) so it dies with the double; when QEMU exits,
// its status is sent on exited and the double exits too.
type qemuMachine struct {
	id     string
	log    *logger
	exited chan int

	mu      sync.Mutex
	dir     string   // QEMU's sockets (qmp.sock, agent.sock)
	ram     *os.File // guest RAM (a memfd), nil for a restored VM
	cmd     *exec.Cmd
	done    chan struct{} // closed when QEMU has exited
	running bool          // Start succeeded: QEMU's exit ends the double
}

func newQEMUMachine(id string, log *logger) *qemuMachine {
	return &qemuMachine{id: id, log: log, exited: make(chan int, 1)}
}

// qemuBinary is qemu-system-x86_64 from PATH, or $FCDOUBLE_QEMU.
func qemuBinary() (string, error) {
	b := os.Getenv("FCDOUBLE_QEMU")
	if b == "" {
		b = qemu.DefaultBinary
	}
	return exec.LookPath(b)
}

// qemuArgv builds QEMU's argv with banger's qemu.Cmdline, then adapts it to
// Firecracker's behaviour: the kernel command line is boot_args as given
// (plus tsc_early_khz under TCG, without which a TCG guest can hang in clock
// calibration), and the agent's
// virtio-serial port exists only when a vsock device was configured.
func qemuArgv(binary, dir string, p bootPlan, accel engine.Accel, tscKHz int64, mem qemuMemory) []string {
	spec := engine.Spec{
		ID: "fcdouble", Dir: dir, VCPU: p.VCPU, MemoryMiB: p.MemMiB,
		Kernel: p.Kernel, Initrd: p.Initrd, Cmdline: p.BootArgs,
	}
	for _, d := range p.Drives {
		spec.Disks = append(spec.Disks, engine.Disk{Path: d.Path, ReadOnly: d.ReadOnly})
	}
	if p.Net != nil {
		spec.Net = &engine.NetSpec{TapName: p.Net.HostDev, MAC: p.Net.MAC, TapFD: p.tap}
	}
	argv := qemu.Cmdline(qemu.CmdlineConfig{
		Binary: binary, Spec: spec, Accel: accel, TSCKHz: tscKHz, TBSizeMiB: 64, TapFD: 3,
		MemPath: mem.path, MemShared: mem.shared, Incoming: mem.incoming,
	})
	cmdline := p.BootArgs
	if accel != engine.AccelKVM && tscKHz > 0 {
		cmdline = strings.TrimSpace(cmdline + " tsc_early_khz=" + strconv.FormatInt(tscKHz, 10))
	}
	out := argv[:1]
	for i := 1; i < len(argv); i++ {
		a := argv[i]
		next := ""
		if i+1 < len(argv) {
			next = argv[i+1]
		}
		switch {
		case a == "-append":
			out = append(out, a, cmdline)
			i++
		case !p.Vsock && a == "-device" && (next == "virtio-serial-device" || strings.HasPrefix(next, "virtserialport,")):
			i++
		case !p.Vsock && a == "-chardev" && strings.HasPrefix(next, "socket,id=agent,"):
			i++
		default:
			out = append(out, a)
		}
	}
	return out
}

// qemuMemory is where QEMU keeps guest RAM: a file, mapped shared for a
// VM that may be snapshotted, private for a restored one (see
// qemu.CmdlineConfig).
type qemuMemory struct {
	path             string
	shared, incoming bool
}

// ramFD is the fd of the guest RAM memfd in QEMU: every VM the double
// boots has its RAM in a memfd it shares with QEMU (mapped shared), so
// that /snapshot/create can save the device state without it
// (x-ignore-shared) and copy the RAM. A memfd, not a file: nothing is left
// when the double is killed, and no guest RAM goes to a disk.
const ramFD = 4

// Start boots the guest and returns once QEMU answers on its QMP socket.
func (m *qemuMachine) Start(p bootPlan) error {
	return m.start(p, qemuMemory{shared: true})
}

// start is Start with RAM as mem says; an empty mem.path is a new memfd
// (m.ram).
func (m *qemuMachine) start(p bootPlan, mem qemuMemory) error {
	bin, err := qemuBinary()
	if err != nil {
		return err
	}
	accel, why := qemu.ChooseAccel(qemu.ProbeHost())
	var tsc int64
	if accel != engine.AccelKVM {
		m.log.Warn(why)
		if tsc, err = qemu.HostTSCKHz(); err != nil {
			m.log.Warn("host TSC rate unknown (" + err.Error() + "): the guest runs with -icount")
			tsc = 0
		}
	}
	if p.Net != nil && os.Getenv("FCDOUBLE_CHROOT") != "" {
		// Jailed: the host's /dev/net/tun may be root's alone; the
		// jail's is the owner's (the jailer made it).
		if p.tap, err = openTap(inJail("/dev/net/tun"), p.Net.HostDev); err != nil {
			return err
		}
		defer p.tap.Close()
	}
	// Jailed, QEMU's sockets live in the jail, as everything of a jailed
	// Firecracker does: outside it, /tmp may be a systemd unit's private
	// one, removed when that unit restarts while the VM runs on.
	dir, err := os.MkdirTemp(os.Getenv("FCDOUBLE_CHROOT"), "fcd-")
	if err != nil {
		return err
	}
	var ram *os.File
	if mem.path == "" {
		if ram, err = newRAM(p.MemMiB); err != nil {
			os.RemoveAll(dir)
			return err
		}
		defer func() {
			if m.ram != ram {
				ram.Close()
			}
		}()
		mem.path = "/proc/self/fd/" + strconv.Itoa(ramFD)
	}
	argv := qemuArgv(bin, dir, p, accel, tsc, mem)
	m.log.Info("Starting QEMU: " + strings.Join(argv, " "))

	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if p.tap != nil {
		cmd.ExtraFiles = []*os.File{p.tap} // fd 3, as qemuArgv says
	}
	if ram != nil {
		cmd.ExtraFiles = append(cmd.ExtraFiles[:0:0], p.tap, ram) // a nil tap closes fd 3
	}
	done := make(chan struct{})
	started := make(chan error, 1)
	// PR_SET_PDEATHSIG fires when the thread that forked QEMU exits: fork
	// from a locked thread that lives as long as QEMU does.
	go func() {
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		err := cmd.Wait()
		code := 0
		if err != nil {
			code = 1
			var ee *exec.ExitError
			if errors.As(err, &ee) && ee.ExitCode() > 0 {
				code = ee.ExitCode()
			}
		}
		os.RemoveAll(dir)
		m.mu.Lock()
		close(done)
		running := m.running
		m.mu.Unlock()
		if running {
			m.exited <- code
		}
	}()
	if err := <-started; err != nil {
		os.RemoveAll(dir)
		return err
	}
	m.mu.Lock()
	m.dir, m.cmd, m.done, m.ram = dir, cmd, done, ram
	m.mu.Unlock()

	qmp := filepath.Join(dir, qemu.QMPSocket)
	deadline := time.Now().Add(startTimeout)
	for {
		if c, err := net.Dial("unix", qmp); err == nil {
			c.Close()
			m.mu.Lock()
			defer m.mu.Unlock()
			select {
			case <-done:
				return errors.New("QEMU exited during start (see its messages on stderr)")
			default:
			}
			// A restored VM's QEMU may exit while its state loads; its
			// exit ends the double only once it runs (see Restore).
			m.running = !mem.incoming
			return nil
		}
		select {
		case <-done:
			return errors.New("QEMU exited during start (see its messages on stderr)")
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			m.kill()
			return errors.New("QEMU did not answer on its QMP socket")
		}
	}
}

// snapshotWait bounds saving or loading a snapshot's device state.
const snapshotWait = 60 * time.Second

// qmpSocket returns QEMU's QMP socket and a func reporting whether QEMU
// has exited.
func (m *qemuMachine) qmpSocket() (string, func() bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.dir == "" {
		return "", nil, errors.New("not started")
	}
	done := m.done
	return filepath.Join(m.dir, qemu.QMPSocket), func() bool {
		select {
		case <-done:
			return true
		default:
			return false
		}
	}, nil
}

// Pause stops the guest's vCPUs.
func (m *qemuMachine) Pause() error { return m.qmp("stop") }

// Resume lets them go on.
func (m *qemuMachine) Resume() error { return m.qmp("cont") }

func (m *qemuMachine) qmp(command string) error {
	sock, _, err := m.qmpSocket()
	if err != nil {
		return err
	}
	return qmpCommand(sock, command)
}

// Snapshot writes header and a newline to state, then QEMU's device state
// without RAM (qemu.SaveState), and copies the RAM file to mem. The guest
// stays paused.
func (m *qemuMachine) Snapshot(state, mem string, header []byte) error {
	sock, exited, err := m.qmpSocket()
	if err != nil {
		return err
	}
	m.mu.Lock()
	ram := m.ram
	m.mu.Unlock()
	if ram == nil {
		return errors.New("fcdouble cannot snapshot a VM restored from a snapshot")
	}
	if err := os.WriteFile(state, append(header, '\n'), 0o600); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), snapshotWait)
	defer cancel()
	if err := qemu.SaveState(ctx, sock, exited, "exec:cat >> "+qemu.ShellQuote(state)); err != nil {
		return err
	}
	return copySparse(ram, mem)
}

// Restore starts QEMU with p's devices and its RAM mapped privately from
// mem, loads the device state that follows the header (offset bytes) in
// state, and pauses the guest again unless resume. On error QEMU is gone
// and, as Firecracker does, the double exits shortly after answering.
func (m *qemuMachine) Restore(p bootPlan, state, mem string, offset int64, resume bool) error {
	if unix.Access(mem, unix.W_OK) != nil {
		// Firecracker maps the memory file privately from a read-only
		// open; QEMU 7.2 opens a memory-backend-file read-write (its
		// readonly=on makes the guest's RAM read-only, before 8.2's
		// rom=off). The double copies a memory file it may not write (a
		// sealed template's) for QEMU: its one departure, a copy per
		// jailed clone, gone once QEMU has mapped it.
		cp, err := privateCopy(mem)
		if err != nil {
			m.Abort()
			return fmt.Errorf("copy the read-only memory file %s: %w", mem, err)
		}
		defer os.Remove(cp)
		mem = cp
	}
	if err := m.start(p, qemuMemory{path: mem, incoming: true}); err != nil {
		m.Abort()
		return err
	}
	sock, exited, err := m.qmpSocket()
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), snapshotWait)
		err = qemu.LoadState(ctx, sock, exited, "exec:tail -c +"+strconv.FormatInt(offset+1, 10)+" "+qemu.ShellQuote(state))
		cancel()
	}
	if err == nil && !resume {
		err = qmpCommand(sock, "stop")
	}
	if err != nil {
		m.kill()
		m.Abort()
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if exited() {
		return errors.New("QEMU exited after loading the snapshot")
	}
	m.running = true
	return nil
}

// Abort ends the double once the API has answered the failed request.
func (m *qemuMachine) Abort() {
	go func() {
		time.Sleep(100 * time.Millisecond)
		m.exited <- 1
	}()
}

// privateCopy copies mem into a new file in the jail (or the temporary
// directory) and returns its path.
func privateCopy(mem string) (string, error) {
	src, err := os.Open(mem)
	if err != nil {
		return "", err
	}
	defer src.Close()
	dir := os.Getenv("FCDOUBLE_CHROOT")
	if dir == "" {
		dir = os.TempDir()
	}
	f, err := os.CreateTemp(dir, "fcd-memory-")
	if err != nil {
		return "", err
	}
	f.Close()
	if err := copySparse(src, f.Name()); err != nil {
		os.Remove(f.Name())
		return "", err
	}
	return f.Name(), nil
}

// copySparse copies src to a new file dst, leaving holes where src has
// zero blocks (a guest's RAM is mostly untouched).
func copySparse(src *os.File, dst string) (err error) {
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := out.Close(); err == nil {
			err = cerr
		}
	}()
	return proc.CopySparse(out, src)
}

// newRAM is a memfd of size MiB for guest RAM.
func newRAM(mib int) (*os.File, error) {
	fd, err := unix.MemfdCreate("fcdouble-ram", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("guest RAM memfd: %w", err)
	}
	f := os.NewFile(uintptr(fd), "fcdouble-ram")
	if err := f.Truncate(int64(mib) << 20); err != nil {
		f.Close()
		return nil, fmt.Errorf("guest RAM memfd: %w", err)
	}
	return f, nil
}

// AgentSocket is QEMU's unix socket for the agent's virtio-serial port.
func (m *qemuMachine) AgentSocket() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.dir == "" {
		return ""
	}
	return filepath.Join(m.dir, qemu.AgentSocket)
}

// kill stops QEMU, if running, and waits for it briefly.
func (m *qemuMachine) kill() {
	m.mu.Lock()
	cmd, done := m.cmd, m.done
	m.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Kill()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
	}
}

// CtrlAltDel presses the guest's ACPI power button through QMP: QEMU's
// microvm has no i8042 keyboard controller to send the keys to.
func (m *qemuMachine) CtrlAltDel() error {
	m.mu.Lock()
	dir := m.dir
	m.mu.Unlock()
	if dir == "" {
		return errors.New("not started")
	}
	return qmpCommand(filepath.Join(dir, qemu.QMPSocket), "system_powerdown")
}

// qmpCommand runs one argument-less QMP command.
func qmpCommand(sock, command string) error {
	c, err := net.DialTimeout("unix", sock, 2*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(c)
	type msg struct {
		QMP    json.RawMessage `json:"QMP"`
		Return json.RawMessage `json:"return"`
		Error  *struct {
			Class string `json:"class"`
			Desc  string `json:"desc"`
		} `json:"error"`
	}
	// reply skips asynchronous events up to the command's answer.
	reply := func() (msg, error) {
		for {
			line, err := r.ReadBytes('\n')
			if err != nil {
				return msg{}, err
			}
			var mm msg
			if err := json.Unmarshal(line, &mm); err != nil {
				return msg{}, err
			}
			if mm.QMP != nil || mm.Return != nil || mm.Error != nil {
				return mm, nil
			}
		}
	}
	if _, err := reply(); err != nil { // greeting
		return err
	}
	for _, cmd := range []string{"qmp_capabilities", command} {
		if _, err := fmt.Fprintf(c, `{"execute":%q}`+"\n", cmd); err != nil {
			return err
		}
		mm, err := reply()
		if err != nil {
			return err
		}
		if mm.Error != nil {
			return fmt.Errorf("qmp %s: %s: %s", cmd, mm.Error.Class, mm.Error.Desc)
		}
	}
	return nil
}

// openTap attaches to the existing tap name through the tun device at tun,
// with the flags Firecracker uses (no packet information, a virtio-net
// header).
func openTap(tun, name string) (*os.File, error) {
	fd, err := unix.Open(tun, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open tap %s: %s: %w", name, tun, err)
	}
	ifr, err := unix.NewIfreq(name)
	if err == nil {
		ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
		err = unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr)
	}
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("open tap %s: TUNSETIFF: %w", name, err)
	}
	return os.NewFile(uintptr(fd), tun+":"+name), nil
}
