package install

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/bangervm/banger/client"
	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/hostcmd"
	"github.com/bangervm/banger/internal/safesocket"
)

// Systemd is what installing needs from the service manager;
// hostcmd.Systemctl is the real one.
type Systemd interface {
	DaemonReload(ctx context.Context) error
	Enable(ctx context.Context, units ...string) error  // enable and start
	Disable(ctx context.Context, units ...string) error // stop and disable
	Restart(ctx context.Context, units ...string) error // returns once Type=notify units are ready
	Show(ctx context.Context, unit string) (hostcmd.UnitState, error)
}

// Sources are the binaries to install, normally beside the running banger.
type Sources struct {
	CLI, Daemon, Agent string
}

// SourcesBeside finds the three binaries in dir; the agent may also be
// where an earlier install put it (installing again from the installed
// banger).
func SourcesBeside(dir string, p Paths) (Sources, error) {
	s := Sources{CLI: filepath.Join(dir, "banger"), Daemon: filepath.Join(dir, "bangerd"), Agent: filepath.Join(dir, "banger-agent")}
	if _, err := os.Stat(s.Agent); err != nil {
		s.Agent = p.Agent
	}
	for _, f := range []string{s.CLI, s.Daemon, s.Agent} {
		fi, err := os.Stat(f)
		if err != nil || !fi.Mode().IsRegular() {
			return Sources{}, fmt.Errorf("%s not found: system install copies banger, bangerd and banger-agent from beside the running banger (make builds all three into bin/): %w", f, errdefs.ErrNotFound)
		}
	}
	return s, nil
}

// Options is one install.
type Options struct {
	Record  Record // what to install, for whom, where
	Sources Sources
	Systemd Systemd
	// MakeOwnerDirs creates the owner's banger directories as the owner
	// (hostcmd.MkdirAs): the daemon's unit can write only there in the
	// owner's home, and only if they exist when it starts.
	MakeOwnerDirs func(ctx context.Context, o Owner, dirs ...string) error
	// Timeout bounds the wait for both services to answer (default 60s).
	Timeout time.Duration
}

// Install puts binaries, record and units in place, enables and
// (re)starts both units and waits until both answer. Installing again
// upgrades in place: files are replaced atomically and both units
// restarted, which running VMs survive. If any step fails, everything it
// did is undone (replaced files restored, new ones removed, a fresh
// install's units disabled) and the error says what failed.
func Install(ctx context.Context, o Options) (err error) {
	r, p := o.Record, o.Record.Paths
	daemonUnit, helperUnit, err := Units(r)
	if err != nil {
		return err
	}
	_, statErr := os.Stat(p.Record)
	upgrade := statErr == nil
	var u undo
	defer func() {
		if err != nil {
			if uerr := u.run(); uerr != nil {
				err = fmt.Errorf("%w; and rolling back: %w", err, uerr)
			}
		}
	}()
	// Undone last, once the files are back: systemd rereads them and, on
	// an upgrade, the old binaries are restarted.
	reached := false
	if upgrade {
		u.push(func() error {
			if !reached {
				return nil
			}
			return o.Systemd.Restart(context.WithoutCancel(ctx), HelperUnitName, DaemonUnitName)
		})
	}
	u.push(func() error {
		if !reached {
			return nil
		}
		return o.Systemd.DaemonReload(context.WithoutCancel(ctx))
	})
	for _, d := range []string{filepath.Dir(p.CLI), filepath.Dir(p.Daemon), filepath.Dir(p.Agent), p.ConfigDir, p.UnitDir} {
		if err := u.mkdir(d); err != nil {
			return err
		}
	}
	for _, f := range []struct {
		src, dst string
	}{{o.Sources.CLI, p.CLI}, {o.Sources.Daemon, p.Daemon}, {o.Sources.Agent, p.Agent}} {
		if err := u.replace(f.dst, 0o755, func(w io.Writer) error { return copyFrom(w, f.src) }); err != nil {
			return err
		}
	}
	if err := u.writeUnits(p, daemonUnit, helperUnit); err != nil {
		return err
	}
	if err := u.replace(p.Record, 0o644, func(w io.Writer) error { return encodeRecord(w, r) }); err != nil {
		return err
	}
	l := r.Owner.Layout(p)
	if err := o.MakeOwnerDirs(ctx, r.Owner, l.Config, l.State, l.Cache); err != nil {
		return fmt.Errorf("create %s's banger directories: %w", r.Owner.Name, err)
	}
	reached = true
	if err := o.Systemd.DaemonReload(ctx); err != nil {
		return err
	}
	if !upgrade {
		u.push(func() error { return o.Systemd.Disable(context.WithoutCancel(ctx), DaemonUnitName, HelperUnitName) })
	}
	if err := o.Systemd.Enable(ctx, HelperUnitName, DaemonUnitName); err != nil {
		return err
	}
	// enable --now leaves running units as they were: restart them onto
	// the new binaries and units.
	if err := restart(ctx, o.Systemd, r, o.Timeout); err != nil {
		return err
	}
	return u.commit()
}

