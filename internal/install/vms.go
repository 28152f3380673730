package install

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/client"
	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/engine"
	"github.com/bangervm/banger/internal/engine/firecracker"
	"github.com/bangervm/banger/internal/engine/qemu"
	"github.com/bangervm/banger/internal/paths"
	"github.com/bangervm/banger/internal/termtext"
	"github.com/bangervm/banger/internal/vm"
)

// EngineVM is a VM whose engine process runs, found without the daemon
// (vm.FindRunning).
type EngineVM struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	PID  int    `json:"pid"`
}

// DaemonVMs is what uninstall asks the installed daemon (client.Client).
type DaemonVMs interface {
	VMs(ctx context.Context) ([]api.VM, error)
	StopVM(ctx context.Context, ref string) (api.StopResult, error)
}

// StopVMsOptions configures StopVMs.
type StopVMsOptions struct {
	Record  Record
	Systemd Systemd
	Daemon  DaemonVMs
	// Engines finds the owner's VMs whose engine process runs without
	// asking the daemon, and with stop also stops them (OwnerEngines: as
	// the owner, through the engine, as vm kill would after the power
	// button). It returns the VMs it found (and, with stop, could not
	// stop) and why looking or stopping failed.
	Engines func(ctx context.Context, stop bool) ([]EngineVM, error)
	Force   bool
	// Log receives what StopVMs does beyond asking the daemon.
	Log io.Writer
	// Timeout bounds the wait for a daemon StopVMs starts (default 60s).
	Timeout time.Duration
}

// StopVMs is uninstall's guard: it refuses while any of the owner's VMs
// runs, or with Force stops them. The daemon answers for its VMs. A
// daemon that does not answer (stopped, crashed, masked) still leaves VMs
// running, since engine processes outlive it: then the owner's VM
// directories are searched for live engines. Found, or when the search
// fails, they are refused without Force; with Force the daemon unit is
// started, so that it re-attaches them and stops them cleanly (the guest
// agent syncs the disks first), and only if it cannot start are the
// engines stopped directly, which Log says.
func StopVMs(ctx context.Context, o StopVMsOptions) error {
	vms, err := o.Daemon.VMs(ctx)
	if err == nil {
		return stopThroughDaemon(ctx, o, vms)
	}
	if !client.IsDaemonDown(err) {
		return fmt.Errorf("list VMs before uninstalling: %w (--force does not help while the daemon errors; fix it, or stop %s and uninstall again)", err, DaemonUnitName)
	}
	found, lookErr := o.Engines(ctx, false)
	if len(found) == 0 && lookErr == nil {
		return nil
	}
	if lookErr != nil {
		lookErr = fmt.Errorf("looking for VMs still running failed: %w", lookErr)
	}
	if !o.Force {
		if len(found) == 0 {
			return fmt.Errorf("%s does not answer, and %w: uninstalling could remove banger from under a running VM. Start it (sudo systemctl start %s) and stop the VMs, or uninstall with --force: %w",
				DaemonUnitName, lookErr, DaemonUnitName, errdefs.ErrFailedPrecondition)
		}
		return fmt.Errorf("%s does not answer, but %d VMs still run (%s): their engine processes outlive the daemon. Start it (sudo systemctl start %s) and stop them (banger vm stop NAME), or uninstall with --force to stop them: %w",
			DaemonUnitName, len(found), engineNames(found), DaemonUnitName, errors.Join(errdefs.ErrFailedPrecondition, lookErr))
	}
	if lookErr != nil {
		fmt.Fprintf(o.Log, "banger: %v\n", lookErr)
	}
	if len(found) > 0 {
		fmt.Fprintf(o.Log, "%s does not answer and %d VMs still run (%s): starting it to stop them cleanly\n", DaemonUnitName, len(found), engineNames(found))
	} else {
		fmt.Fprintf(o.Log, "%s does not answer: starting it to stop any VM still running cleanly\n", DaemonUnitName)
	}
	timeout := o.Timeout
	if timeout == 0 {
		timeout = 60 * time.Second
	}
	startErr := restart(ctx, o.Systemd, o.Record, timeout)
	if startErr == nil {
		if vms, startErr = o.Daemon.VMs(ctx); startErr == nil {
			return stopThroughDaemon(ctx, o, vms)
		}
	}
	fmt.Fprintf(o.Log, "%s could not start (%v): stopping the VMs' engines directly, as vm kill would after the power button; a guest that ignores the button loses what it had not written\n", DaemonUnitName, startErr)
	left, err := o.Engines(ctx, true)
	if len(left) > 0 {
		return fmt.Errorf("stop VMs %s without the daemon: %w", engineNames(left), errors.Join(err, errdefs.ErrFailedPrecondition))
	}
	if err != nil {
		// Nothing found runs; what could not be looked at is said, and
		// --force goes on, as asked.
		fmt.Fprintf(o.Log, "banger: stopping VMs without the daemon: %v; going on, as --force asks\n", err)
	}
	return nil
}

