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

// TestWorkspaceRoundTrip ships a repository into a Debian guest, changes
// it there (committed and not), exports the patch, applies it to a copy
// of the unchanged host repository and compares trees; the host
// repository's index and HEAD are untouched throughout, and .env never
// reaches the guest.
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
	os.WriteFile(filepath.Join(repo, ".gitignore"), []byte(".env\n"), 0o644)
	git(t, repo, "add", "-A")
	git(t, repo, "commit", "-qm", "init")
	// Uncommitted host changes, an untracked file and an ignored secret.
	os.WriteFile(filepath.Join(repo, "README"), []byte("hello\nlocal edit\n"), 0o644)
	os.WriteFile(filepath.Join(repo, "untracked.txt"), []byte("new\n"), 0o644)
	os.WriteFile(filepath.Join(repo, ".env"), []byte("SECRET=1\n"), 0o600)
	index := func() []byte { b, _ := os.ReadFile(filepath.Join(repo, ".git", "index")); return b }
	indexBefore, headBefore, statusBefore := index(), git(t, repo, "rev-parse", "HEAD"), git(t, repo, "status", "--porcelain")

	// The dry run lists exactly what is shipped.
	dry := e.ok("vm", "run", "--dry-run", "--include-untracked", repo)
	for _, want := range []string{"README", "untracked.txt", "dir with space/ünïcode.txt", "bin.dat"} {
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
	if out := e.ok("vm", "exec", "ws", "--", "sh", "-c", "pwd; cat README; test ! -e .env && echo no-env; git log --oneline | wc -l"); out != "/root/repo\nhello\nlocal edit\nno-env\n1\n" {
		t.Errorf("guest checkout: %q", out)
	}
	// Change things in the guest: commit some, leave some uncommitted.
	e.ok("vm", "exec", "ws", "--", "sh", "-c", `set -e
git mv old-name new-name
git rm -q gone
printf '\000\001binary\377' > added.bin
chmod +x README
git add -A && git commit -qm "guest work"
echo uncommitted >> "dir with space/ünïcode.txt"
echo brand-new > "another file.txt"`)
	if out := e.ok("vm", "workspace", "status", "ws"); !strings.Contains(out, "another file.txt") {
		t.Errorf("workspace status: %s", out)
	}
	patch := filepath.Join(t.TempDir(), "changes.patch")
	e.ok("vm", "workspace", "export", "ws", "--output", patch)

	// Expected: the guest's tree. Host copy at the same HEAD, unchanged
	// tree, plus the patch.
	guestTree := e.ok("vm", "exec", "ws", "--", "sh", "-c", `find . -path ./.git -prune -o -type f -print0 | sort -z | xargs -0 sha256sum`)
	copyDir := filepath.Join(t.TempDir(), "copy")
	if out, err := exec.Command("git", "clone", "-q", repo, copyDir).CombinedOutput(); err != nil {
		t.Fatalf("clone: %v %s", err, out)
	}
	git(t, copyDir, "apply", "--binary", patch)
	hostTree, _ := exec.Command("sh", "-c", `cd "$0" && find . -path ./.git -prune -o -type f -print0 | sort -z | xargs -0 sha256sum`, copyDir).Output()
	if string(hostTree) != guestTree {
		t.Errorf("trees differ after git apply:\nguest:\n%s\nhost:\n%s", guestTree, hostTree)
	}
	if st, _ := os.Stat(filepath.Join(copyDir, "README")); st.Mode().Perm()&0o100 == 0 {
		t.Error("mode change lost")
	}
	if string(index()) != string(indexBefore) || git(t, repo, "rev-parse", "HEAD") != headBefore || git(t, repo, "status", "--porcelain") != statusBefore {
		t.Error("the host repository's index, HEAD or status changed")
	}
}

// TestWorkspaceNeedsGit: shipping into an image without git fails with an
// error naming the image and the fix, and leaves no VM behind.
func TestWorkspaceNeedsGit(t *testing.T) {
	e := sharedVMEnv(t)
	repo := t.TempDir()
	git(t, repo, "init", "-q")
	os.WriteFile(filepath.Join(repo, "f"), []byte("x\n"), 0o644)
	git(t, repo, "add", "f")
	git(t, repo, "commit", "-qm", "one")
	before := e.vmLeftovers()
	r := e.run("vm", "run", "--rm", "--image", e.image, repo, "--", "true")
	if r.code != 125 || !strings.Contains(r.err, "image "+e.image) || !strings.Contains(r.err, "git") {
		t.Errorf("exit %d stderr %q; want an error naming image %s and git", r.code, r.err, e.image)
	}
	if got := e.vmLeftovers(); got != before {
		t.Errorf("leftovers: %d, want %d", got, before)
	}
	// Not a repository at all: refused before any VM exists.
	if r := e.run("vm", "run", "--rm", "--image", e.image, t.TempDir(), "--", "true"); r.code != 125 || !strings.Contains(r.err, "not a git repository") {
		t.Errorf("plain directory: %+v", r)
	}
}
