package update

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/doctor"
	"github.com/bangervm/banger/internal/install"
)

// Daemon is what an update asks of the installed daemon; client.Client
// is the real one.
type Daemon interface {
	Version(ctx context.Context) (api.VersionInfo, error)
	VMs(ctx context.Context) ([]api.VM, error)
}

// Updater replaces an installed banger with a release.
type Updater struct {
	Source  Source
	Record  install.Record // the install, as install.toml has it
	Systemd install.Systemd
	Daemon  Daemon
	// Wait waits until the helper and the daemon answer (default:
	// install.WaitAnswering with a minute).
	Wait func(ctx context.Context, r install.Record) error
	// Run runs a binary (a staged one, or the installed CLI) as the
	// owner, with the owner's home, and returns its stdout and exit
	// status (default: runAsOwner).
	Run func(ctx context.Context, bin string, args ...string) ([]byte, int, error)
	// Progress gets a line per step.
	Progress io.Writer
}

// ExitMigrationsNewer is bangerd --check-migrations' status for a store
// newer than the binary.
const ExitMigrationsNewer = 2

// Update installs plan's target: it refuses while the daemon has
// operations in flight (unless force); downloads and verifies the
// release; unpacks it into a staging directory beside the agent (on the
// install's file system, root's); checks that the staged binaries are the
// version planned and that the staged daemon accepts the owner's store;
// then swaps the binaries (install.Upgrade), and rolls back when the new
// services do not answer, a VM running before is not running after, or
// the new doctor fails a check the old one passed. Every refusal before
// the swap leaves the install as it was.
func (u Updater) Update(ctx context.Context, plan Plan, force bool) error {
	if plan.Current() {
		return nil
	}
	r := u.Record
	var running []string
	if ops, vms, err := u.daemonState(ctx); err != nil {
		u.say("the installed daemon does not answer (%v): updating anyway", err)
	} else {
		if len(ops) > 0 && !force {
			return fmt.Errorf("the daemon is in the middle of %s: wait for it to finish, or banger update --force to restart it anyway (cutting that short): %w",
				strings.Join(ops, ", "), errdefs.ErrFailedPrecondition)
		}
		running = vms
	}
	stage, err := os.MkdirTemp(filepath.Dir(r.Paths.Agent), ".update-")
	if err != nil {
		return fmt.Errorf("staging directory: %w", err)
	}
	defer os.RemoveAll(stage)
	// The owner runs the staged binaries (checks, version, doctor): the
	// directory is root's and readable by all, like /usr/local/bin.
	if err := os.Chmod(stage, 0o755); err != nil {
		return err
	}
	u.say("downloading banger %s", plan.Target.Version)
	tarball, err := u.Source.Download(ctx, plan.Target, stage)
	if err != nil {
		return err
	}
	u.say("verified: %s is signed by the release key and hashes as signed", filepath.Base(tarball))
	bin := filepath.Join(stage, "bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		return err
	}
	if err := Unpack(tarball, bin); err != nil {
		return err
	}
	src := install.Sources{CLI: filepath.Join(bin, "banger"), Daemon: filepath.Join(bin, "bangerd"), Agent: filepath.Join(bin, "banger-agent")}
	v, err := u.version(ctx, src.CLI)
	if err != nil {
		return err
	}
	if v.Version != plan.Target.Version {
		return fmt.Errorf("the release %s holds banger %s: refusing: %w", plan.Target.Version, v.Version, errdefs.ErrInvalidArgument)
	}
	migrates, err := u.checkMigrations(ctx, src.Daemon)
	if err != nil {
		return err
	}
	if migrates {
		// Migrations are forward-only: once the new daemon has run them,
		// the previous daemon refuses the store, so a rollback after that
		// puts back binaries that cannot start.
		u.say("the new daemon will migrate the state store when it starts: a rollback past that point leaves a daemon that refuses the store (then: sudo banger update --to %s again)", plan.Target.Version)
	}
	daemonUnit, helperUnit, err := u.units(ctx, src.CLI)
	if err != nil {
		u.say("the new banger does not render its units (%v): keeping the installed ones", err)
	}
	before, err := u.doctor(ctx, r.Paths.CLI)
	if err != nil {
		u.say("the installed banger's doctor did not run (%v): every failure after the update counts", err)
	}
	u.say("swapping the binaries and restarting %s and %s", install.HelperUnitName, install.DaemonUnitName)
	err = install.Upgrade(ctx, install.UpgradeOptions{
		Record: r, Sources: src, Version: v.Version, Commit: v.Commit, BuildTime: v.BuildTime,
		DaemonUnit: daemonUnit, HelperUnit: helperUnit,
		Systemd: u.Systemd, Wait: u.Wait,
		Check: func(ctx context.Context) error {
			if err := u.stillRunning(ctx, running); err != nil {
				return err
			}
			after, err := u.doctor(ctx, r.Paths.CLI)
			if err != nil {
				return fmt.Errorf("the new doctor: %w", err)
			}
			if failed := newFailures(before, after); len(failed) > 0 {
				return fmt.Errorf("the new doctor fails %s: %w", strings.Join(failed, "; "), errdefs.ErrFailedPrecondition)
			}
			return nil
		},
	})
	if err != nil {
		return fmt.Errorf("update to %s: %w", plan.Target.Version, err)
	}
	return nil
}

