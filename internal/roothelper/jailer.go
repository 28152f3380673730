package roothelper

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/engine/firecracker"
	"github.com/bangervm/banger/internal/engine/proc"
)

// OpLaunchJailer starts Firecracker's jailer as root for the owner's
// daemon (see JailerPolicy).
const OpLaunchJailer = "launchJailer"

// JailerPolicy is what the helper lets the owner's daemon start under the
// jailer: only these binaries, only in this chroot base, only as the
// owner. It comes from the helper's command line (--jailer,
// --firecracker, --jail-base), never from a request.
type JailerPolicy struct {
	// Jailer and Firecracker are the binaries, absolute paths.
	Jailer, Firecracker string
	// ChrootBase is the owner's chroot base (the daemon's <state>/jail),
	// absolute and clean.
	ChrootBase string
	// UID and GID are the owner's: firecracker runs as them.
	UID, GID int
	// StateFile records the processes launchJailer started, for
	// killJailer, across helper restarts.
	StateFile string
}

// OwnerGID returns the primary group of uid, for JailerPolicy.GID.
func OwnerGID(uid int) (int, error) {
	u, err := user.LookupId(strconv.Itoa(uid))
	if err != nil {
		return 0, fmt.Errorf("owner uid %d: %w", uid, err)
	}
	return strconv.Atoi(u.Gid)
}

