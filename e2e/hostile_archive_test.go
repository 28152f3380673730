package e2e

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bangervm/banger/internal/testutil"
	"github.com/bangervm/banger/internal/testutil/hostiletar"
)

// TestHostileArchive: vm cp out of a VM whose agent was replaced by one
// sending a hostile archive (hostiletar.Archive) lands only the named
// source, never through or onto what the destination already holds, and
// nothing dangerous, even as root; it names every entry refused, without
// passing their control characters to the terminal, and exits 1. An
// archive that never ends is stopped by an interrupt, leaving no partial
// file.
func TestHostileArchive(t *testing.T) {
	// As root the CLI could create what the guest sends: device nodes,
	// FIFOs, setuid programs, hard links to any file.
	testutil.RequireRoot(t)
	e := hostileEnv(t, "")
	t.Cleanup(func() { e.run("vm", "delete", "-f", "evil") })
	e.ok("vm", "run", "-d", "--name", "evil", "--image", "bb")
	e.setHostile("evil", "tar-hostile")

	// outer/home is DEST, as a user's home; outer/victim is what the
	// planted link points at. home/dir (base(SRC)) exists, private.
	outer := t.TempDir()
	home := filepath.Join(outer, "home")
	top := filepath.Join(home, "dir")
	victim := filepath.Join(outer, "victim")
	for _, d := range []string{home, top, filepath.Join(top, hostiletar.PlantedDir)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(victim, []byte("keep"), 0o644)
	if err := os.Symlink("../../victim", filepath.Join(top, hostiletar.Planted)); err != nil {
		t.Fatal(err)
	}
	os.Remove(hostiletar.Absolute)
	passwd, passwdLinks := sha(t, "/etc/passwd"), nlink(t, "/etc/passwd")

	r := e.run("vm", "cp", "evil:/some/dir", home)
	if r.code != 1 {
		t.Errorf("vm cp of a hostile archive: exit %d, want 1; stderr %q", r.code, r.err)
	}
	for _, name := range hostiletar.Refused("dir") {
		if name == "dir/"+hostiletar.Terminal {
			continue
		}
		if !strings.Contains(r.err, "not copied: "+name+": ") {
			t.Errorf("stderr does not name %q as not copied:\n%s", name, r.err)
		}
	}
	if strings.ContainsAny(r.err, "\x1b\x07") || strings.Contains(r.err, "\nbanger: all copied") {
		t.Errorf("stderr passes the guest's control characters on: %q", r.err)
	}
	if !strings.Contains(r.err, `not copied: dir/\x1b[2J\x1b]0;owned\x07\nbanger: all copied: FIFO`) {
		t.Errorf("stderr does not name the entry with control characters, escaped: %q", r.err)
	}

	// Nothing outside DEST/dir: not beside DEST, not in DEST (a home's
	// .bashrc, .ssh, .git), not at the absolute path.
	if got := names(t, outer); got != "home victim" {
		t.Errorf("DEST's parent holds %s, want home victim", got)
	}
	if got := names(t, home); got != "dir" {
		t.Errorf("DEST holds %s, want dir", got)
	}
	if _, err := os.Lstat(hostiletar.Absolute); err == nil {
		t.Errorf("%s written", hostiletar.Absolute)
	}
	if b, _ := os.ReadFile(victim); string(b) != "keep" {
		t.Errorf("written through the planted link: victim = %q", b)
	}
	if l, _ := os.Readlink(filepath.Join(top, hostiletar.Planted)); l != "../../victim" {
		t.Errorf("planted link now %q", l)
	}
	if sha(t, "/etc/passwd") != passwd || nlink(t, "/etc/passwd") != passwdLinks {
		t.Error("/etc/passwd changed or linked")
	}
	// In DEST/dir: the good file, the setuid file without its bit, the
	// archive's link (as a link); existing directories keep their modes.
	if got := names(t, top); got != "evil good planted private suid" {
		t.Errorf("DEST/dir holds %s, want evil good planted private suid", got)
	}
	if b, _ := os.ReadFile(filepath.Join(top, hostiletar.Good)); string(b) != hostiletar.GoodBody {
		t.Errorf("good file: %q", b)
	}
	for p, want := range map[string]fs.FileMode{top: fs.ModeDir | 0o700, filepath.Join(top, hostiletar.PlantedDir): fs.ModeDir | 0o700, filepath.Join(top, hostiletar.Setuid): 0o755} {
		if fi, err := os.Lstat(p); err != nil || fi.Mode() != want {
			t.Errorf("%s: %v %v, want mode %v", p, fi, err, want)
		}
	}
	filepath.WalkDir(outer, func(p string, d fs.DirEntry, err error) error {
		if fi, lerr := os.Lstat(p); lerr == nil && fi.Mode()&(fs.ModeDevice|fs.ModeCharDevice|fs.ModeNamedPipe|fs.ModeSocket|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky) != 0 {
			t.Errorf("%s: mode %v on the host", p, fi.Mode())
		}
		return nil
	})

	// An archive that never ends: nothing bounds a copy's size (a big
	// file is legitimate), so it runs until interrupted; then the file cut
	// short is removed.
	e.setHostile("evil", "tar-endless")
	dst := t.TempDir()
	big := filepath.Join(dst, "dir", hostiletar.EndlessName)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute) // hang guard
	defer cancel()
	cmd := e.cmd(ctx, "vm", "cp", "evil:/some/dir", dst)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for {
		if fi, err := os.Stat(big); err == nil && fi.Size() > 4<<20 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("the endless file never grew past 4 MiB; stderr %q", stderr.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	cmd.Process.Signal(os.Interrupt)
	err := cmd.Wait()
	t.Logf("vm cp of an endless archive, interrupted: %v; stderr %q", err, stderr.String())
	if cmd.ProcessState.ExitCode() != 130 || ctx.Err() != nil || !strings.Contains(stderr.String(), "interrupted") {
		t.Errorf("interrupted vm cp of an endless archive: %v, stderr %q; want exit 130, interrupted", err, stderr.String())
	}
	if _, err := os.Lstat(big); err == nil {
		t.Error("the file cut short stays")
	}
}

// names lists dir's entries, sorted, space-separated.
func names(t *testing.T, dir string) string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var n []string
	for _, e := range ents {
		n = append(n, e.Name())
	}
	return strings.Join(n, " ")
}

func nlink(t *testing.T, p string) uint64 {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return uint64(fi.Sys().(*syscall.Stat_t).Nlink)
}
