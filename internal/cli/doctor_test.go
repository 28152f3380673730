package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bangervm/banger/client"
	"github.com/bangervm/banger/internal/doctor"
	"github.com/bangervm/banger/internal/install"
	"github.com/bangervm/banger/internal/paths"
)

func TestRenderDoctor(t *testing.T) {
	var out bytes.Buffer
	err := renderDoctor(&out, []doctor.Result{
		{Name: "architecture", Status: doctor.Pass, Detail: "linux/amd64"},
		{Name: "kvm", Status: doctor.Warn, Detail: "no /dev/kvm", Fix: "sudo modprobe kvm_intel"},
		{Name: "socket", Status: doctor.Pass, Detail: "private", Fixed: true},
		{Name: "install-drift", Status: doctor.Skip, Detail: "not installed"},
		{Name: "daemon", Status: doctor.Fail, Detail: "down", Fix: "see the log"},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := `CHECK          STATUS  DETAIL
architecture   PASS    linux/amd64
kvm            WARN    no /dev/kvm
                       fix: sudo modprobe kvm_intel
socket         PASS    (fixed) private
install-drift  SKIP    not installed
daemon         FAIL    down
                       fix: see the log

5 checks: 2 pass, 1 warn, 1 fail, 1 skip
`
	if out.String() != want {
		t.Errorf("got\n%s\nwant\n%s", out.String(), want)
	}
}

// A daemon that cannot be reached is a finding, not a crash: doctor
// reports every check and exits 1.
func TestDoctorWithoutDaemon(t *testing.T) {
	t.Setenv("HOME", t.TempDir())
	io, out, _ := TestStreams()
	f := &Factory{IO: io, Layout: paths.Under(t.TempDir()), Client: func(context.Context) (*client.Client, error) {
		return nil, errors.New("bangerd did not answer")
	}}
	if code := Run(f, []string{"doctor", "--json"}); code != ExitFailure {
		t.Errorf("exit %d, want %d", code, ExitFailure)
	}
	var rs []doctor.Result
	if err := json.Unmarshal(out.Bytes(), &rs); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if len(rs) != len(doctor.Names()) {
		t.Fatalf("%d results, want %d", len(rs), len(doctor.Names()))
	}
	for _, r := range rs {
		if r.Name == "daemon" && (r.Status != doctor.Fail || !strings.Contains(r.Detail, "bangerd did not answer")) {
			t.Errorf("daemon check: %+v", r)
		}
	}
}

// doctor checks the install the CLI talks to, from the Factory: none
// when BANGER_HOME is set (a test's daemon on a host where banger is
// installed), the Factory's record otherwise, never /etc/banger by itself.
func TestDoctorInstallFromFactory(t *testing.T) {
	t.Setenv("HOME", t.TempDir())
	down := func(context.Context) (*client.Client, error) { return nil, errors.New("down") }
	drift := func(f *Factory) doctor.Result {
		t.Helper()
		io, out, _ := TestStreams()
		f.IO = io
		Run(f, []string{"doctor", "--json"})
		var rs []doctor.Result
		if err := json.Unmarshal(out.Bytes(), &rs); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		for _, r := range rs {
			if r.Name == "install-drift" {
				return r
			}
		}
		t.Fatal("no install-drift check")
		return doctor.Result{}
	}
	if r := drift(&Factory{Layout: paths.Under(t.TempDir()), Client: down}); r.Status != doctor.Skip {
		t.Errorf("not installed: %+v, want a skip", r)
	}
	dir := t.TempDir()
	p := install.DefaultPaths()
	p.UnitDir, p.HelperSocket, p.DaemonRuntime = filepath.Join(dir, "units"), filepath.Join(dir, "root.sock"), filepath.Join(dir, "run")
	rec := install.Record{Version: "v9.9.9", Owner: install.Owner{UID: 4321, GID: 4321, Name: "alice", Home: "/home/alice"}, Paths: p}
	f := &Factory{Layout: rec.Owner.Layout(p), Installed: true, InstalledOwner: 4321, Install: rec, Client: down}
	if r := drift(f); r.Status != doctor.Warn || !strings.Contains(r.Detail, "v9.9.9") {
		t.Errorf("installed: %+v, want drift from the Factory's install", r)
	}
}
