// Package workspace ships a host git repository into a guest as a checkout
// at the same HEAD with the host's uncommitted changes applied, and brings
// the guest's changes back as a binary-safe patch.
//
// The host side is a library: Inspect finds the repository, Plan lists what
// would be shipped (for --dry-run), Pack writes the stream. The guest side
// is a POSIX sh script (GuestPrepareScript, GuestExportScript) that the
// caller runs as root through the agent's exec, with the stream on its
// standard input or the patch on its standard output.
//
// The user's repository is only ever read: staging happens in a temporary
// index file (GIT_INDEX_FILE) whose new blobs go to a temporary object
// directory (GIT_OBJECT_DIRECTORY, with the repository's objects as an
// alternate), so neither .git/index nor the object store is written. An
// earlier tool wrote the user's index during export; this package must not.
//
// Files git ignores are never shipped; untracked files that are not ignored
// only with Options.IncludeUntracked. (An ignored file that is nevertheless
// tracked is part of HEAD and is shipped like every tracked file.)
package workspace

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/hostcmd"
)

// Repo is a host repository found by Inspect.
type Repo struct {
	Root      string // absolute top-level directory of the working tree
	GitDir    string // absolute .git directory (per worktree)
	ObjectDir string // absolute object directory (shared between worktrees)
	IndexFile string // absolute path of the user's index; read, never written
	Head      string // full commit id of HEAD
	Branch    string // current branch without refs/heads/, "" when detached
	Shallow   bool   // the host repository itself is a shallow clone
}

// readEnv is set on every git run against the user's repository: git may
// otherwise take optional locks and refresh the index of a read-only
// command such as status.
var readEnv = []string{"GIT_OPTIONAL_LOCKS=0"}

func git(ctx context.Context, dir string, env []string, args ...string) ([]byte, error) {
	return hostcmd.Git(ctx, hostcmd.GitCmd{Dir: dir, Args: args, Env: append(append([]string(nil), readEnv...), env...)})
}

// Inspect finds the git repository that contains path and checks that it
// can be shipped. Errors carry an errdefs class and say what to do:
// a missing path is NotFound; a path outside any repository and a bare
// repository are InvalidArgument; a repository without commits or with
// submodules is FailedPrecondition.
func Inspect(ctx context.Context, path string) (Repo, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return Repo{}, fmt.Errorf("workspace %s: %w", path, err)
	}
	st, err := os.Stat(abs)
	if errors.Is(err, os.ErrNotExist) {
		return Repo{}, fmt.Errorf("workspace %s: path does not exist: %w", path, errdefs.ErrNotFound)
	}
	if err != nil {
		return Repo{}, fmt.Errorf("workspace %s: %w", path, err)
	}
	if !st.IsDir() {
		return Repo{}, fmt.Errorf("workspace %s: not a directory; pass the repository's directory: %w", path, errdefs.ErrInvalidArgument)
	}
	out, err := git(ctx, abs, nil, "rev-parse", "--is-bare-repository", "--is-inside-work-tree")
	if err != nil {
		if strings.Contains(err.Error(), "not a git repository") {
			return Repo{}, fmt.Errorf("workspace %s: not a git repository; run `git init` and commit, or pass the repository's directory: %w", path, errdefs.ErrInvalidArgument)
		}
		return Repo{}, fmt.Errorf("workspace %s: %w", path, err)
	}
	f := strings.Fields(string(out))
	if len(f) != 2 {
		return Repo{}, fmt.Errorf("workspace %s: unexpected git rev-parse output %q", path, out)
	}
	if f[0] == "true" {
		return Repo{}, fmt.Errorf("workspace %s: bare repository has no working tree; pass a checkout (git clone %s) instead: %w", path, path, errdefs.ErrInvalidArgument)
	}
	if f[1] != "true" {
		return Repo{}, fmt.Errorf("workspace %s: inside the .git directory, not the working tree; pass the working tree: %w", path, errdefs.ErrInvalidArgument)
	}
	out, err = git(ctx, abs, nil, "rev-parse", "--show-toplevel", "--absolute-git-dir", "--is-shallow-repository",
		"--git-path", "objects", "--git-path", "index")
	if err != nil {
		return Repo{}, fmt.Errorf("workspace %s: %w", path, err)
	}
	lines := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
	if len(lines) != 5 {
		return Repo{}, fmt.Errorf("workspace %s: unexpected git rev-parse output %q", path, out)
	}
	r := Repo{Root: lines[0], GitDir: lines[1], Shallow: lines[2] == "true"}
	// --git-path is relative to the directory git ran in.
	r.ObjectDir, r.IndexFile = absIn(abs, lines[3]), absIn(abs, lines[4])

	out, err = git(ctx, r.Root, nil, "rev-parse", "-q", "--verify", "HEAD^{commit}")
	if err != nil || len(bytes.TrimSpace(out)) == 0 {
		return Repo{}, fmt.Errorf("workspace %s: repository has no commits yet; commit first (git add -A && git commit): %w", r.Root, errdefs.ErrFailedPrecondition)
	}
	r.Head = string(bytes.TrimSpace(out))
	// Exits 1 when HEAD is detached.
	if out, err := git(ctx, r.Root, nil, "symbolic-ref", "-q", "--short", "HEAD"); err == nil {
		r.Branch = string(bytes.TrimSpace(out))
	}

	out, err = git(ctx, r.Root, nil, "ls-files", "--stage", "-z")
	if err != nil {
		return Repo{}, fmt.Errorf("workspace %s: list index: %w", r.Root, err)
	}
	entries, err := parseStage(out)
	if err != nil {
		return Repo{}, fmt.Errorf("workspace %s: %w", r.Root, err)
	}
	if err := refuseGitlinks(r.Root, entries); err != nil {
		return Repo{}, err
	}
	return r, nil
}

func absIn(dir, p string) string {
	if filepath.IsAbs(p) {
		return filepath.Clean(p)
	}
	return filepath.Join(dir, p)
}

// modeGitlink is the mode git gives a submodule (or an embedded repository)
// in a tree or index.
const modeGitlink = 0o160000

func refuseGitlinks(root string, files []File) error {
	var subs []string
	for _, f := range files {
		if f.Mode == modeGitlink {
			subs = append(subs, f.Path)
		}
	}
	if len(subs) == 0 {
		return nil
	}
	if len(subs) > 5 {
		subs = append(subs[:5], "…")
	}
	return fmt.Errorf("workspace %s: submodules are not shipped yet: %s; ship a checkout without them, or copy them in with `banger vm cp`: %w",
		root, strings.Join(subs, ", "), errdefs.ErrFailedPrecondition)
}
