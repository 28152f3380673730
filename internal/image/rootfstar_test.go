package image

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/testutil"
)

// A tar of a whole root filesystem becomes an image through the pulled
// layers' path: content, owners and modes kept, the config given beside
// it; a hostile entry is refused as in a pulled layer, and nothing is
// recorded for it.
func TestRegisterTar(t *testing.T) {
	s, _ := newTestStore(t)
	dir := t.TempDir()
	write := func(name string, entries ...testutil.TarEntry) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, testutil.Tar(t, entries...), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("root.tar",
		testutil.TarEntry{Name: "./", Type: '5'},
		testutil.TarEntry{Name: "etc/", Type: '5'},
		testutil.TarEntry{Name: "etc/os-release", Body: "ID=from-node\n"},
		testutil.TarEntry{Name: "bin/", Type: '5'},
		testutil.TarEntry{Name: "bin/su", Body: "setuid", Mode: 0o4755},
		testutil.TarEntry{Name: "bin/su2", Type: '1', Linkname: "bin/su", Mode: 0o4755},
		testutil.TarEntry{Name: "home/", Type: '5'},
		testutil.TarEntry{Name: "home/user/", Type: '5', UID: 1000, GID: 1000},
		testutil.TarEntry{Name: "home/user/notes.txt", Body: "mine", UID: 1000, GID: 1000, Mode: 0o600},
	)
	cfg := api.ImageConfig{Env: []string{"PATH=/bin", "HELLO=node"}, WorkingDir: "/home/user"}
	img, err := s.Register(context.Background(), api.RegisterImageRequest{Name: "fromnode", RootFS: good, Format: api.RootFSTar, Config: cfg}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := catFile(t, img.RootFS, "/etc/os-release"); got != "ID=from-node\n" {
		t.Errorf("/etc/os-release = %q", got)
	}
	if st := debugfs(t, img.RootFS, "stat /bin/su"); !strings.Contains(st, "Mode:  04755") || !strings.Contains(st, "Links: 2") {
		t.Errorf("/bin/su: want mode 04755 and 2 links:\n%s", st)
	}
	if st := debugfs(t, img.RootFS, "stat /home/user/notes.txt"); !strings.Contains(st, "User:  1000") || !strings.Contains(st, "Mode:  0600") {
		t.Errorf("notes.txt: want user 1000, mode 0600:\n%s", st)
	}
	if img.Source != "tar" || img.Config.WorkingDir != "/home/user" || !slices.Equal(img.Config.Env, cfg.Env) {
		t.Errorf("image %+v: want source tar and the config given", img)
	}

	hostile := write("hostile.tar", testutil.TarEntry{Name: "../escape", Body: "x"})
	if _, err := s.Register(context.Background(), api.RegisterImageRequest{Name: "bad", RootFS: hostile, Format: api.RootFSTar}, nil); !errdefs.IsInvalidArgument(err) {
		t.Errorf("hostile tar: %v, want invalid argument", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "escape")); err == nil {
		t.Error("a hostile entry was written outside the tree")
	}
	if _, err := s.Register(context.Background(), api.RegisterImageRequest{Name: "bad", RootFS: good, Format: "zip"}, nil); !errdefs.IsInvalidArgument(err) {
		t.Errorf("format zip: %v, want invalid argument", err)
	}
	if imgs, _ := s.List(context.Background()); len(imgs) != 1 {
		t.Errorf("images: %v, want only fromnode", imgs)
	}
}
