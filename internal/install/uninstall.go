package install

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// UninstallOptions is one uninstall.
type UninstallOptions struct {
	Record  Record
	Systemd Systemd
	// Purge also removes the owner's banger data, through RemoveOwnerDirs
	// (hostcmd.RemoveAllAs: as the owner, so a symlink the owner planted
	// cannot turn root's removal elsewhere).
	Purge           bool
	RemoveOwnerDirs func(ctx context.Context, o Owner, dirs ...string) error
	// TeardownNetwork, when set, runs once both units are stopped
	// (TeardownNetwork with what the daemon reported it set up).
	TeardownNetwork func(ctx context.Context) error
}

// Uninstall stops and disables both units, undoes the host networking
// (TeardownNetwork), and removes the units, the binaries, the install
// record and its directory, and the runtime directories. It
// does every step it can and joins the errors. The owner's data stays
// unless Purge; OwnerData names it.
func Uninstall(ctx context.Context, o UninstallOptions) error {
	p := o.Record.Paths
	var errs []error
	var present []string
	for _, u := range []string{DaemonUnitName, HelperUnitName} {
		if _, err := os.Stat(filepath.Join(p.UnitDir, u)); err == nil {
			present = append(present, u)
		}
	}
	if len(present) > 0 {
		errs = append(errs, o.Systemd.Disable(ctx, present...))
	}
	if o.TeardownNetwork != nil {
		if err := o.TeardownNetwork(ctx); err != nil {
			errs = append(errs, fmt.Errorf("return the host's network to before banger: %w", err))
		}
	}
	for _, f := range []string{p.DaemonUnit(), p.HelperUnit(), p.CLI, p.Daemon, p.Agent} {
		errs = append(errs, removeFile(f), removeFile(f+".previous"))
	}
	if len(present) > 0 {
		errs = append(errs, o.Systemd.DaemonReload(ctx))
	}
	// The agent's directory is banger's own; the binaries' is shared.
	if err := os.Remove(filepath.Dir(p.Agent)); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	for _, d := range []string{p.ConfigDir, filepath.Dir(p.HelperSocket), p.DaemonRuntime} {
		errs = append(errs, os.RemoveAll(d))
	}
	if o.Purge {
		l := o.Record.Owner.Layout(p)
		if err := o.RemoveOwnerDirs(ctx, o.Record.Owner, l.Config, l.State, l.Cache); err != nil {
			errs = append(errs, fmt.Errorf("remove %s's banger data: %w", o.Record.Owner.Name, err))
		}
	}
	return errors.Join(errs...)
}

// OwnerData lists the owner's banger directories that exist.
func OwnerData(r Record) []string {
	l := r.Owner.Layout(r.Paths)
	var out []string
	for _, d := range []string{l.Config, l.State, l.Cache} {
		if _, err := os.Lstat(d); err == nil {
			out = append(out, d)
		}
	}
	return out
}

func removeFile(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}
