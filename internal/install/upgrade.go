package install

import (
	"context"
	"fmt"
	"io"
	"time"
)

// UpgradeOptions is one swap of an install's binaries for verified new
// ones (banger update).
type UpgradeOptions struct {
	// Record is the install as it is; its Paths name the binaries.
	Record Record
	// Sources are the new binaries, staged and verified.
	Sources Sources
	// Version, Commit and BuildTime are the new binaries' own (asked of
	// them, not assumed): the record gets them once the upgrade holds.
	Version, Commit, BuildTime string
	// DaemonUnit and HelperUnit, when set, are the unit files the new
	// banger writes for this install (banger system render-units):
	// replaced with the binaries and rolled back with them.
	DaemonUnit, HelperUnit []byte
	Systemd                Systemd
	// Wait waits until both services answer (default: WaitAnswering,
	// with a minute).
	Wait func(ctx context.Context, r Record) error
	// Check runs once both services answer on the new binaries (the new
	// doctor, the VMs still running); an error rolls the upgrade back.
	Check func(ctx context.Context) error
}

// Upgrade replaces the three binaries, keeping the previous ones, restarts
// the helper and the daemon (running VMs are not signalled: KillMode=
// process, and the daemon re-attaches them), waits until both answer,
// and runs Check; install.toml names the new version (as the binaries
// report it) from the swap on. If any step
// fails, the previous binaries and record are put back and both services
// restarted on them; the error says what failed and how the rollback went.
func Upgrade(ctx context.Context, o UpgradeOptions) (err error) {
	r, p := o.Record, o.Record.Paths
	wait := o.Wait
	if wait == nil {
		wait = func(ctx context.Context, r Record) error { return WaitAnswering(ctx, r, 60*time.Second) }
	}
	var u undo
	restarted := false
	units := o.DaemonUnit != nil && o.HelperUnit != nil
	defer func() {
		if err == nil {
			return
		}
		uerr := u.run()
		if uerr == nil {
			err = fmt.Errorf("%w; rolled back: the previous binaries (%s) are in place and running", err, r.Version)
		} else {
			err = fmt.Errorf("%w; and rolling back: %w", err, uerr)
		}
	}()
	// Undone last, once the previous files are back.
	u.push(func() error {
		if !restarted {
			return nil
		}
		ctx := context.WithoutCancel(ctx)
		if units {
			if err := o.Systemd.DaemonReload(ctx); err != nil {
				return err
			}
		}
		if err := o.Systemd.Restart(ctx, HelperUnitName); err != nil {
			return err
		}
		if err := o.Systemd.Restart(ctx, DaemonUnitName); err != nil {
			return err
		}
		return wait(ctx, r)
	})
	for _, f := range []struct{ src, dst string }{{o.Sources.CLI, p.CLI}, {o.Sources.Daemon, p.Daemon}, {o.Sources.Agent, p.Agent}} {
		if err := u.replace(f.dst, 0o755, func(w io.Writer) error { return copyFrom(w, f.src) }); err != nil {
			return err
		}
	}
	// The record names the new binaries before they start, so that the
	// new daemon and doctor see no drift; undo puts the old one back.
	nr := r
	nr.Version, nr.Commit, nr.BuildTime = o.Version, o.Commit, o.BuildTime
	if err := u.replace(p.Record, 0o644, func(w io.Writer) error { return encodeRecord(w, nr) }); err != nil {
		return err
	}
	if units {
		if err := u.writeUnits(p, o.DaemonUnit, o.HelperUnit); err != nil {
			return err
		}
	}
	restarted = true
	if units {
		if err := o.Systemd.DaemonReload(ctx); err != nil {
			return err
		}
	}
	if err := o.Systemd.Restart(ctx, HelperUnitName); err != nil {
		return fmt.Errorf("restart %s on the new binaries: %w", HelperUnitName, err)
	}
	if err := o.Systemd.Restart(ctx, DaemonUnitName); err != nil {
		return fmt.Errorf("restart %s on the new binaries: %w", DaemonUnitName, err)
	}
	if err := wait(ctx, r); err != nil {
		return fmt.Errorf("the new binaries: %w", err)
	}
	if o.Check != nil {
		if err := o.Check(ctx); err != nil {
			return err
		}
	}
	return u.commit()
}
