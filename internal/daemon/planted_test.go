package daemon

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bangervm/banger/internal/config"
	"github.com/bangervm/banger/internal/paths"
	"github.com/bangervm/banger/internal/testutil"
)

// TestPlantedRuntimeDir: another user (nobody) prepares the daemon's
// runtime directory, or a symlink inside it, before the daemon (root)
// starts. The daemon refuses with an error that names the planted path,
// and writes nothing through the planted symlinks.
func TestPlantedRuntimeDir(t *testing.T) {
	testutil.RequireRoot(t)
	t.Setenv("BANGER_NETWORK", "off")
	// A directory like /tmp: everyone may create entries, nobody may
	// replace another's.
	tmp, err := os.MkdirTemp("", "banger-planted-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(tmp) })
	if err := os.Chmod(tmp, 0o777|fs.ModeSticky); err != nil {
		t.Fatal(err)
	}
	// asNobody runs a shell script as the other user, in tmp.
	asNobody := func(t *testing.T, script string) {
		t.Helper()
		cmd := testutil.AsUser(exec.Command("sh", "-ec", script), testutil.Nobody, testutil.Nobody)
		cmd.Dir = tmp
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("as nobody: %s: %v\n%s", script, err, out)
		}
	}
	// asRoot plants what only a bug of ours could leave in our own
	// directory.
	asRoot := func(t *testing.T, script string) {
		t.Helper()
		cmd := exec.Command("sh", "-ec", script)
		cmd.Dir = tmp
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", script, err, out)
		}
	}
	for _, tc := range []struct {
		name    string
		plant   func(t *testing.T, rt, target string)
		mention []string
	}{
		{"dir of another user", func(t *testing.T, rt, target string) {
			asNobody(t, "mkdir -m 0777 "+rt+"; ln -s "+target+" "+rt+"/bangerd.lock; ln -s "+target+" "+rt+"/bangerd.pid")
		}, []string{"owned by uid 65534", "XDG_RUNTIME_DIR"}},
		{"symlinked dir", func(t *testing.T, rt, target string) {
			asNobody(t, "mkdir -m 0777 elsewhere; ln -s "+tmp+"/elsewhere "+rt)
		}, []string{"symlink"}},
		{"symlinked lock", func(t *testing.T, rt, target string) {
			asRoot(t, "mkdir -m 0700 "+rt+"; ln -s "+target+" "+rt+"/bangerd.lock")
		}, []string{"bangerd.lock", "symlink"}},
		{"symlinked pidfile", func(t *testing.T, rt, target string) {
			asRoot(t, "mkdir -m 0700 "+rt+"; ln -s "+target+" "+rt+"/bangerd.pid")
		}, []string{"bangerd.pid", "symlink"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rt := filepath.Join(tmp, "banger-"+strings.ReplaceAll(tc.name, " ", "-"))
			target := filepath.Join(t.TempDir(), "target")
			tc.plant(t, rt, target)
			l := paths.Under(t.TempDir())
			l.Runtime = rt
			settings := config.Default()
			settings.DNSAddr = "127.0.0.1:0"
			// Before the fix the daemon served on; bound the wait.
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			err := Run(ctx, Config{Layout: l, Settings: settings, Log: slog.New(slog.DiscardHandler)})
			if err == nil {
				t.Fatal("daemon served from a planted runtime directory")
			}
			t.Logf("refused: %v", err)
			for _, w := range append(tc.mention, rt) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if _, serr := os.Lstat(target); !errors.Is(serr, fs.ErrNotExist) {
				t.Errorf("daemon wrote through the planted symlink to %s (%v)", target, serr)
			}
		})
	}
}