// jailIDRE is banger's jail id (firecracker.JailID of a VM id): lower-case
// alphanumerics and hyphens, at most 64, as jailer.md allows.
var jailIDRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,63}$`)

// cgroupFiles are the cgroup files a request may set (what
// firecracker.cgroupLimits and a config's cgroups use); cgroupValueRE is
// what their values may hold: numbers, "max", CPU lists.
var (
	cgroupFiles   = []string{"cpu.max", "cpu.weight", "memory.max", "memory.high", "pids.max", "cpuset.cpus", "cpuset.mems"}
	cgroupValueRE = regexp.MustCompile(`^[0-9a-z ,-]{1,64}$`)
	apiSockRE     = regexp.MustCompile(`^/[a-zA-Z0-9][a-zA-Z0-9._-]{0,63}$`)
)

// validateJailer checks a launchJailer request against the policy before
// anything runs: banger's id format, the configured firecracker, the
// owner's uid and gid, the configured chroot base with no symlink or
// foreign-owned directory on the way to the chroot, cgroup settings from
// the allowlist, and no other jailer or firecracker argument.
func validateJailer(c *firecracker.JailerConfig, p *JailerPolicy) error {
	if p == nil {
		return fmt.Errorf("this root helper does not start Firecracker's jailer: start it with --jailer, --firecracker and --jail-base <the owner's state dir>/jail, or set jailer = false in config.toml: %w", errdefs.ErrFailedPrecondition)
	}
	if c == nil {
		return fmt.Errorf("no jailer arguments: %w", errdefs.ErrInvalidArgument)
	}
	inv := func(format string, a ...any) error {
		return fmt.Errorf(format+": %w", append(a, errdefs.ErrInvalidArgument)...)
	}
	deny := func(format string, a ...any) error {
		return fmt.Errorf(format+": %w", append(a, errdefs.ErrPermissionDenied)...)
	}
	switch {
	case !jailIDRE.MatchString(c.ID):
		return inv("jail id %q: want banger's format (lower-case letters, digits, hyphens; at most 64)", c.ID)
	case c.ExecFile != p.Firecracker:
		return deny("exec file %q: this helper starts only %s", c.ExecFile, p.Firecracker)
	case c.UID != p.UID || c.GID != p.GID:
		return deny("uid:gid %d:%d: firecracker runs only as the owner, %d:%d", c.UID, c.GID, p.UID, p.GID)
	case c.ChrootBase != p.ChrootBase:
		return deny("chroot base %q: this helper jails only under %s", c.ChrootBase, p.ChrootBase)
	case c.CgroupVersion != 0 && c.CgroupVersion != 1 && c.CgroupVersion != 2:
		return inv("cgroup version %d", c.CgroupVersion)
	case c.ParentCgroup != "":
		return deny("parent cgroup %q: not allowed", c.ParentCgroup)
	case c.NetNS != "":
		return deny("netns %q: not allowed", c.NetNS)
	case len(c.ResourceLimits) > 0:
		return deny("resource limits %q: not allowed", c.ResourceLimits)
	case len(c.FirecrackerArgs) != 2 || c.FirecrackerArgs[0] != "--api-sock" || !apiSockRE.MatchString(c.FirecrackerArgs[1]):
		return deny("firecracker arguments %q: only --api-sock /<name> is allowed", c.FirecrackerArgs)
	}
	for _, cg := range c.Cgroups {
		k, v, ok := strings.Cut(cg, "=")
		if !ok || !slices.Contains(cgroupFiles, k) || !cgroupValueRE.MatchString(v) {
			return deny("cgroup setting %q: allowed are %s with a numeric value", cg, strings.Join(cgroupFiles, ", "))
		}
	}
	return checkJailPath(c, p)
}

// checkJailPath checks every directory from / to the chroot
// <base>/<exec name>/<id>/root, which the daemon has staged: each is a
// real directory (no symlink), owned by root or the owner, and nothing
// sits where the jailer copies firecracker (it would follow a symlink
// there as root).
//
// Known limit: this is a check before the jailer runs, and the jailer
// works on path strings. The owner can still change the directories it
// owns between this check and the jailer's root phase (swap the chroot
// for a symlink, plant one where the exec file is copied), which jailer.md
// leaves to the operator ("root-owned, not world-writable"). Closing that
// needs a jail tree the owner cannot write while the jailer runs as root
// (the helper building it, root's, with the VM's files bind-mounted from
// descriptors the daemon sends); until then launchJailer is off unless
// the helper is started with --jailer, and a hostile owner must not be
// given it.
func checkJailPath(c *firecracker.JailerConfig, p *JailerPolicy) error {
	chroot := filepath.Join(p.ChrootBase, filepath.Base(p.Firecracker), c.ID, "root")
	cur := "/"
	for _, part := range strings.Split(strings.TrimPrefix(chroot, "/"), "/") {
		cur = filepath.Join(cur, part)
		fi, err := os.Lstat(cur)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("jail %s: %s does not exist (stage the jail first): %w", chroot, cur, errdefs.ErrFailedPrecondition)
			}
			return fmt.Errorf("jail %s: %w", chroot, err)
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			return fmt.Errorf("jail %s: %s is a symlink: %w", chroot, cur, errdefs.ErrPermissionDenied)
		}
		if !fi.IsDir() {
			return fmt.Errorf("jail %s: %s is not a directory: %w", chroot, cur, errdefs.ErrPermissionDenied)
		}
		st, _ := fi.Sys().(*syscall.Stat_t)
		if st == nil || int(st.Uid) != 0 && int(st.Uid) != p.UID {
			return fmt.Errorf("jail %s: %s is owned by neither root nor the owner: %w", chroot, cur, errdefs.ErrPermissionDenied)
		}
	}
	exe := filepath.Join(chroot, filepath.Base(p.Firecracker))
	if _, err := os.Lstat(exe); !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("jail %s: %s already exists (the jailer copies firecracker there): %w", chroot, exe, errdefs.ErrPermissionDenied)
	}
	return nil
}

// launchJailer starts the policy's jailer with c's arguments, its stdout
// and stderr on console (a file or the pipe of a log copier, from the
// daemon), stdin on
// /dev/null, in a new session and with an empty environment but PATH. It
// is the helper's child only until the helper exits: nothing ties it to
// the helper (systemd's KillMode=process leaves it running when the
// helper's unit restarts). It returns the pid and a pidfd for it.
func launchJailer(c *firecracker.JailerConfig, p *JailerPolicy, console *os.File) (int, *os.File, error) {
	if console == nil {
		return 0, nil, fmt.Errorf("no console log descriptor with the request: %w", errdefs.ErrInvalidArgument)
	}
	fi, err := console.Stat()
	if err != nil || !fi.Mode().IsRegular() && fi.Mode().Type() != fs.ModeNamedPipe {
		return 0, nil, fmt.Errorf("console log descriptor is neither a regular file nor a pipe: %w", errdefs.ErrInvalidArgument)
	}
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return 0, nil, err
	}
	defer devnull.Close()
	cmd := exec.Command(p.Jailer, firecracker.JailerArgs(*c)...)
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devnull, console, console
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return 0, nil, fmt.Errorf("start jailer %s: %w", p.Jailer, err)
	}
	pid := cmd.Process.Pid
	// Not reaped yet (only the goroutine below reaps), so the pid is the
	// jailer's.
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return 0, nil, fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	go cmd.Wait()
	pidfd := os.NewFile(uintptr(fd), "pidfd")
	st, err := startTime(pid)
	if err == nil {
		err = recordLaunched(p, launched{PID: pid, Start: st, ID: c.ID})
	}
	if err != nil {
		unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
		pidfd.Close()
		return 0, nil, fmt.Errorf("record jailer %d: %w", pid, err)
	}
	return pid, pidfd, nil
}

// LaunchJailer implements firecracker.Launcher: the helper validates c
// against its JailerPolicy and starts the jailer; console goes with the
// request as a descriptor.
func (c *Client) LaunchJailer(ctx context.Context, jc firecracker.JailerConfig, console *os.File) (*proc.Process, error) {
	resp, f, err := c.callWith(ctx, &request{Op: OpLaunchJailer, Jailer: &jc}, console)
	if err != nil {
		return nil, err
	}
	if f == nil {
		return nil, fmt.Errorf("root helper %s: no pidfd in reply: %w", OpLaunchJailer, errProtocol)
	}
	return proc.FromPidfd(resp.PID, f)
}

var _ firecracker.Launcher = (*Client)(nil)

// OpKillJailer sends SIGKILL to a process launchJailer started.
const OpKillJailer = "killJailer"

// launched is one process launchJailer started: its pid and start time
// (field 22 of /proc/<pid>/stat), which together name it even after the
// pid is reused.
type launched struct {
	PID   int    `json:"pid"`
	Start uint64 `json:"start"`
	ID    string `json:"id"`
}

// startTime reads process pid's start time, in clock ticks since boot.
func startTime(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	i := strings.LastIndexByte(string(b), ')')
	f := strings.Fields(string(b[i+1:]))
	if i < 0 || len(f) < 22-2 {
		return 0, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	return strconv.ParseUint(f[22-3], 10, 64)
}

// readLaunched returns the records in the policy's state file that still
// name a live process.
func readLaunched(p *JailerPolicy) []launched {
	var all, live []launched
	if b, err := os.ReadFile(p.StateFile); err == nil {
		json.Unmarshal(b, &all)
	}
	for _, l := range all {
		if st, err := startTime(l.PID); err == nil && st == l.Start {
			live = append(live, l)
		}
	}
	return live
}

// recordLaunched adds l to the state file, which survives helper restarts
// (it is in the helper's runtime directory), dropping dead records.
func recordLaunched(p *JailerPolicy, l launched) error {
	b, err := json.Marshal(append(readLaunched(p), l))
	if err != nil {
		return err
	}
	return proc.WriteFileAtomic(p.StateFile, b)
}

// killJailer sends SIGKILL to pid if launchJailer started it (its record
// in the state file matches the process's start time); anything else is
// refused. The daemon needs it only while the jailer still runs as root:
// once it has exec'd firecracker as the owner, the owner can signal it.
func killJailer(p *JailerPolicy, pid int) error {
	for _, l := range readLaunched(p) {
		if l.PID == pid {
			if err := unix.Kill(pid, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
				return fmt.Errorf("kill jailer %d: %w", pid, err)
			}
			return nil
		}
	}
	return fmt.Errorf("process %d was not started by this helper's launchJailer: %w", pid, errdefs.ErrPermissionDenied)
}

// KillJailer implements firecracker.Launcher.
func (c *Client) KillJailer(ctx context.Context, pid int) error {
	return c.do(ctx, &request{Op: OpKillJailer, PID: pid})
}