// Restart restarts the helper, then the daemon (which needs the helper),
// and waits until both answer. With KillMode=process, running VMs are
// not signalled.
func Restart(ctx context.Context, sd Systemd, r Record) error {
	return restart(ctx, sd, r, 0)
}

func restart(ctx context.Context, sd Systemd, r Record, timeout time.Duration) error {
	if err := sd.Restart(ctx, HelperUnitName); err != nil {
		return err
	}
	if err := sd.Restart(ctx, DaemonUnitName); err != nil {
		return err
	}
	if timeout == 0 {
		timeout = 60 * time.Second
	}
	return WaitAnswering(ctx, r, timeout)
}

// WaitAnswering waits until the helper accepts connections and the daemon
// answers a version request on their sockets.
func WaitAnswering(ctx context.Context, r Record, timeout time.Duration) error {
	p := r.Paths
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var helperErr, daemonErr error
	for {
		helperErr = HelperAnswers(ctx, p.HelperSocket)
		if helperErr == nil {
			_, daemonErr = DaemonClient(r).Version(ctx)
			if daemonErr == nil {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s and %s to answer (helper: %v; daemon: %v): see journalctl -u %s -u %s: %w",
				HelperUnitName, DaemonUnitName, helperErr, daemonErr, HelperUnitName, DaemonUnitName, errdefs.ErrUnavailable)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// DaemonClient is a client of the installed daemon, which runs as the
// owner, for the owner or root.
func DaemonClient(r Record) *client.Client {
	return client.NewFor(r.Paths.DaemonSocket(), r.Owner.UID)
}

// HelperAnswers reports whether root's helper accepts a connection on
// socket (checked as safesocket.DialRoot checks it).
func HelperAnswers(ctx context.Context, socket string) error {
	c, err := safesocket.DialRoot(ctx, socket)
	if err != nil {
		return err
	}
	return c.Close()
}

func copyFrom(w io.Writer, src string) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(w, f)
	return err
}

// undo is a stack of steps that revert what an install did so far.
type undo struct {
	steps   []func() error
	backups []func() error // on success: drop the backups
}

func (u *undo) push(f func() error) { u.steps = append(u.steps, f) }

// run reverts every step, last first, and joins their errors.
func (u *undo) run() error {
	var errs []error
	for i := len(u.steps) - 1; i >= 0; i-- {
		errs = append(errs, u.steps[i]())
	}
	return errors.Join(errs...)
}

// commit drops the backups of replaced files.
func (u *undo) commit() error {
	var errs []error
	for _, f := range u.backups {
		errs = append(errs, f())
	}
	return errors.Join(errs...)
}

// writeUnits replaces both unit files.
func (u *undo) writeUnits(p Paths, daemon, helper []byte) error {
	for _, f := range []struct {
		dst  string
		body []byte
	}{{p.HelperUnit(), helper}, {p.DaemonUnit(), daemon}} {
		if err := u.replace(f.dst, 0o644, func(w io.Writer) error { _, err := w.Write(f.body); return err }); err != nil {
			return err
		}
	}
	return nil
}

// mkdir creates dir (0755) and its missing parents, each removed again on
// undo.
func (u *undo) mkdir(dir string) error {
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	if err := u.mkdir(filepath.Dir(dir)); err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	u.push(func() error { return os.Remove(dir) })
	return nil
}

// replace writes dst through a temporary file and a rename. An existing
// dst is kept as dst.previous (a hard link, so dst never goes missing)
// until commit; undo renames it back, or removes a new dst.
func (u *undo) replace(dst string, mode os.FileMode, write func(io.Writer) error) error {
	prev := dst + ".previous"
	os.Remove(prev)
	switch err := os.Link(dst, prev); {
	case err == nil:
		u.push(func() error { return os.Rename(prev, dst) })
		u.backups = append(u.backups, func() error { return os.Remove(prev) })
	case errors.Is(err, os.ErrNotExist):
		u.push(func() error { return os.Remove(dst) })
	default:
		return fmt.Errorf("keep %s: %w", dst, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	err = write(tmp)
	if err == nil {
		err = tmp.Chmod(mode)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), dst)
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", dst, err)
	}
	return nil
}