// stopThroughDaemon refuses while any of vms runs, or with Force has the
// daemon stop them.
func stopThroughDaemon(ctx context.Context, o StopVMsOptions, vms []api.VM) error {
	var running []api.VM
	for _, v := range vms {
		if v.State == api.VMRunning {
			running = append(running, v)
		}
	}
	if len(running) == 0 {
		return nil
	}
	names := make([]string, len(running))
	for i, v := range running {
		names[i] = v.Name
	}
	if !o.Force {
		return fmt.Errorf("%d VMs are running (%s): stop them first, or uninstall with --force to stop them: %w", len(running), strings.Join(names, ", "), errdefs.ErrFailedPrecondition)
	}
	var errs []error
	for _, v := range running {
		fmt.Fprintf(o.Log, "stopping %s\n", v.Name)
		if _, err := o.Daemon.StopVM(ctx, v.ID); err != nil {
			errs = append(errs, fmt.Errorf("stop %s: %w", v.Name, err))
		}
	}
	return errors.Join(errs...)
}

func engineNames(vms []EngineVM) string {
	names := make([]string, len(vms))
	for i, v := range vms {
		names[i] = v.Name
	}
	return strings.Join(names, ", ")
}

// OwnerEnginesCommand is the hidden CLI command OwnerEngines runs:
// `banger system owner-vms --state DIR [--stop]`, printing the VMs found
// (or not stopped) as JSON on stdout and why looking failed on stderr.
const OwnerEnginesCommand = "owner-vms"

// maxEnginesOutput bounds what OwnerEngines reads from the command.
const maxEnginesOutput = 1 << 20

// OwnerEngines is StopVMsOptions.Engines for the install r: the banger
// binary self runs OwnerEnginesCommand as the owner, so the owner's files
// are read, and the owner's processes signalled, with the owner's rights
// only, as the daemon would.
func OwnerEngines(self string, r Record) func(ctx context.Context, stop bool) ([]EngineVM, error) {
	return func(ctx context.Context, stop bool) ([]EngineVM, error) {
		args := []string{"system", OwnerEnginesCommand, "--state", r.Owner.Layout(r.Paths).State}
		if stop {
			args = append(args, "--stop")
		}
		cmd := exec.CommandContext(ctx, self, args...)
		cmd.Env = []string{"HOME=" + r.Owner.Home, "PATH=/usr/local/bin:/usr/bin:/bin", "USER=" + r.Owner.Name}
		cmd.Dir = "/"
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(r.Owner.UID), Gid: uint32(r.Owner.GID), Groups: []uint32{}}}
		var out, errOut limitedBuffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		runErr := cmd.Run()
		var vms []EngineVM
		if err := json.Unmarshal(out.Bytes(), &vms); err != nil {
			return nil, fmt.Errorf("%s system %s as %s: %w; %s", self, OwnerEnginesCommand, r.Owner.Name, errors.Join(runErr, err), termtext.Escape(strings.TrimSpace(errOut.String())))
		}
		// The names come from the owner's files, and end up on root's
		// terminal.
		for i := range vms {
			vms[i].ID, vms[i].Name = termtext.Escape(vms[i].ID), termtext.Escape(vms[i].Name)
		}
		if runErr != nil {
			return vms, fmt.Errorf("as %s (uid %s): %w: %s", r.Owner.Name, strconv.Itoa(r.Owner.UID), runErr, termtext.Escape(strings.TrimSpace(errOut.String())))
		}
		return vms, nil
	}
}

// LocalEngines is what OwnerEnginesCommand runs, as the owner, for the
// owner's banger state directory state: vm.FindRunning with every engine,
// and with stop vm.StopRunning, then what is still running.
func LocalEngines(state string) func(ctx context.Context, stop bool) ([]EngineVM, error) {
	return func(ctx context.Context, stop bool) ([]EngineVM, error) {
		l := paths.Layout{State: state}
		engines := map[string]engine.Engine{engine.QEMU: qemu.New(qemu.Config{}), engine.Firecracker: firecracker.New(firecracker.Config{})}
		found, err := vm.FindRunning(ctx, l, engines)
		if stop {
			// What is left, and why, is what the caller needs.
			stopErr := vm.StopRunning(ctx, found, engine.DefaultShutdownTimeout)
			found, err = vm.FindRunning(ctx, l, engines)
			err = errors.Join(stopErr, err)
		}
		out := []EngineVM{}
		for _, v := range found {
			out = append(out, EngineVM{ID: v.ID, Name: v.Name, PID: v.PID})
		}
		return out, err
	}
}

// limitedBuffer keeps the first maxEnginesOutput bytes written to it.
type limitedBuffer struct{ bytes.Buffer }

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := maxEnginesOutput - b.Len(); room < len(p) {
		b.Buffer.Write(p[:max(room, 0)])
		return len(p), nil
	}
	return b.Buffer.Write(p)
}