func (u Updater) say(format string, a ...any) {
	if u.Progress != nil {
		fmt.Fprintf(u.Progress, format+"\n", a...)
	}
}

// daemonState is what the daemon is doing and which VMs run.
func (u Updater) daemonState(ctx context.Context) (ops, running []string, err error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	v, err := u.Daemon.Version(ctx)
	if err != nil {
		return nil, nil, err
	}
	vms, err := u.Daemon.VMs(ctx)
	if err != nil {
		return nil, nil, err
	}
	for _, vm := range vms {
		if vm.State == api.VMRunning {
			running = append(running, vm.Name)
		}
	}
	return v.Operations, running, nil
}

// stillRunning checks that the restarted daemon re-attached every VM that
// ran before.
func (u Updater) stillRunning(ctx context.Context, names []string) error {
	if len(names) == 0 {
		return nil
	}
	vms, err := u.Daemon.VMs(ctx)
	if err != nil {
		return fmt.Errorf("list VMs after the restart: %w", err)
	}
	var lost []string
	for _, n := range names {
		if !slices.ContainsFunc(vms, func(v api.VM) bool { return v.Name == n && v.State == api.VMRunning }) {
			lost = append(lost, n)
		}
	}
	if len(lost) > 0 {
		return fmt.Errorf("VMs running before the update are not running after it: %s: %w", strings.Join(lost, ", "), errdefs.ErrFailedPrecondition)
	}
	return nil
}

func (u Updater) run(ctx context.Context, bin string, args ...string) ([]byte, int, error) {
	if u.Run != nil {
		return u.Run(ctx, bin, args...)
	}
	return runAsOwner(ctx, u.Record, bin, args...)
}

// version asks a binary its version (banger version --json).
func (u Updater) version(ctx context.Context, cli string) (api.VersionInfo, error) {
	out, code, err := u.run(ctx, cli, "version", "--json")
	var v api.VersionInfo
	if err == nil && code != 0 {
		err = fmt.Errorf("exit status %d", code)
	}
	if err == nil {
		err = json.Unmarshal(out, &v)
	}
	if err != nil {
		return v, fmt.Errorf("the new banger's version (%s version --json): %w: %w", cli, err, errdefs.ErrInvalidArgument)
	}
	return v, nil
}

