package install

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/bangervm/banger/internal/hostcmd"
)

// recorder is a Systemd that records calls and fails the one named.
type recorder struct {
	calls  []string
	failAt string
}

func (r *recorder) do(call string) error {
	r.calls = append(r.calls, call)
	if call == r.failAt {
		return errors.New("injected failure at " + call)
	}
	return nil
}
func (r *recorder) DaemonReload(context.Context) error { return r.do("daemon-reload") }
func (r *recorder) Enable(_ context.Context, u ...string) error {
	return r.do("enable " + strings.Join(u, " "))
}
func (r *recorder) Disable(_ context.Context, u ...string) error {
	return r.do("disable " + strings.Join(u, " "))
}
func (r *recorder) Restart(_ context.Context, u ...string) error {
	return r.do("restart " + strings.Join(u, " "))
}
func (r *recorder) Show(_ context.Context, u string) (hostcmd.UnitState, error) {
	return hostcmd.UnitState{Name: u, LoadState: "loaded"}, r.do("show " + u)
}

// tree returns every file under dir with its content.
func tree(t *testing.T, dir string) map[string]string {
	t.Helper()
	m := map[string]string{}
	filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(dir, path)
		if d.IsDir() {
			m[rel+"/"] = ""
			return nil
		}
		b, _ := os.ReadFile(path)
		m[rel] = string(b)
		return nil
	})
	return m
}

func testInstall(t *testing.T) (Options, string) {
	root := t.TempDir()
	src := filepath.Join(root, "src")
	os.MkdirAll(src, 0o755)
	for _, n := range []string{"banger", "bangerd", "banger-agent"} {
		os.WriteFile(filepath.Join(src, n), []byte("new "+n), 0o755)
	}
	sys := filepath.Join(root, "sys")
	r := testRecord()
	r.Owner.Home = filepath.Join(root, "home")
	r.Paths = Paths{
		CLI: filepath.Join(sys, "bin/banger"), Daemon: filepath.Join(sys, "bin/bangerd"), Agent: filepath.Join(sys, "lib/banger/banger-agent"),
		ConfigDir: filepath.Join(sys, "etc/banger"), Record: filepath.Join(sys, "etc/banger/install.toml"), UnitDir: filepath.Join(sys, "units"),
		HelperSocket: "/run/banger-test/root.sock", DaemonRuntime: "/run/bangerd-test",
	}
	s, err := SourcesBeside(src, r.Paths)
	if err != nil {
		t.Fatal(err)
	}
	return Options{Record: r, Sources: s, MakeOwnerDirs: func(_ context.Context, _ Owner, dirs ...string) error {
		for _, d := range dirs {
			if err := os.MkdirAll(d, 0o700); err != nil {
				return err
			}
		}
		return nil
	}}, sys
}

// A fresh install that fails once the units are enabled leaves nothing:
// units disabled again, every file and directory it created removed.
func TestInstallRollsBackAFreshInstall(t *testing.T) {
	o, sys := testInstall(t)
	os.MkdirAll(sys, 0o755)
	sd := &recorder{failAt: "restart " + DaemonUnitName}
	o.Systemd = sd
	if err := Install(context.Background(), o); err == nil || !strings.Contains(err.Error(), "injected") {
		t.Fatalf("Install = %v, want the injected failure", err)
	}
	if got := tree(t, sys); !reflect.DeepEqual(got, map[string]string{"./": ""}) {
		t.Fatalf("left behind: %v", got)
	}
	want := []string{"daemon-reload", "enable " + HelperUnitName + " " + DaemonUnitName, "restart " + HelperUnitName, "restart " + DaemonUnitName,
		"disable " + DaemonUnitName + " " + HelperUnitName, "daemon-reload"}
	if !reflect.DeepEqual(sd.calls, want) {
		t.Fatalf("systemd calls %q, want %q", sd.calls, want)
	}
}

