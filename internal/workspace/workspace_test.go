package workspace

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/hostcmd"
)

// The guest scripts run on the host with sh in temporary directories: the
// same git and sh a Debian guest has.

func setupEnv(t testing.TB) {
	t.Helper()
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(home, ".config"))
	t.Setenv("GIT_CONFIG_NOSYSTEM", "1")
	for _, k := range []string{"GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY", "GIT_ALTERNATE_OBJECT_DIRECTORIES"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	cfg := "[user]\n\tname = Test\n\temail = test@example.com\n[init]\n\tdefaultBranch = main\n[protocol \"file\"]\n\tallow = always\n"
	if err := os.WriteFile(filepath.Join(home, ".gitconfig"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
}

func run(t *testing.T, dir string, args ...string) string {
	t.Helper()
	out, err := hostcmd.Git(context.Background(), hostcmd.GitCmd{Dir: dir, Args: args})
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

func runSh(t *testing.T, script string, stdin []byte) ([]byte, error) {
	t.Helper()
	return hostcmd.Run(context.Background(), hostcmd.Cmd{Name: "sh", Args: []string{"-c", script}, Stdin: bytes.NewReader(stdin)})
}

func write(t testing.TB, root, rel string, data []byte, mode os.FileMode) {
	t.Helper()
	p := filepath.Join(root, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
}

// tree hashes every file under root except .git: content, exec bit,
// symlink target.
func tree(t *testing.T, root string) map[string]string {
	t.Helper()
	m := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if d.IsDir() {
			if rel == ".git" {
				return filepath.SkipDir
			}
			return nil
		}
		if d.Type()&fs.ModeSymlink != 0 {
			target, err := os.Readlink(p)
			m[filepath.ToSlash(rel)] = "link:" + target
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		m[filepath.ToSlash(rel)] = fmt.Sprintf("%s x=%v", hex.EncodeToString(sum[:]), info.Mode()&0o100 != 0)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// snapshot records every file in a .git directory: bytes, mode and mtime.
func snapshot(t *testing.T, gitDir string) map[string]string {
	t.Helper()
	m := map[string]string{}
	err := filepath.WalkDir(gitDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		b, _ := os.ReadFile(p)
		sum := sha256.Sum256(b)
		m[p] = fmt.Sprintf("%x %v %d", sum, info.Mode(), info.ModTime().UnixNano())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func keys(m map[string]string) []string {
	k := make([]string, 0, len(m))
	for p := range m {
		k = append(k, p)
	}
	slices.Sort(k)
	return k
}

func diffMaps(t *testing.T, what string, got, want map[string]string) {
	t.Helper()
	for _, p := range keys(want) {
		if g, ok := got[p]; !ok {
			t.Errorf("%s: %q missing", what, p)
		} else if g != want[p] {
			t.Errorf("%s: %q differs: got %s want %s", what, p, g, want[p])
		}
	}
	for _, p := range keys(got) {
		if _, ok := want[p]; !ok {
			t.Errorf("%s: unexpected %q", what, p)
		}
	}
}

var binA = []byte("\x00\x01\x02binary\xff\xfe\x00 data\r\n\x00")

// makeHostRepo builds a repository with two commits and uncommitted
// changes of every kind.
func makeHostRepo(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "my repo")
	run(t, "", "init", "-q", dir)
	write(t, dir, "README.md", []byte("hello\n"), 0o644)
	write(t, dir, ".gitignore", []byte(".env\nbuild/\n"), 0o644)
	write(t, dir, "bin.dat", binA, 0o644)
	write(t, dir, "old name.txt", []byte("to be renamed\n"), 0o644)
	write(t, dir, "staged rename.txt", []byte("git mv me\n"), 0o644)
	write(t, dir, "del.txt", []byte("delete me\n"), 0o644)
	write(t, dir, "script.sh", []byte("#!/bin/sh\necho hi\n"), 0o644)
	write(t, dir, "dir with space/ünïcode.txt", []byte("ünïcode\n"), 0o644)
	if err := os.Symlink("README.md", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	run(t, dir, "add", "-A")
	run(t, dir, "commit", "-qm", "one")
	write(t, dir, "README.md", []byte("hello\nworld\n"), 0o644)
	run(t, dir, "commit", "-qam", "two")

	// Uncommitted changes.
	write(t, dir, "README.md", []byte("hello\nworld\nuncommitted\n"), 0o644)
	write(t, dir, "bin.dat", append(binA, 0, 0, 9), 0o644)
	if err := os.Rename(filepath.Join(dir, "old name.txt"), filepath.Join(dir, "new näme.txt")); err != nil {
		t.Fatal(err)
	}
	run(t, dir, "mv", "staged rename.txt", "staged renamed ü.txt")
	if err := os.Remove(filepath.Join(dir, "del.txt")); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(dir, "script.sh"), 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, dir, "notes/todo ü.txt", []byte("untracked\n"), 0o644)
	write(t, dir, "untracked.bin", []byte{0, 1, 2, 3, 0}, 0o644)
	write(t, dir, ".env", []byte("SECRET=1\n"), 0o600)
	write(t, dir, "build/out.o", []byte("ignored\n"), 0o644)
	return dir
}

func TestRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name   string
		opts   Options
		branch string
	}{
		{"tracked", Options{}, "main"},
		{"untracked-full-history", Options{IncludeUntracked: true, FullHistory: true}, "feat/x"},
		{"detached", Options{IncludeUntracked: true}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			setupEnv(t)
			ctx := context.Background()
			host := makeHostRepo(t)
			pristine := filepath.Join(t.TempDir(), "pristine")
			run(t, "", "clone", "-q", "--no-local", host, pristine)

			statusBefore := run(t, host, "status", "--porcelain=v1", "-z", "--untracked-files=all")
			before := snapshot(t, filepath.Join(host, ".git"))
			countBefore := run(t, host, "count-objects", "-v")

			repo, err := Inspect(ctx, filepath.Join(host, "dir with space"))
			if err != nil {
				t.Fatal(err)
			}
			if repo.Root != host || repo.Branch != "main" || len(repo.Head) != 40 {
				t.Fatalf("Inspect = %+v", repo)
			}
			m, err := Plan(ctx, repo, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			var stream bytes.Buffer
			if err := Pack(ctx, m, &stream); err != nil {
				t.Fatal(err)
			}
			diffMaps(t, "host .git after Pack", snapshot(t, filepath.Join(host, ".git")), before)

			// Expected guest tree: the host's working tree without ignored
			// files, and without untracked ones unless asked.
			want := tree(t, host)
			delete(want, ".env")
			delete(want, "build/out.o")
			if !tc.opts.IncludeUntracked {
				delete(want, "notes/todo ü.txt")
				delete(want, "untracked.bin")
				delete(want, "new näme.txt")
			}
			var planned []string
			for _, f := range m.Files {
				planned = append(planned, f.Path)
			}
			if !slices.Equal(planned, keys(want)) {
				t.Errorf("Plan files = %q\nwant %q", planned, keys(want))
			}
			if !slices.Equal(m.Deleted, []string{"del.txt", "old name.txt", "staged rename.txt"}) {
				t.Errorf("Deleted = %q", m.Deleted)
			}

			guest := filepath.Join(t.TempDir(), "root", "repo")
			if out, err := runSh(t, GuestPrepareScript(guest, tc.branch), stream.Bytes()); err != nil {
				t.Fatalf("prepare: %v\n%s", err, out)
			}
			diffMaps(t, "guest tree", tree(t, guest), want)
			// The guest's index is exactly the planned tree.
			shipped, err := parseStage([]byte(run(t, guest, "ls-files", "--stage", "-z")))
			if err != nil {
				t.Fatal(err)
			}
			planFiles := slices.Clone(m.Files)
			for i := range planFiles {
				planFiles[i].Change = Unchanged
			}
			if !slices.Equal(shipped, planFiles) {
				t.Errorf("guest index = %v\nplan = %v", shipped, m.Files)
			}
			if got := strings.TrimSpace(run(t, guest, "rev-parse", "HEAD")); got != repo.Head {
				t.Errorf("guest HEAD = %s, want %s", got, repo.Head)
			}
			if b, _ := os.ReadFile(filepath.Join(guest, ".git", BaseFile)); strings.TrimSpace(string(b)) != repo.Head {
				t.Errorf("banger-base = %q", b)
			}
			gotBranch := strings.TrimSpace(run(t, guest, "branch", "--show-current"))
			if gotBranch != tc.branch {
				t.Errorf("guest branch = %q, want %q", gotBranch, tc.branch)
			}
			count := strings.TrimSpace(run(t, guest, "rev-list", "--count", "HEAD"))
			_, shallowErr := os.Stat(filepath.Join(guest, ".git", "shallow"))
			if tc.opts.FullHistory {
				if count != "2" || shallowErr == nil {
					t.Errorf("full history: %s commits, shallow file err %v", count, shallowErr)
				}
			} else if count != "1" || shallowErr != nil {
				t.Errorf("shallow: %s commits, shallow file err %v", count, shallowErr)
			}
			run(t, guest, "fsck", "--no-progress")

			// Work in the guest: commit some, leave some uncommitted.
			write(t, guest, "README.md", []byte("guest edit\n"), 0o644)
			write(t, guest, "committed.bin", []byte{0xff, 0, 0xfe, 0, 1}, 0o644)
			run(t, guest, "add", "-A")
			run(t, guest, "commit", "-qm", "guest commit")
			if err := os.Rename(filepath.Join(guest, "dir with space/ünïcode.txt"), filepath.Join(guest, "dir with space/rénamed.txt")); err != nil {
				t.Fatal(err)
			}
			if err := os.Remove(filepath.Join(guest, "link")); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink("bin.dat", filepath.Join(guest, "link")); err != nil {
				t.Fatal(err)
			}
			if err := os.Remove(filepath.Join(guest, "bin.dat")); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(filepath.Join(guest, "script.sh"), 0o644); err != nil {
				t.Fatal(err)
			}
			write(t, guest, "new dir/ñew file.bin", []byte{0, 0, 0, 7}, 0o755)
			write(t, guest, "empty", nil, 0o644)
			write(t, guest, ".env", []byte("GUEST_SECRET=1\n"), 0o600)

			guestBefore := snapshot(t, filepath.Join(guest, ".git"))
			patch, err := runSh(t, GuestExportScript(guest, ""), nil)
			if err != nil {
				t.Fatalf("export: %v\n%s", err, patch)
			}
			diffMaps(t, "guest .git after export", snapshot(t, filepath.Join(guest, ".git")), guestBefore)
			if bytes.Contains(patch, []byte("GUEST_SECRET")) {
				t.Error("export shipped the ignored .env")
			}
			if !bytes.Contains(patch, []byte("rename from")) || !bytes.Contains(patch, []byte("GIT binary patch")) {
				t.Errorf("patch lacks a rename or a binary hunk:\n%s", patch)
			}
			if err := CheckPatch(bytes.NewReader(patch)); err != nil {
				t.Errorf("CheckPatch refuses the export: %v", err)
			}
			wantGuest := tree(t, guest)
			delete(wantGuest, ".env")

			// The user's repository is as it was.
			diffMaps(t, "host .git at end", snapshot(t, filepath.Join(host, ".git")), before)
			if got := run(t, host, "status", "--porcelain=v1", "-z", "--untracked-files=all"); got != statusBefore {
				t.Errorf("git status changed:\n%q\n%q", got, statusBefore)
			}
			if got := run(t, host, "count-objects", "-v"); got != countBefore {
				t.Errorf("object count changed:\n%s\n%s", got, countBefore)
			}

			// Applied to the user's checkout, which still has the
			// uncommitted changes that were shipped, the patch gives the
			// guest's tree; what was not shipped (ignored files, and
			// untracked ones unless asked) stays as it was.
			wantHost := maps.Clone(wantGuest)
			hostTree := tree(t, host)
			for _, p := range []string{".env", "build/out.o", "notes/todo ü.txt", "untracked.bin", "new näme.txt"} {
				if _, shipped := want[p]; !shipped {
					wantHost[p] = hostTree[p]
				}
			}
			if err := Apply(ctx, host, bytes.NewReader(patch)); err != nil {
				t.Fatal(err)
			}
			diffMaps(t, "host checkout after apply", tree(t, host), wantHost)

			// The full diff from the shipped HEAD applies to a clean
			// checkout of it.
			full, err := runSh(t, GuestExportScript(guest, repo.Head), nil)
			if err != nil {
				t.Fatalf("export --base-commit: %v\n%s", err, full)
			}
			if err := CheckPatch(bytes.NewReader(full)); err != nil {
				t.Errorf("CheckPatch refuses the full export: %v", err)
			}
			if err := Apply(ctx, pristine, bytes.NewReader(full)); err != nil {
				t.Fatal(err)
			}
			diffMaps(t, "clean checkout after applying the full diff", tree(t, pristine), wantGuest)
		})
	}
}

// ship plans and packs repo and prepares it in a new guest directory, on
// branch (or the default), as vm workspace does over the agent channel.
func ship(t *testing.T, repo Repo, opts Options, branch string) (guest string) {
	t.Helper()
	ctx := context.Background()
	m, err := Plan(ctx, repo, opts)
	if err != nil {
		t.Fatal(err)
	}
	var stream bytes.Buffer
	if err := Pack(ctx, m, &stream); err != nil {
		t.Fatal(err)
	}
	guest = filepath.Join(t.TempDir(), "repo")
	if out, err := runSh(t, GuestPrepareScript(guest, branch), stream.Bytes()); err != nil {
		t.Fatalf("prepare: %v\n%s", err, out)
	}
	return guest
}

// TestExportOlderWorkspace: a workspace without ShippedRef (shipped by an
// older banger) is refused with a message naming --base-commit, which
// still works.
func TestExportOlderWorkspace(t *testing.T) {
	setupEnv(t)
	ctx := context.Background()
	host := makeHostRepo(t)
	repo, err := Inspect(ctx, host)
	if err != nil {
		t.Fatal(err)
	}
	guest := ship(t, repo, Options{}, "")
	run(t, guest, "update-ref", "-d", ShippedRef)
	if _, err := runSh(t, GuestExportScript(guest, ""), nil); err == nil || !strings.Contains(err.Error(), "--base-commit "+repo.Head) {
		t.Errorf("export without %s: %v", ShippedRef, err)
	}
	patch, err := runSh(t, GuestExportScript(guest, "HEAD"), nil)
	if err != nil || !bytes.Contains(patch, []byte("uncommitted")) {
		t.Errorf("export --base-commit HEAD: %v\n%s", err, patch)
	}
}

func TestPackRefusesChangedTree(t *testing.T) {
	setupEnv(t)
	ctx := context.Background()
	host := makeHostRepo(t)
	repo, err := Inspect(ctx, host)
	if err != nil {
		t.Fatal(err)
	}
	m, err := Plan(ctx, repo, Options{})
	if err != nil {
		t.Fatal(err)
	}
	write(t, host, "README.md", []byte("changed after plan\n"), 0o644)
	if err := Pack(ctx, m, &bytes.Buffer{}); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("Pack = %v, want FailedPrecondition", err)
	}
}

func TestPrepareRefusesNonEmptyDest(t *testing.T) {
	ctx := context.Background()
	m := hostManifest(t)
	var stream bytes.Buffer
	if err := Pack(ctx, m, &stream); err != nil {
		t.Fatal(err)
	}
	guest := t.TempDir()
	write(t, guest, "keep", []byte("x"), 0o644)
	if out, err := runSh(t, GuestPrepareScript(guest, "main"), stream.Bytes()); err == nil {
		t.Fatalf("prepare into non-empty dir succeeded: %s", out)
	}
	if _, err := os.Stat(filepath.Join(guest, "keep")); err != nil {
		t.Errorf("existing file removed: %v", err)
	}
	// A truncated stream is rejected and leaves nothing behind.
	dest := filepath.Join(t.TempDir(), "repo")
	if _, err := runSh(t, GuestPrepareScript(dest, "main"), stream.Bytes()[:stream.Len()/2]); err == nil {
		t.Fatal("prepare from a truncated stream succeeded")
	}
	if _, err := os.Stat(dest); !os.IsNotExist(err) {
		t.Errorf("half-made checkout left: %v", err)
	}
}

func TestShallowHost(t *testing.T) {
	setupEnv(t)
	ctx := context.Background()
	host := makeHostRepo(t)
	clone := filepath.Join(t.TempDir(), "shallow")
	run(t, "", "clone", "-q", "--depth", "1", "file://"+host, clone)
	repo, err := Inspect(ctx, clone)
	if err != nil {
		t.Fatal(err)
	}
	if !repo.Shallow {
		t.Fatal("shallow clone not detected")
	}
	if _, err := Plan(ctx, repo, Options{FullHistory: true}); !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "unshallow") {
		t.Fatalf("Plan full history of shallow repo = %v", err)
	}
	guest := ship(t, repo, Options{}, "main")
	diffMaps(t, "guest tree", tree(t, guest), tree(t, clone))
}

func TestInspectErrors(t *testing.T) {
	setupEnv(t)
	ctx := context.Background()
	base := t.TempDir()

	plain := filepath.Join(base, "plain")
	bare := filepath.Join(base, "bare.git")
	empty := filepath.Join(base, "empty")
	sub := filepath.Join(base, "sub")
	super := filepath.Join(base, "super")
	os.Mkdir(plain, 0o755)
	run(t, "", "init", "-q", "--bare", bare)
	run(t, "", "init", "-q", empty)
	run(t, "", "init", "-q", sub)
	write(t, sub, "f", []byte("x"), 0o644)
	run(t, sub, "add", "f")
	run(t, sub, "commit", "-qm", "sub")
	run(t, "", "init", "-q", super)
	write(t, super, "g", []byte("y"), 0o644)
	run(t, super, "add", "g")
	run(t, super, "commit", "-qm", "super")
	run(t, super, "submodule", "add", "-q", sub, "vendor/sub")

	for _, tc := range []struct {
		path  string
		class func(error) bool
		text  string
	}{
		{filepath.Join(base, "missing"), errdefs.IsNotFound, "does not exist"},
		{plain, errdefs.IsInvalidArgument, "not a git repository"},
		{bare, errdefs.IsInvalidArgument, "bare repository"},
		{filepath.Join(super, ".git"), errdefs.IsInvalidArgument, "inside the .git directory"},
		{empty, errdefs.IsFailedPrecondition, "no commits yet"},
		{super, errdefs.IsFailedPrecondition, "submodules are not shipped yet: vendor/sub"},
	} {
		_, err := Inspect(ctx, tc.path)
		if err == nil || !tc.class(err) || !strings.Contains(err.Error(), tc.text) {
			t.Errorf("Inspect(%s) = %v, want class with %q", filepath.Base(tc.path), err, tc.text)
		}
	}

	// An untracked directory with its own repository would be staged as a
	// gitlink: refused as a submodule with --include-untracked.
	repo := makeHostRepo(t)
	run(t, "", "init", "-q", filepath.Join(repo, "nested"))
	write(t, filepath.Join(repo, "nested"), "f", []byte("x"), 0o644)
	run(t, filepath.Join(repo, "nested"), "add", "f")
	run(t, filepath.Join(repo, "nested"), "commit", "-qm", "n")
	r, err := Inspect(ctx, repo)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Plan(ctx, r, Options{IncludeUntracked: true}); !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "submodules are not shipped yet: nested") {
		t.Errorf("Plan with nested repo = %v", err)
	}
}

func TestValidateBranch(t *testing.T) {
	ctx := context.Background()
	for name, ok := range map[string]bool{"feat/x": true, "main": true, "": false, "-x": false, "a..b": false, "x.lock": false, "a b": false} {
		if err := ValidateBranch(ctx, name); (err == nil) != ok {
			t.Errorf("ValidateBranch(%q) = %v", name, err)
		}
	}
}

func TestShQuote(t *testing.T) {
	script := "printf %s " + shQuote("it's $HOME `x` \"y\"")
	out, err := runSh(t, script, nil)
	if err != nil || string(out) != "it's $HOME `x` \"y\"" {
		t.Fatalf("got %q, %v", out, err)
	}
}

// TestGuestChanges: a workspace is clean as shipped, changed after an
// edit or a new untracked file, clean again once that state is exported
// and marked, and changed by a later edit; the checks write nothing to the
// guest's repository.
func TestGuestChanges(t *testing.T) {
	setupEnv(t)
	ctx := context.Background()
	repo, err := Inspect(ctx, makeHostRepo(t))
	if err != nil {
		t.Fatal(err)
	}
	guest := ship(t, repo, Options{}, "")
	state := func() string {
		t.Helper()
		before := snapshot(t, filepath.Join(guest, ".git"))
		out, err := runSh(t, GuestChangesScript(guest), nil)
		if err != nil {
			t.Fatalf("changes: %v", err)
		}
		diffMaps(t, "guest .git after the changes check", snapshot(t, filepath.Join(guest, ".git")), before)
		return strings.TrimSpace(string(out))
	}
	if s := state(); s != "clean" {
		t.Fatalf("as shipped: %s", s)
	}
	write(t, guest, "new-untracked.txt", []byte("guest work\n"), 0o644)
	if s := state(); s != "changed" {
		t.Fatalf("with an untracked file: %s", s)
	}
	// Export: the script reports the tree it exported on stderr.
	cmd := exec.Command("/bin/sh", "-c", GuestExportScript(guest, ""))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("export: %v %s", err, stderr.String())
	}
	line := strings.TrimSpace(stderr.String())
	tree, ok := strings.CutPrefix(line[strings.LastIndex(line, "\n")+1:], ExportedTreeMarker+" ")
	if !ok {
		t.Fatalf("export's stderr %q: no %s line", stderr.String(), ExportedTreeMarker)
	}
	mark, err := GuestMarkExportedScript(guest, tree)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := runSh(t, mark, nil); err != nil {
		t.Fatalf("mark: %v %s", err, out)
	}
	if s := state(); s != "clean" {
		t.Fatalf("after export: %s", s)
	}
	write(t, guest, "new-untracked.txt", []byte("more guest work\n"), 0o644)
	if s := state(); s != "changed" {
		t.Fatalf("edited after export: %s", s)
	}
	if _, err := GuestMarkExportedScript(guest, "$(reboot)"); err == nil {
		t.Error("a tree that is not an object id was accepted")
	}
}

func TestCapWriter(t *testing.T) {
	var b bytes.Buffer
	overs := 0
	w := &CapWriter{W: &b, Max: 5, Over: func() { overs++ }}
	for _, s := range []string{"abc", "def", "gh"} {
		if n, err := w.Write([]byte(s)); n != len(s) || err != nil {
			t.Fatalf("Write(%q) = %d, %v", s, n, err)
		}
	}
	if b.String() != "abcde" || !w.Exceeded || overs != 1 {
		t.Errorf("got %q exceeded=%v overs=%d", b.String(), w.Exceeded, overs)
	}
}
