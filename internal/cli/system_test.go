package cli

import (
	"context"
	"errors"
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
	if _, _, ok := installedLayout(record, false, 1000); ok {
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
	}{{false, 1000, true}, {false, 0, true}, {false, 1001, false}, {true, 1000, false}} {
		l, owner, ok := installedLayout(record, tc.bangerHome, tc.uid)
		if ok != tc.want {
			t.Errorf("BANGER_HOME %v, uid %d: installed %v, want %v", tc.bangerHome, tc.uid, ok, tc.want)
			continue
		}
		if ok && (l.Socket() != "/run/bangerd/banger/bangerd.sock" || l.State != "/home/dev/.local/state/banger" || owner != 1000) {
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
