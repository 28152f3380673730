package workspace

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/bangervm/banger/errdefs"
)

// Options says what to ship.
type Options struct {
	// IncludeUntracked ships untracked files that git does not ignore.
	// Ignored files are never shipped.
	IncludeUntracked bool
	// FullHistory ships all of HEAD's history instead of HEAD alone. It is
	// refused for a shallow host repository, which does not have it.
	FullHistory bool
}

// Change is how a shipped path differs from HEAD.
type Change string

// The changes Plan reports.
const (
	Unchanged Change = ""
	Modified  Change = "M" // content changed
	Added     Change = "A" // not in HEAD (untracked, or staged new)
	Deleted   Change = "D" // in HEAD, gone from the working tree
	TypeChg   Change = "T" // e.g. file became a symlink
)

// File is one path of the tree the guest will check out.
type File struct {
	Path   string // slash-separated, relative to Repo.Root, unquoted
	Mode   uint32 // git mode: 0o100644, 0o100755, 0o120000 (symlink)
	Blob   string // object id of the shipped content
	Change Change // relative to HEAD
}

// Manifest is what Plan found: the exact tree Pack ships.
type Manifest struct {
	Repo    Repo
	Options Options
	// Files is every file of the guest's working tree after the prepare
	// script ran, sorted by path. This is the --dry-run list.
	Files []File
	// Deleted lists paths of HEAD that the host deleted; the guest deletes
	// them too.
	Deleted []string
}

// Changed returns the files that differ from HEAD.
func (m Manifest) Changed() []File {
	var out []File
	for _, f := range m.Files {
		if f.Change != Unchanged {
			out = append(out, f)
		}
	}
	return out
}

// Plan stages the working tree in a temporary index and returns the tree
// that Pack would ship. The user's index and object store are not written.
func Plan(ctx context.Context, repo Repo, opts Options) (Manifest, error) {
	if opts.FullHistory && repo.Shallow {
		return Manifest{}, fmt.Errorf("workspace %s: --full-history: the repository is a shallow clone; run `git fetch --unshallow` first or drop --full-history: %w",
			repo.Root, errdefs.ErrFailedPrecondition)
	}
	tmp, err := os.MkdirTemp("", "banger-workspace-*")
	if err != nil {
		return Manifest{}, fmt.Errorf("workspace %s: %w", repo.Root, err)
	}
	defer os.RemoveAll(tmp)
	m, _, err := stage(ctx, repo, opts, tmp)
	return m, err
}

