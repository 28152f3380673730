package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func git(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", append([]string{"-C", dir}, args...)...)
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// TestWorkspaceRoundTrip ships a repository with staged, unstaged and
// untracked changes into a Debian guest, changes it there (committed and
// not: edits, new files, deletions, a rename, a mode change), exports the
// patch and applies it with plain `git apply` to the same, unchanged host
// checkout, which must then hold exactly the guest's tree. --base-commit
// gives the full diff from a commit, which applies to a clean clone;
// --output replaces a planted symlink instead of writing through it. The
// host repository's index and HEAD are untouched throughout, and .env
// never reaches the guest.
func TestWorkspaceRoundTrip(t *testing.T) {
	e := sharedDebianEnv(t)
	repo := filepath.Join(t.TempDir(), "my repo")
	os.MkdirAll(filepath.Join(repo, "dir with space"), 0o755)
	git(t, repo, "init", "-q", "-b", "main")
	os.WriteFile(filepath.Join(repo, "README"), []byte("hello\n"), 0o644)
	os.WriteFile(filepath.Join(repo, "dir with space", "ünïcode.txt"), []byte("ü\n"), 0o644)
	os.WriteFile(filepath.Join(repo, "bin.dat"), []byte{0, 1, 2, 255, 0, 7}, 0o644)
	os.WriteFile(filepath.Join(repo, "old-name"), []byte("renamed later\n"), 0o644)
	os.WriteFile(filepath.Join(repo, "gone"), []byte("deleted later\n"), 0o644)
	os.WriteFile(filepath.Join(repo, "staged.txt"), []byte("one\n"), 0o644)
	os.WriteFile(filepath.Join(repo, "host-deleted"), []byte("the host deletes me\n"), 0o644)
	os.WriteFile(filepath.Join(repo, ".gitignore"), []byte(".env\n"), 0o644)
	git(t, repo, "add", "-A")
	git(t, repo, "commit", "-qm", "init")
	// Uncommitted host changes: staged, unstaged (one file both), a staged
	// new file, a deletion, untracked files and an ignored secret.
	os.WriteFile(filepath.Join(repo, "staged.txt"), []byte("one\nstaged\n"), 0o644)
	os.WriteFile(filepath.Join(repo, "staged-new.txt"), []byte("staged new\n"), 0o644)
	git(t, repo, "add", "staged.txt", "staged-new.txt")
	os.WriteFile(filepath.Join(repo, "staged.txt"), []byte("one\nstaged\nand unstaged\n"), 0o644)
	os.WriteFile(filepath.Join(repo, "README"), []byte("hello\nlocal edit\n"), 0o644)
	os.Remove(filepath.Join(repo, "host-deleted"))
	os.WriteFile(filepath.Join(repo, "untracked.txt"), []byte("new\n"), 0o644)
	os.WriteFile(filepath.Join(repo, "untracked-gone.txt"), []byte("the guest deletes me\n"), 0o644)
	os.WriteFile(filepath.Join(repo, ".env"), []byte("SECRET=1\n"), 0o600)
	index := func() []byte { b, _ := os.ReadFile(filepath.Join(repo, ".git", "index")); return b }
	indexBefore, headBefore, statusBefore := index(), git(t, repo, "rev-parse", "HEAD"), git(t, repo, "status", "--porcelain")

	// The dry run lists exactly what is shipped.
	dry := e.ok("vm", "run", "--dry-run", "--include-untracked", repo)
	for _, want := range []string{"README", "untracked.txt", "dir with space/ünïcode.txt", "bin.dat", "staged-new.txt"} {
		if !strings.Contains(dry, want+"\n") {
			t.Errorf("dry run lacks %s:\n%s", want, dry)
		}
	}
	if strings.Contains(dry, ".env") {
		t.Errorf("dry run lists the ignored .env:\n%s", dry)
	}

	e.ok("vm", "run", "-d", "--name", "ws", "--image", "debian-bookworm", "--include-untracked", repo)
	defer e.run("vm", "delete", "-f", "ws")
	// vm exec runs in the workspace; the guest sees HEAD plus the host's
	// changes, never .env.
	if out := e.ok("vm", "exec", "ws", "--", "sh", "-c", "pwd; cat README staged.txt; test ! -e .env && echo no-env; git log --oneline | wc -l"); out != "/root/repo\nhello\nlocal edit\none\nstaged\nand unstaged\nno-env\n1\n" {
		t.Errorf("guest checkout: %q", out)
	}
	// Change things in the guest: commit some, leave some uncommitted,
	// including files the host changed without committing.
	e.ok("vm", "exec", "ws", "--", "sh", "-c", `set -e
git mv old-name new-name
git rm -q gone
printf '\000\001binary\377' > added.bin
chmod +x README
git add -A && git commit -qm "guest work"
echo uncommitted >> "dir with space/ünïcode.txt"
echo guest >> staged.txt
echo guest >> untracked.txt
rm untracked-gone.txt staged-new.txt
printf '\000\002' >> bin.dat
echo brand-new > "another file.txt"`)
	if out := e.ok("vm", "workspace", "status", "ws"); !strings.Contains(out, "another file.txt") {
		t.Errorf("workspace status: %s", out)
	}

	// --output replaces a symlink planted at the target; the file it
	// points to is not written.
	outDir := t.TempDir()
	patch, victim := filepath.Join(outDir, "changes.patch"), filepath.Join(outDir, "victim")
	os.WriteFile(victim, []byte("keep me\n"), 0o644)
	if err := os.Symlink(victim, patch); err != nil {
		t.Fatal(err)
	}
	e.ok("vm", "workspace", "export", "ws", "--output", patch)
	if st, err := os.Lstat(patch); err != nil || !st.Mode().IsRegular() {
		t.Fatalf("--output target: %v %v, want a regular file", st, err)
	}
	if b, _ := os.ReadFile(victim); string(b) != "keep me\n" {
		t.Errorf("the symlink's target was written: %q", b)
	}
	if stdout := e.ok("vm", "workspace", "export", "ws"); stdout != readFile(t, patch) {
		t.Errorf("stdout and --output differ:\n%s\n---\n%s", stdout, readFile(t, patch))
	}
	if string(index()) != string(indexBefore) || git(t, repo, "rev-parse", "HEAD") != headBefore || git(t, repo, "status", "--porcelain") != statusBefore {
		t.Error("the host repository's index, HEAD or status changed")
	}

	// Applied to the user's checkout, still holding the shipped
	// uncommitted changes, the patch reproduces the guest's tree.
	guestTree := strings.TrimSpace(e.ok("vm", "exec", "ws", "--", "sh", "-c", worktreeHash))
	git(t, repo, "apply", "--binary", patch)
	if got := worktreeTree(t, repo); got != guestTree {
		t.Errorf("after git apply on the checkout: tree %s, guest %s\nhost:\n%s\nguest:\n%s", got, guestTree,
			git(t, repo, "ls-tree", "-r", got), e.ok("vm", "exec", "ws", "--", "git", "ls-tree", "-r", guestTree))
	}
	if st, _ := os.Stat(filepath.Join(repo, "README")); st.Mode().Perm()&0o100 == 0 {
		t.Error("mode change lost")
	}
	if b, _ := os.ReadFile(filepath.Join(repo, ".env")); string(b) != "SECRET=1\n" {
		t.Errorf(".env = %q", b)
	}

	// --base-commit: the full diff from the shipped HEAD applies to a
	// clean checkout of it.
	full := e.ok("vm", "workspace", "export", "ws", "--base-commit", strings.TrimSpace(headBefore))
	copyDir := filepath.Join(t.TempDir(), "copy")
	if out, err := exec.Command("git", "clone", "-q", repo, copyDir).CombinedOutput(); err != nil {
		t.Fatalf("clone: %v %s", err, out)
	}
	fullPatch := filepath.Join(t.TempDir(), "full.patch")
	os.WriteFile(fullPatch, []byte(full), 0o644)
	git(t, copyDir, "apply", "--binary", fullPatch)
	if got := worktreeTree(t, copyDir); got != guestTree {
		t.Errorf("--base-commit patch on a clean clone: tree %s, guest %s", got, guestTree)
	}

	// A hostile guest: its git prints a patch that writes outside the
	// checkout and into .git. The export fails, prints nothing and leaves
	// the --output target as it was.
	e.ok("vm", "exec", "ws", "--", "sh", "-c", `cat > /usr/local/bin/git <<'EOS'
#!/bin/sh
for a; do
	case "$a" in diff)
		printf 'diff --git a/../escape b/../escape\nnew file mode 100644\n--- /dev/null\n+++ b/../escape\n@@ -0,0 +1 @@\n+pwned\n'
		printf 'diff --git a/.git/hooks/pre-commit b/.git/hooks/pre-commit\nnew file mode 100755\n--- /dev/null\n+++ b/.git/hooks/pre-commit\n@@ -0,0 +1 @@\n+pwned\n'
		exit 0;;
	esac
done
exec /usr/bin/git "$@"
EOS
chmod +x /usr/local/bin/git`)
	defer e.run("vm", "exec", "ws", "--", "rm", "-f", "/usr/local/bin/git")
	before := readFile(t, patch)
	r := e.run("vm", "workspace", "export", "ws", "--output", patch)
	if r.code != 1 || !strings.Contains(r.err, "../escape") || r.out != "" {
		t.Errorf("hostile patch: exit %d stdout %q stderr %q; want exit 1 naming ../escape", r.code, r.out, r.err)
	}
	if readFile(t, patch) != before {
		t.Error("a refused patch replaced the --output file")
	}
	if r := e.run("vm", "workspace", "export", "ws"); r.code != 1 || r.out != "" {
		t.Errorf("hostile patch to stdout: exit %d stdout %q", r.code, r.out)
	}
}

// worktreeHash prints the tree object of a working tree as `git add -A`
// would stage it (ignored files left out), through a throw-away index.
const worktreeHash = `set -e
GIT_INDEX_FILE=$(mktemp -d)/index
export GIT_INDEX_FILE
git add -A
git write-tree
rm -rf "$(dirname "$GIT_INDEX_FILE")"`

func worktreeTree(t *testing.T, dir string) string {
	t.Helper()
	out, err := exec.Command("sh", "-c", `cd "$0" && `+worktreeHash, dir).CombinedOutput()
	if err != nil {
		t.Fatalf("hash %s: %v\n%s", dir, err, out)
	}
	return strings.TrimSpace(string(out))
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestWorkspaceNeedsGit: shipping into an image without git fails with an
// error naming what the guest lacks, the image and the fix, and leaves no
// VM behind.
func TestWorkspaceNeedsGit(t *testing.T) {
	e := sharedVMEnv(t)
	repo := t.TempDir()
	git(t, repo, "init", "-q")
	os.WriteFile(filepath.Join(repo, "f"), []byte("x\n"), 0o644)
	git(t, repo, "add", "f")
	git(t, repo, "commit", "-qm", "one")
	before := e.vmLeftovers()
	r := e.run("vm", "run", "--rm", "--image", e.image, repo, "--", "true")
	if r.code != 125 || !strings.Contains(r.err, "image "+e.image+" lacks them") || !strings.Contains(r.err, "the guest has no git (") {
		t.Errorf("exit %d stderr %q; want an error naming git as missing and image %s", r.code, r.err, e.image)
	}
	if got := e.vmLeftovers(); got != before {
		t.Errorf("leftovers: %d, want %d", got, before)
	}
	// Not a repository at all: refused before any VM exists.
	if r := e.run("vm", "run", "--rm", "--image", e.image, t.TempDir(), "--", "true"); r.code != 125 || !strings.Contains(r.err, "not a git repository") {
		t.Errorf("plain directory: %+v", r)
	}
}

// TestVMRunTeardown: vm run deletes its VM when the command exits, unless
// --keep; a VM whose workspace holds changes not exported is kept, with
// the way to export and delete it, unless --rm was given; a workspace
// with no new changes goes like any other.
func TestVMRunTeardown(t *testing.T) {
	e := sharedDebianEnv(t)
	gone := func(name string) bool { return e.run("vm", "show", name).code != 0 }
	e.ok("vm", "run", "--name", "td-plain", "--image", "debian-bookworm", "--", "true")
	if !gone("td-plain") {
		t.Error("vm run -- true kept its VM")
	}
	e.ok("vm", "run", "--keep", "--name", "td-keep", "--image", "debian-bookworm", "--", "true")
	if gone("td-keep") {
		t.Error("vm run --keep deleted its VM")
	}
	e.ok("vm", "delete", "-f", "td-keep")

	repo := filepath.Join(t.TempDir(), "repo")
	os.MkdirAll(repo, 0o755)
	git(t, repo, "init", "-q", "-b", "main")
	os.WriteFile(filepath.Join(repo, "README"), []byte("hello\n"), 0o644)
	git(t, repo, "add", "-A")
	git(t, repo, "commit", "-qm", "init")

	r := e.run("vm", "run", "--name", "td-work", "--image", "debian-bookworm", repo, "--", "sh", "-c", "echo work > new.txt")
	if r.code != 0 || !strings.Contains(r.err, "vm td-work kept: its workspace has changes you have not exported") || !strings.Contains(r.err, "banger vm workspace export td-work") {
		t.Errorf("vm run with workspace changes: exit %d, stderr %q", r.code, r.err)
	}
	if gone("td-work") {
		t.Fatal("a VM with workspace changes not exported was deleted")
	}
	if patch := e.ok("vm", "workspace", "export", "td-work"); !strings.Contains(patch, "+work") {
		t.Errorf("export of the kept VM: %q", patch)
	}
	e.ok("vm", "delete", "-f", "td-work")

	e.ok("vm", "run", "--name", "td-clean", "--image", "debian-bookworm", repo, "--", "true")
	if !gone("td-clean") {
		t.Error("vm run of a workspace with no changes kept its VM")
	}
	e.ok("vm", "run", "--rm", "--name", "td-rm", "--image", "debian-bookworm", repo, "--", "sh", "-c", "echo work > new.txt")
	if !gone("td-rm") {
		t.Error("vm run --rm kept a VM with workspace changes")
	}
}
