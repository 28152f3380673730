package doctor

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"github.com/bangervm/banger/internal/install"
	"os"
	"testing"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/store"
)

func TestDaemonCheck(t *testing.T) {
	env, d := testEnv(t)
	expect(t, one(t, env, "daemon"), Pass, "bangerd v1 (commit c1) answers on "+env.Layout.Socket()+", pid 42", "")
	d.version.Commit = "c0"
	expect(t, one(t, env, "daemon"), Warn, "but this banger is v1 (commit c1)", "banger daemon stop")
	env.Daemon, env.DaemonErr = nil, fmt.Errorf("this banger speaks API v1 but the running bangerd speaks v0: %w", errdefs.ErrVersionMismatch)
	expect(t, one(t, env, "daemon"), Fail, "speaks v0", "banger daemon stop")
	env.DaemonErr = errors.New("bangerd not found beside banger or in PATH")
	expect(t, one(t, env, "daemon"), Fail, "cannot reach or start bangerd: bangerd not found", env.Layout.DaemonLog())
}

func TestSocket(t *testing.T) {
	t.Run("private", func(t *testing.T) {
		env, _ := testEnv(t)
		expect(t, one(t, env, "socket"), Pass, env.Layout.Socket()+" 0600", "")
	})
	t.Run("open to others", func(t *testing.T) {
		env, _ := testEnv(t)
		os.Chmod(env.Layout.Runtime, 0o750)
		os.Chmod(env.Layout.Socket(), 0o666)
		r := one(t, env, "socket")
		expect(t, r, Fail, env.Layout.Socket()+" has mode 0666", "chmod 700 "+env.Layout.Runtime+" && chmod 600 "+env.Layout.Socket())
		if r.autofix == nil {
			t.Fatal("no automatic fix for modes the user can change")
		}
		if err := r.autofix(); err != nil {
			t.Fatal(err)
		}
		expect(t, one(t, env, "socket"), Pass, "", "")
	})
	t.Run("owned by another user", func(t *testing.T) {
		env, _ := testEnv(t)
		env.UID = os.Getuid() + 1000
		r := one(t, env, "socket")
		expect(t, r, Fail, fmt.Sprintf("owned by uid %d, not you (uid %d)", os.Getuid(), env.UID), "sudo rm -rf "+env.Layout.Runtime)
		if r.autofix != nil {
			t.Error("doctor offers to fix files it does not own")
		}
	})
	t.Run("not created yet", func(t *testing.T) {
		env, _ := testEnv(t)
		os.RemoveAll(env.Layout.Runtime)
		expect(t, one(t, env, "socket"), Skip, "does not exist yet", "")
	})
}

func TestStoreCheck(t *testing.T) {
	ctx := context.Background()
	env, _ := testEnv(t)
	db := env.Layout.DB()
	expect(t, one(t, env, "state-store"), Warn, "no state store", "banger vm list")
	if _, err := os.Stat(db); err == nil {
		t.Fatal("the check created the store")
	}

	// Pending: a store an older banger left at migration 1.
	raw, err := sql.Open("sqlite", db)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT)`,
		`INSERT INTO schema_migrations(version) VALUES (1)`,
	} {
		if _, err := raw.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	raw.Close()
	st, _ := store.CheckMigrations(ctx, db)
	expect(t, one(t, env, "state-store"), Warn, fmt.Sprintf("at migration 1 of %d", st.Latest), "banger daemon stop")

	// Up to date once the daemon (store.Open) migrated it.
	s, err := store.Open(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	expect(t, one(t, env, "state-store"), Pass, fmt.Sprintf("up to date (migration %d)", st.Latest), "")

	// Newer: a later banger migrated further.
	raw, _ = sql.Open("sqlite", db)
	if _, err := raw.Exec(`INSERT INTO schema_migrations(version) VALUES (?)`, st.Latest+1); err != nil {
		t.Fatal(err)
	}
	raw.Close()
	expect(t, one(t, env, "state-store"), Fail, fmt.Sprintf("migration %d, newer than this banger's %d", st.Latest+1, st.Latest), "update banger")

	// Not a database at all.
	writeFile(t, db, "not sqlite, just text that is long enough to have a header", 0o600)
	os.Remove(db + "-wal")
	os.Remove(db + "-shm")
	expect(t, one(t, env, "state-store"), Fail, "cannot read the state store", env.Layout.DaemonLog())
}

func TestNotInstalled(t *testing.T) {
	env, _ := testEnv(t)
	for _, n := range []string{"install-drift", "unit-hardening"} {
		expect(t, one(t, env, n), Skip, "not installed as a system service (sudo banger system install)", "")
	}
}

func TestInstalled(t *testing.T) {
	env, _ := testEnv(t)
	unit := func(name string) install.UnitStatus {
		u := install.UnitStatus{File: "/etc/systemd/system/" + name, Current: true}
		u.Name, u.ActiveState = name, "active"
		return u
	}
	healthy := func() *install.Status {
		return &install.Status{
			Install: &install.Record{Version: "v1", Owner: install.Owner{Name: "dev"}},
			Units:   []install.UnitStatus{unit(install.HelperUnitName), unit(install.DaemonUnitName)},
		}
	}
	env.Install = healthy()
	expect(t, one(t, env, "install-drift"), Pass, "banger v1 installed for dev", "")
	expect(t, one(t, env, "unit-hardening"), Pass, "as this banger installs them", "")

	env.Install = healthy()
	env.Install.Drift = []string{"the daemon runs v0 (a), the install is v1 (b): sudo systemctl restart bangerd.service"}
	expect(t, one(t, env, "install-drift"), Warn, "the daemon runs v0", "sudo banger system install")

	env.Install = healthy()
	env.Install.Units[1].Current = false
	expect(t, one(t, env, "unit-hardening"), Warn, "bangerd.service differs from what this banger installs", "sudo banger system install")

	env.Install = healthy()
	env.Install.Units[0].DropIns = []string{"/etc/systemd/system/bangerd-root.service.d/open.conf"}
	expect(t, one(t, env, "unit-hardening"), Warn, "bangerd-root.service is amended by /etc/systemd/system/bangerd-root.service.d/open.conf", "review or remove /etc/systemd/system/bangerd-root.service.d/open.conf")
}

// A VM still running the agent an older banger booted it with is a
// warning after an update; an agent not yet heard from is not.
func TestAgentsCheck(t *testing.T) {
	env, d := testEnv(t)
	d.vms = []api.VM{{Name: "a", State: api.VMRunning, AgentVersion: "v1"}, {Name: "b", State: api.VMRunning}, {Name: "c", State: api.VMStopped, AgentVersion: "v0"}}
	expect(t, one(t, env, "agents"), Pass, "2 running VMs, 1 with a known agent, all v1", "")
	d.vms[1].AgentVersion = "v0"
	expect(t, one(t, env, "agents"), Warn, "b (agent v0)", "banger vm restart NAME")
	env.Daemon, env.DaemonErr = nil, errors.New("down")
	expect(t, one(t, env, "agents"), Skip, "does not answer", "")
}