// stage builds the shipped tree in a temporary index under tmp and returns
// it with the environment that selects that index and object store.
//
// The index starts as a copy of the user's, with its modification time, so
// that git's stat cache (and its racy-entry check, which compares entry
// times with the index file's) stays valid and only changed files are
// hashed again. `git add` then brings it to the working tree; the blobs it
// writes go to tmp/objects, with the repository's objects as an alternate.
func stage(ctx context.Context, repo Repo, opts Options, tmp string) (Manifest, []string, error) {
	objDir := filepath.Join(tmp, "objects")
	if err := os.Mkdir(objDir, 0o700); err != nil {
		return Manifest{}, nil, fmt.Errorf("workspace %s: %w", repo.Root, err)
	}
	index := filepath.Join(tmp, "index")
	env := []string{ // the first two, without the alternate, for writing
		"GIT_INDEX_FILE=" + index,
		"GIT_OBJECT_DIRECTORY=" + objDir,
		"GIT_ALTERNATE_OBJECT_DIRECTORIES=" + repo.ObjectDir,
	}
	// Settings that would otherwise make git write outside the temporary
	// index (shared index files, an fsmonitor daemon's state).
	cfg := []string{"-c", "core.splitIndex=false", "-c", "core.fsmonitor=false"}

	copied, err := copyIndex(repo.IndexFile, index)
	if err != nil {
		return Manifest{}, nil, fmt.Errorf("workspace %s: copy index: %w", repo.Root, err)
	}
	if !copied {
		if _, err := git(ctx, repo.Root, env, "read-tree", repo.Head); err != nil {
			return Manifest{}, nil, fmt.Errorf("workspace %s: %w", repo.Root, err)
		}
	}
	add := "--update" // tracked files only
	if opts.IncludeUntracked {
		add = "--all"
	}
	// git add runs without the alternate: a blob it hashes that already
	// exists there would be "freshened" (its file's mtime bumped, a write
	// to the user's object store); without it, every blob goes to tmp.
	if _, err := git(ctx, repo.Root, env[:2], append(cfg, "add", add, "--", ":/")...); err != nil {
		return Manifest{}, nil, fmt.Errorf("workspace %s: stage working tree: %w", repo.Root, err)
	}

	out, err := git(ctx, repo.Root, env, "ls-files", "--stage", "-z")
	if err != nil {
		return Manifest{}, nil, fmt.Errorf("workspace %s: %w", repo.Root, err)
	}
	files, err := parseStage(out)
	if err != nil {
		return Manifest{}, nil, fmt.Errorf("workspace %s: %w", repo.Root, err)
	}
	// An untracked directory holding its own repository is staged as a
	// gitlink; it cannot be shipped any more than a submodule.
	if err := refuseGitlinks(repo.Root, files); err != nil {
		return Manifest{}, nil, err
	}
	out, err = git(ctx, repo.Root, env, "diff", "--cached", "--name-status", "--no-renames", "-z", repo.Head, "--")
	if err != nil {
		return Manifest{}, nil, fmt.Errorf("workspace %s: %w", repo.Root, err)
	}
	changes, err := parseNameStatus(out)
	if err != nil {
		return Manifest{}, nil, fmt.Errorf("workspace %s: %w", repo.Root, err)
	}
	m := Manifest{Repo: repo, Options: opts, Files: files}
	for i := range m.Files {
		m.Files[i].Change = changes[m.Files[i].Path]
	}
	for p, c := range changes {
		if c == Deleted {
			m.Deleted = append(m.Deleted, p)
		}
	}
	slices.Sort(m.Deleted)
	return m, env, nil
}

// copyIndex copies the index at src to dst with src's modification time.
// It reports false when there is no index (a repository whose index was
// never written).
func copyIndex(src, dst string) (bool, error) {
	in, err := os.Open(src)
	if os.IsNotExist(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return false, err
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return false, err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return false, err
	}
	if err := out.Close(); err != nil {
		return false, err
	}
	return true, os.Chtimes(dst, st.ModTime(), st.ModTime())
}

// parseStage parses `git ls-files --stage -z`: "MODE OID STAGE\tPATH\0".
func parseStage(out []byte) ([]File, error) {
	var files []File
	for rec := range bytes.SplitSeq(out, []byte{0}) {
		if len(rec) == 0 {
			continue
		}
		meta, path, ok := bytes.Cut(rec, []byte{'\t'})
		f := strings.Fields(string(meta))
		if !ok || len(f) != 3 {
			return nil, fmt.Errorf("unexpected ls-files record %q", rec)
		}
		mode, err := strconv.ParseUint(f[0], 8, 32)
		if err != nil {
			return nil, fmt.Errorf("unexpected ls-files mode %q", f[0])
		}
		if f[2] != "0" && len(files) > 0 && files[len(files)-1].Path == string(path) {
			continue // another stage of an unmerged path
		}
		files = append(files, File{Path: string(path), Mode: uint32(mode), Blob: f[1]})
	}
	slices.SortFunc(files, func(a, b File) int { return strings.Compare(a.Path, b.Path) })
	return files, nil
}

// parseNameStatus parses `git diff --name-status --no-renames -z`:
// "STATUS\0PATH\0" pairs.
func parseNameStatus(out []byte) (map[string]Change, error) {
	parts := bytes.Split(bytes.TrimSuffix(out, []byte{0}), []byte{0})
	changes := map[string]Change{}
	if len(out) == 0 {
		return changes, nil
	}
	if len(parts)%2 != 0 {
		return nil, fmt.Errorf("unexpected diff --name-status output %q", out)
	}
	for i := 0; i < len(parts); i += 2 {
		changes[string(parts[i+1])] = Change(parts[i])
	}
	return changes, nil
}