// An upgrade that fails puts the previous binaries, units and record
// back and restarts the units on them.
func TestInstallRollsBackAnUpgrade(t *testing.T) {
	o, sys := testInstall(t)
	o.Systemd = &recorder{}
	old := o
	old.Record.Version = "v0-old"
	for _, n := range []string{"banger", "bangerd", "banger-agent"} {
		os.WriteFile(filepath.Join(filepath.Dir(o.Sources.CLI), n+".old"), []byte("old "+n), 0o755)
	}
	old.Sources = Sources{CLI: o.Sources.CLI + ".old", Daemon: o.Sources.Daemon + ".old", Agent: o.Sources.Agent + ".old"}
	// The old install, as it would be after success (WaitAnswering aside).
	for _, f := range [][2]string{{old.Sources.CLI, o.Record.Paths.CLI}, {old.Sources.Daemon, o.Record.Paths.Daemon}, {old.Sources.Agent, o.Record.Paths.Agent}} {
		os.MkdirAll(filepath.Dir(f[1]), 0o755)
		b, _ := os.ReadFile(f[0])
		os.WriteFile(f[1], b, 0o755)
	}
	dUnit, hUnit, _ := Units(old.Record)
	os.MkdirAll(o.Record.Paths.UnitDir, 0o755)
	os.WriteFile(o.Record.Paths.DaemonUnit(), dUnit, 0o644)
	os.WriteFile(o.Record.Paths.HelperUnit(), hUnit, 0o644)
	os.MkdirAll(o.Record.Paths.ConfigDir, 0o755)
	if err := Write(o.Record.Paths.Record, old.Record); err != nil {
		t.Fatal(err)
	}
	before := tree(t, sys)

	sd := &recorder{failAt: "restart " + DaemonUnitName}
	o.Systemd = sd
	if err := Install(context.Background(), o); err == nil {
		t.Fatal("Install succeeded despite the injected failure")
	}
	if after := tree(t, sys); !reflect.DeepEqual(after, before) {
		t.Fatalf("after rollback:\n%v\nwant as before:\n%v", after, before)
	}
	if last := sd.calls[len(sd.calls)-1]; last != "restart "+HelperUnitName+" "+DaemonUnitName {
		t.Fatalf("last systemd call %q: want the old units restarted (calls %q)", last, sd.calls)
	}
	if sd.calls[len(sd.calls)-2] != "daemon-reload" {
		t.Fatalf("calls %q: want daemon-reload before the restart", sd.calls)
	}
}

func TestUninstallRemovesEverythingButOwnerData(t *testing.T) {
	o, sys := testInstall(t)
	sd := &recorder{failAt: "restart " + DaemonUnitName}
	o.Systemd = sd
	// Put the install in place by hand: files as Install writes them.
	p := o.Record.Paths
	for _, f := range []string{p.CLI, p.Daemon, p.Agent, p.DaemonUnit(), p.HelperUnit()} {
		os.MkdirAll(filepath.Dir(f), 0o755)
		os.WriteFile(f, []byte("x"), 0o644)
	}
	os.MkdirAll(p.ConfigDir, 0o755)
	Write(p.Record, o.Record)
	l := o.Record.Owner.Layout(p)
	o.MakeOwnerDirs(context.Background(), o.Record.Owner, l.Config, l.State, l.Cache)
	os.WriteFile(filepath.Join(l.State, "banger.db"), []byte("data"), 0o600)

	sd.calls = nil
	var removed []string
	err := Uninstall(context.Background(), UninstallOptions{Record: o.Record, Systemd: sd, RemoveOwnerDirs: func(_ context.Context, _ Owner, d ...string) error {
		removed = d
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"./": "", "bin/": "", "etc/": "", "lib/": "", "units/": ""}
	if got := tree(t, sys); !reflect.DeepEqual(got, want) {
		t.Fatalf("left behind: %v", got)
	}
	if wantCalls := []string{"disable " + DaemonUnitName + " " + HelperUnitName, "daemon-reload"}; !reflect.DeepEqual(sd.calls, wantCalls) {
		t.Fatalf("systemd calls %q, want %q", sd.calls, wantCalls)
	}
	if removed != nil {
		t.Fatalf("removed owner data %v without --purge", removed)
	}
	if got := OwnerData(o.Record); len(got) != 3 {
		t.Fatalf("OwnerData = %v, want the three directories", got)
	}
}
