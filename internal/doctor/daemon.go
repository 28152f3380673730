package doctor

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"syscall"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/errdefs"
)

func checkConfig(_ context.Context, f *facts) Result {
	path := f.Layout.ConfigFile()
	if f.ConfigErr != nil {
		return fail(f.ConfigErr.Error(), "fix or remove what the error names in "+path)
	}
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return pass("no %s: built-in defaults", path)
	}
	return pass("%s read", path)
}

func checkDaemon(_ context.Context, f *facts) Result {
	if err := f.versionErr; err != nil {
		if errdefs.IsVersionMismatch(err) {
			return fail(err.Error(), "banger daemon stop (the next banger command starts this version's daemon)")
		}
		return fail("cannot reach or start bangerd: "+err.Error(), "see the daemon log: "+f.Layout.DaemonLog())
	}
	v := f.version
	detail := fmt.Sprintf("bangerd %s (commit %s) answers on %s, pid %d, API v%s", v.Version, v.Commit, f.Layout.Socket(), v.PID, v.APIVersion)
	if v.Version != f.Version || v.Commit != f.Commit {
		// Same API, other build: typically a daemon left running across
		// an upgrade, still serving the old code.
		return warn(detail+fmt.Sprintf(", but this banger is %s (commit %s)", f.Version, f.Commit),
			"banger daemon stop (the next banger command starts this version's daemon)")
	}
	return pass("%s", detail)
}

// checkSocket holds the runtime directory and the API socket to 0700 and
// 0600, owned by the user: the socket gives whoever reaches it control of
// every VM. Tightening the mode of what the user owns is the safe fix.
func checkSocket(_ context.Context, f *facts) Result {
	dir, sock := f.Layout.Runtime, f.Layout.Socket()
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return skip("%s does not exist yet (the daemon creates it)", dir)
	}
	var ok, problems, fixes []string
	var chmods []func() error
	for _, p := range []struct {
		path string
		want os.FileMode
	}{{dir, 0o700}, {sock, 0o600}} {
		st, err := os.Stat(p.path)
		if errors.Is(err, fs.ErrNotExist) {
			continue // no socket: the daemon is not running, which checkDaemon reports
		}
		if err != nil {
			problems = append(problems, err.Error())
			continue
		}
		owner := int(st.Sys().(*syscall.Stat_t).Uid)
		if owner != f.UID {
			// Not chown: what another user planted inside would stay.
			problems = append(problems, fmt.Sprintf("%s is owned by uid %d, not you (uid %d): another user may have planted it", p.path, owner, f.UID))
			fixes = append(fixes, fmt.Sprintf("check it, then sudo rm -rf %s", p.path))
			continue
		}
		if mode := st.Mode().Perm(); mode&0o077 != 0 {
			problems = append(problems, fmt.Sprintf("%s has mode %04o: others may reach the daemon", p.path, mode))
			fixes = append(fixes, fmt.Sprintf("chmod %o %s", p.want, p.path))
			path, want := p.path, p.want
			chmods = append(chmods, func() error { return os.Chmod(path, want) })
			continue
		}
		ok = append(ok, fmt.Sprintf("%s %04o", p.path, st.Mode().Perm()))
	}
	if len(problems) == 0 {
		return pass("yours and private: %s", strings.Join(ok, ", "))
	}
	r := fail(strings.Join(problems, "; "), strings.Join(fixes, " && "))
	if len(chmods) == len(problems) {
		r.autofix = func() error {
			var errs []error
			for _, c := range chmods {
				errs = append(errs, c())
			}
			return errors.Join(errs...)
		}
	}
	return r
}

func checkStore(ctx context.Context, f *facts) Result {
	path := f.Layout.DB()
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		// CheckMigrations would create it; the daemon should.
		return warn("no state store at "+path+" yet", "banger vm list (starts the daemon, which creates it)")
	}
	if f.Migrations == nil {
		return skip("no way to ask bangerd about migrations")
	}
	st, err := f.Migrations(ctx)
	switch {
	case err != nil:
		return fail(fmt.Sprintf("cannot read the state store: %v", err), "check the owner and mode of "+path+"; the daemon log may say more: "+f.Layout.DaemonLog())
	case st.Current > st.Latest:
		return fail(fmt.Sprintf("%s is at migration %d, newer than this banger's %d: a newer banger wrote it", path, st.Current, st.Latest),
			"update banger to the version that wrote it (this one cannot use the store)")
	case st.Current < st.Latest:
		return warn(fmt.Sprintf("%s is at migration %d of %d: bangerd applies the rest when it starts", path, st.Current, st.Latest),
			"banger daemon stop (the next banger command starts the daemon, which migrates)")
	}
	return pass("%s is up to date (migration %d)", path, st.Current)
}

const notInstalled = "banger is not installed as a system service (sudo banger system install)"

// checkInstallDrift: the installed binaries, units and running services
// agree with install.toml and with this banger.
func checkInstallDrift(_ context.Context, f *facts) Result {
	st := f.Install
	if st == nil {
		return skip(notInstalled)
	}
	if len(st.Drift) > 0 {
		return warn(strings.Join(st.Drift, "; "), "sudo banger system install (installs this banger again and refreshes both units)")
	}
	return pass("banger %s installed for %s: units current and active, daemon and helper answer", st.Install.Version, st.Install.Owner.Name)
}

// checkUnitHardening: both units are what this banger writes, hardening
// included, and no drop-in amends them.
func checkUnitHardening(_ context.Context, f *facts) Result {
	st := f.Install
	if st == nil {
		return skip(notInstalled)
	}
	var problems []string
	var dropIns []string
	for _, u := range st.Units {
		if !u.Current {
			problems = append(problems, fmt.Sprintf("%s differs from what this banger installs, so its hardening may too", u.File))
		}
		if len(u.DropIns) > 0 {
			problems = append(problems, fmt.Sprintf("%s is amended by %s, which may weaken its hardening", u.Name, strings.Join(u.DropIns, ", ")))
			dropIns = append(dropIns, u.DropIns...)
		}
	}
	switch {
	case len(dropIns) > 0:
		return warn(strings.Join(problems, "; "), "review or remove "+strings.Join(dropIns, " ")+", then sudo systemctl daemon-reload and sudo banger system install")
	case len(problems) > 0:
		return warn(strings.Join(problems, "; "), "sudo banger system install")
	}
	return pass("both units are as this banger installs them (systemd-analyze security shows their exposure), no drop-ins")
}

// checkAgents warns about running VMs whose agent is not the daemon's
// version: a VM keeps the agent it booted with across an update, which
// works while the agent protocol is compatible (an incompatible one is
// refused at the handshake, with the same fix). An agent's version is
// known once the daemon has talked to it.
func checkAgents(_ context.Context, f *facts) Result {
	if f.versionErr != nil || f.vmsErr != nil {
		return skip("the daemon does not answer")
	}
	var running, known int
	var old []string
	for _, v := range f.vms {
		if v.State != api.VMRunning && v.State != api.VMPaused {
			continue
		}
		running++
		if v.AgentVersion == "" {
			continue
		}
		known++
		if v.AgentVersion != f.version.Version {
			old = append(old, fmt.Sprintf("%s (agent %s)", v.Name, v.AgentVersion))
		}
	}
	if len(old) > 0 {
		return warn(fmt.Sprintf("running VMs booted with another agent than the daemon's %s: %s", f.version.Version, strings.Join(old, ", ")),
			"restart them when convenient (banger vm restart NAME) to boot the current agent")
	}
	return pass("%d running VMs, %d with a known agent, all %s", running, known, f.version.Version)
}