// units asks the new banger for the unit files it writes for this
// install (banger system render-units).
func (u Updater) units(ctx context.Context, cli string) (daemon, helper []byte, err error) {
	out, code, err := u.run(ctx, cli, "system", "render-units")
	if err == nil && code != 0 {
		err = fmt.Errorf("exit status %d", code)
	}
	var units struct{ Daemon, Helper string }
	if err == nil {
		err = json.Unmarshal(out, &units)
	}
	if err == nil && (units.Daemon == "" || units.Helper == "") {
		err = errors.New("empty units")
	}
	if err != nil {
		return nil, nil, fmt.Errorf("%s system render-units: %w", cli, err)
	}
	return []byte(units.Daemon), []byte(units.Helper), nil
}

// checkMigrations runs the staged daemon's --check-migrations against the
// owner's store: 0 (current) and 1 (it will migrate: migrates) go ahead,
// 2 (the store is newer than that daemon) refuses.
func (u Updater) checkMigrations(ctx context.Context, daemon string) (migrates bool, err error) {
	out, code, err := u.run(ctx, daemon, "--check-migrations", "--json")
	switch {
	case err != nil:
		return false, fmt.Errorf("%s --check-migrations: %w", daemon, err)
	case code == ExitMigrationsNewer:
		return false, fmt.Errorf("the owner's state store is newer than the release's daemon can read (%s): refusing; update to a newer release: %w", strings.TrimSpace(string(out)), errdefs.ErrFailedPrecondition)
	case code != 0 && code != 1:
		return false, fmt.Errorf("%s --check-migrations: exit status %d: %w", daemon, code, errdefs.ErrFailedPrecondition)
	}
	// 1 is also "no store yet", which the daemon creates at any level.
	var lvl struct{ Current int }
	json.Unmarshal(out, &lvl)
	return code == 1 && lvl.Current > 0, nil
}

// doctor runs cli's doctor and returns its results (it exits 1 when a
// check fails; that is a result, not an error).
func (u Updater) doctor(ctx context.Context, cli string) ([]doctor.Result, error) {
	out, code, err := u.run(ctx, cli, "doctor", "--json")
	if err == nil && code != 0 && code != 1 {
		err = fmt.Errorf("exit status %d", code)
	}
	var res []doctor.Result
	if err == nil {
		err = json.Unmarshal(out, &res)
	}
	if err != nil {
		return nil, fmt.Errorf("%s doctor --json: %w", cli, err)
	}
	return res, nil
}

// newFailures lists the checks that fail in after and did not in before,
// each with its detail: a failure the old banger had too is not the
// update's doing.
func newFailures(before, after []doctor.Result) []string {
	var out []string
	for _, a := range after {
		if a.Status != doctor.Fail {
			continue
		}
		if slices.ContainsFunc(before, func(b doctor.Result) bool { return b.Name == a.Name && b.Status == doctor.Fail }) {
			continue
		}
		out = append(out, fmt.Sprintf("%s (%s)", a.Name, a.Detail))
	}
	return out
}

// runAsOwner runs bin as the install's owner, with the environment the
// owner's daemon has (HOME, the unit's runtime directory): the staged
// daemon then checks the store the installed one uses, and opens it as
// its owner, not as root.
func runAsOwner(ctx context.Context, r install.Record, bin string, args ...string) ([]byte, int, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = []string{"HOME=" + r.Owner.Home, "USER=" + r.Owner.Name, "LOGNAME=" + r.Owner.Name,
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "XDG_RUNTIME_DIR=" + r.Paths.DaemonRuntime}
	cmd.Dir = "/"
	if os.Geteuid() == 0 && r.Owner.UID != 0 {
		// With the owner's groups too (kvm, as the daemon's unit has it):
		// doctor checks what the owner may open.
		cred := &syscall.Credential{Uid: uint32(r.Owner.UID), Gid: uint32(r.Owner.GID)}
		if u, err := user.LookupId(strconv.Itoa(r.Owner.UID)); err == nil {
			gids, _ := u.GroupIds()
			for _, g := range gids {
				if n, err := strconv.ParseUint(g, 10, 32); err == nil {
					cred.Groups = append(cred.Groups, uint32(n))
				}
			}
		}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.Exited() {
		return stdout.Bytes(), ee.ExitCode(), nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("%s: %w: %s", bin, err, strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), 0, nil
}
