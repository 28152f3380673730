package cli

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bangervm/banger/client"
	"github.com/bangervm/banger/internal/install"
	"github.com/bangervm/banger/internal/paths"
)

func TestInstallOwner(t *testing.T) {
	for _, tc := range []struct {
		flag, sudoUID, want string
	}{
		{"alice", "", "alice"},
		{"alice", "1000", "alice"},
		{"", "1000", "1000"},
		{"root", "", "root"},
		{"", "", ""},  // root without sudo: must name the owner
		{"", "0", ""}, // sudo from root: the same
	} {
		got, err := installOwner(tc.flag, tc.sudoUID)
		if tc.want == "" {
			var fe *FlagError
			if !errors.As(err, &fe) || !strings.Contains(err.Error(), "--owner root") {
				t.Errorf("installOwner(%q, %q) = %q, %v; want a usage error naming --owner root", tc.flag, tc.sudoUID, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("installOwner(%q, %q) = %q, %v; want %q", tc.flag, tc.sudoUID, got, err, tc.want)
		}
	}
}

func TestSystemInstallWithoutOwnerIsAUsageError(t *testing.T) {
	t.Setenv("SUDO_UID", "")
	io, _, errOut := TestStreams()
	f := &Factory{IO: io, Layout: paths.Under(t.TempDir()), Client: func(context.Context) (*client.Client, error) {
		t.Fatal("contacted the daemon")
		return nil, errors.New("unreachable")
	}}
	if code := Run(f, []string{"system", "install"}); code != ExitUsage || !strings.Contains(errOut.String(), "--owner") {
		t.Fatalf("exit %d, stderr %q; want usage error naming --owner", code, errOut.String())
	}
}

// With a system install, its owner's CLI (and root's) talks to the
// installed daemon; anyone else, and BANGER_HOME, keeps their own.
func TestInstalledLayout(t *testing.T) {
	record := filepath.Join(t.TempDir(), "install.toml")
	if _, ok := installedRecord(record, false, 1000); ok {
		t.Fatal("installed mode without an install record")
	}
	r := install.Record{Version: "v1", Owner: install.Owner{UID: 1000, GID: 1000, Name: "dev", Home: "/home/dev"}, Paths: install.DefaultPaths()}
	if err := install.Write(record, r); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		bangerHome bool
		uid        int
		want       bool
	}{{false, 1000, true}, {false, 0, true}, {false, 1001, false}, {true, 1000, false}, {true, 0, false}} {
		got, ok := installedRecord(record, tc.bangerHome, tc.uid)
		if ok != tc.want {
			t.Errorf("BANGER_HOME %v, uid %d: installed %v, want %v", tc.bangerHome, tc.uid, ok, tc.want)
			continue
		}
		l := got.Owner.Layout(got.Paths)
		if ok && (l.Socket() != "/run/bangerd/banger/bangerd.sock" || l.State != "/home/dev/.local/state/banger" || got.Owner.UID != 1000) {
			t.Errorf("uid %d: layout %+v, want the owner's dirs and the unit's socket", tc.uid, l)
		}
	}
}

// The installed daemon is systemd's: daemon stop says how to stop it
// instead of signalling it (systemd would not restart a clean exit, and
// the CLI no longer starts one).
func TestDaemonStopRefusedWhenInstalled(t *testing.T) {
	io, _, errOut := TestStreams()
	f := &Factory{IO: io, Layout: paths.Under(t.TempDir()), Installed: true}
	if code := Run(f, []string{"daemon", "stop"}); code != ExitFailure || !strings.Contains(errOut.String(), "sudo systemctl stop bangerd.service") {
		t.Fatalf("exit %d, stderr %q; want a refusal naming systemctl stop", code, errOut.String())
	}
}

func TestLastLines(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    int
		want string
	}{
		{"a\nb\nc\n", 2, "b\nc\n"},
		{"a\nb\nc", 2, "b\nc"},
		{"a\nb\nc\n", 5, "a\nb\nc\n"},
		{"a\nb\nc\n", 0, ""},
		{"", 3, ""},
		{"only\n", 1, "only\n"},
	} {
		if got := string(lastLines([]byte(tc.in), tc.n)); got != tc.want {
			t.Errorf("lastLines(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
		}
	}
}

// daemon logs prints the end of the layout's bangerd.log: with a system
// install, the owner's (Factory.Layout is the install's then).
func TestDaemonLogs(t *testing.T) {
	io, out, errOut := TestStreams()
	f := &Factory{IO: io, Layout: paths.Under(t.TempDir())}
	if code := Run(f, []string{"daemon", "logs"}); code != ExitFailure || !strings.Contains(errOut.String(), "no daemon log yet") {
		t.Fatalf("no log: exit %d, stderr %q", code, errOut.String())
	}
	os.MkdirAll(f.Layout.State, 0o700)
	os.WriteFile(f.Layout.DaemonLog(), []byte("one\ntwo\nthree\n"), 0o600)
	if code := Run(f, []string{"daemon", "logs", "-n", "2"}); code != ExitOK || out.String() != "two\nthree\n" {
		t.Fatalf("exit %d, stdout %q; want the last two lines", code, out.String())
	}
	// The owner's file is read by root too: not through a symlink.
	os.Remove(f.Layout.DaemonLog())
	os.Symlink("/etc/hostname", f.Layout.DaemonLog())
	errOut.Reset()
	if code := Run(f, []string{"daemon", "logs"}); code != ExitFailure || !strings.Contains(errOut.String(), "symlink") {
		t.Fatalf("symlinked log: exit %d, stderr %q; want a refusal", code, errOut.String())
	}
}

// With a system install, daemon status is system status: the install
// record, both units and drift, exit status 1 when anything drifts (here
// every unit is missing).
func TestDaemonStatusInstalled(t *testing.T) {
	dir := t.TempDir()
	p := install.DefaultPaths()
	p.UnitDir, p.HelperSocket, p.DaemonRuntime = filepath.Join(dir, "units"), filepath.Join(dir, "root.sock"), filepath.Join(dir, "run")
	rec := install.Record{Version: "v9.9.9", Commit: "abc", Owner: install.Owner{UID: 4321, GID: 4321, Name: "alice", Home: "/home/alice"}, Paths: p}
	io, out, _ := TestStreams()
	f := &Factory{IO: io, Layout: rec.Owner.Layout(p), Installed: true, InstalledOwner: 4321, Install: rec}
	if code := Run(f, []string{"daemon", "status"}); code != ExitFailure || !strings.Contains(out.String(), "v9.9.9") || !strings.Contains(out.String(), "for alice (uid 4321)") ||
		!strings.Contains(out.String(), install.DaemonUnitName) || !strings.Contains(out.String(), "drift") {
		t.Fatalf("exit %d, stdout:\n%s\nwant system status of the install, with drift", code, out.String())
	}
}
