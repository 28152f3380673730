package workspace

import (
	"context"
	"fmt"
	"io"
	"regexp"
	"strings"

	"github.com/bangervm/banger/errdefs"
)

// DefaultGuestPath is where `vm run PATH` puts the checkout.
const DefaultGuestPath = "/root/repo"

// Files the prepare script leaves in the guest's .git directory, read by
// the export script.
const (
	// BaseFile holds the commit the guest checkout started from: the
	// host's HEAD. `--base-commit $(cat .git/banger-base)` exports the
	// full diff from it.
	BaseFile = "banger-base"
	// ShippedRef is a guest-only commit on top of the base holding the
	// tree as shipped (with the host's uncommitted changes). Export diffs
	// against it by default, so the patch holds only the guest's own
	// changes and applies to the host's working tree, which still has the
	// uncommitted changes that were shipped.
	ShippedRef = "refs/banger/shipped"
	// BaseRef keeps the base commit reachable whatever the guest does to
	// its branches.
	BaseRef = "refs/banger/base"
	// ExportedFile holds the tree (with untracked files) of the last
	// export the host received, so that vm run can tell a workspace with
	// changes not exported from one whose changes are on the host.
	ExportedFile = "banger-exported"
)

// GuestPrepareScript returns a POSIX sh script, run in the guest as root
// with Pack's stream on standard input, that creates a git checkout at
// guestPath (which must not exist or be empty): it unpacks the stream
// into the new repository, checks out the host's HEAD on branch (a new branch at HEAD; "" leaves
// HEAD detached), applies the changes with `git apply --index`, records
// the base in .git/banger-base and sets user.name and user.email for
// guest commits unless configured. It exits non-zero with a message on
// standard error on any failure; a half-made checkout is removed.
//
// Pass the host's Repo.Branch for the default, or the --branch name. Check
// a user-given name with ValidateBranch first; the script checks it again.
func GuestPrepareScript(guestPath, branch string) string {
	return fmt.Sprintf(prepareScript, shQuote(guestPath), shQuote(branch), StreamFormat, StreamVersion)
}

// guestToolList is what the guest scripts run beside sh's builtins; each
// script checks for all of them first (toolsCheck).
const guestToolList = "git tar sed grep head cat cp mkdir mktemp rm ls"

// GuestTools are the programs a workspace needs in the guest's image.
var GuestTools = append([]string{"sh"}, strings.Fields(guestToolList)...)

// missingPrefix starts toolsCheck's line naming what the guest lacks.
const missingPrefix = "banger workspace: missing in the guest:"

// toolsCheck exits 127 (as a shell does for a command it cannot find),
// naming every program of guestToolList the guest lacks, rather than
// failing at the first one a step needs behind a message of its own.
const toolsCheck = `missing=
for p in ` + guestToolList + `; do
	command -v "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then echo "` + missingPrefix + `$missing" >&2; exit 127; fi
`

const prepareScript = `set -eu
dest=%s
branch=%s
die() { echo "banger workspace: $*" >&2; exit 1; }
` + toolsCheck + `
if [ -n "$branch" ]; then
	git check-ref-format --branch "$branch" >/dev/null 2>&1 || die "invalid branch name: $branch"
fi
if [ -e "$dest" ] && [ -n "$(ls -A "$dest" 2>/dev/null)" ]; then
	die "$dest already exists and is not empty"
fi
made=
cleanup() {
	if [ -n "$made" ]; then rm -rf "$dest"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
made=1
mkdir -p "$dest"
cd "$dest"
git -c init.defaultBranch=banger-unborn init -q .
# One pass: the pack and its index land in objects/pack, the header and
# the patch in .git/` + streamDir + `.
tar -x -f - -C .git || die "reading the workspace stream"
s=.git/` + streamDir + `
for f in header.json changes.patch; do
	[ -f "$s/$f" ] || die "workspace stream lacks $f"
done
grep -q '"format":"%s","version":%d,' "$s/header.json" || die "unsupported workspace stream: $(head -c 200 "$s/header.json")"
head=$(sed -n 's/.*"head":"\([0-9a-f]*\)".*/\1/p' "$s/header.json")
[ -n "$head" ] || die "workspace stream header has no head"
pack=$(sed -n 's/.*"pack":"\(pack-[0-9a-f]*\)".*/\1/p' "$s/header.json")
[ -n "$pack" ] && [ -f ".git/` + packDir + `/$pack.pack" ] && [ -f ".git/` + packDir + `/$pack.idx" ] || die "workspace stream lacks its pack"
if grep -q '"shallow":true' "$s/header.json"; then
	echo "$head" > .git/shallow
fi
[ "$(git cat-file -t "$head" 2>/dev/null)" = commit ] || die "the workspace stream's pack lacks HEAD ($head)"
git update-ref ` + BaseRef + ` "$head"
if [ -n "$branch" ]; then
	git checkout -q -b "$branch" "$head"
else
	git checkout -q --detach "$head"
fi
git config user.name >/dev/null 2>&1 || git config user.name "banger guest"
git config user.email >/dev/null 2>&1 || git config user.email "root@$(hostname 2>/dev/null || echo localhost)"
if [ -s "$s/changes.patch" ]; then
	git apply --index --binary --whitespace=nowarn "$s/changes.patch" || die "applying the host's uncommitted changes"
fi
rm -rf "$s"
echo "$head" > .git/` + BaseFile + `
shipped=$(git commit-tree -p "$head" -m "banger: host working tree as shipped" "$(git write-tree)")
git update-ref ` + ShippedRef + ` "$shipped"
made=
`

// GuestExportScript returns a POSIX sh script, run in the guest, that
// prints to standard output a binary-safe patch (adds, deletes, renames,
// mode changes, binary files, any file name) from baseCommit to the
// working tree at guestPath: committed and uncommitted changes, untracked
// files that are not ignored included. An empty baseCommit means the tree
// as shipped (ShippedRef), HEAD with the host's uncommitted changes: the
// patch then applies to the host's unchanged checkout. The patch is empty
// when nothing changed. It comes from the guest: check it with CheckPatch.
//
// The guest's index and object store are not written either: the script
// stages into a temporary index whose blobs go to a temporary object
// directory, as Pack does on the host.
func GuestExportScript(guestPath, baseCommit string) string {
	return fmt.Sprintf(exportScript, shQuote(guestPath), shQuote(baseCommit), strings.Join(diffArgs, " "))
}

// enterScript goes to the top of the checkout at $dest, or fails saying
// why.
const enterScript = `die() { echo "banger workspace: $*" >&2; exit 1; }
` + toolsCheck + `cd "$dest" 2>/dev/null || die "$dest does not exist"
git rev-parse --is-inside-work-tree >/dev/null 2>&1 || die "$dest is not a git checkout"
top=$(git rev-parse --show-toplevel)
cd "$top"
`

// stageScript stages the whole working tree (untracked files that are not
// ignored included) into a temporary index whose blobs go to a temporary
// object directory, sets $tree to its tree, and then adds the
// repository's objects as an alternate: the guest's index and object
// store are not written (or touched).
const stageScript = `objects=$(cd "$(git rev-parse --git-path objects)" && pwd)
index=$(git rev-parse --git-path index)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM
mkdir "$tmp/objects"
if [ -f "$index" ]; then cp -p "$index" "$tmp/index"; fi
GIT_INDEX_FILE=$tmp/index GIT_OBJECT_DIRECTORY=$tmp/objects GIT_OPTIONAL_LOCKS=0
export GIT_INDEX_FILE GIT_OBJECT_DIRECTORY GIT_OPTIONAL_LOCKS
# Without the alternate while adding, so that blobs that exist already are
# written to $tmp rather than "freshened" (touched) in the repository.
git -c core.splitIndex=false -c core.fsmonitor=false add --all -- :/
# Its tree, likewise before the alternate (so that trees the repository
# has are not freshened); blobs of files the index had already are in the
# repository, not $tmp, hence --missing-ok.
tree=$(git write-tree --missing-ok)
GIT_ALTERNATE_OBJECT_DIRECTORIES=$objects
export GIT_ALTERNATE_OBJECT_DIRECTORIES
`

const exportScript = `set -eu
dest=%s
base=%s
` + enterScript + `if [ -z "$base" ]; then
	base=` + ShippedRef + `
	git rev-parse -q --verify "$base^{commit}" >/dev/null ||
		die "$top has no ` + ShippedRef + ` (shipped by an older banger); pass --base-commit $(cat .git/` + BaseFile + ` 2>/dev/null || echo COMMIT) for the full diff from the shipped HEAD"
fi
commit=$(git rev-parse -q --verify "$base^{commit}") || die "base commit $base is not in the guest repository"
base=$commit
` + stageScript + `git %s --cached -M "$base" --
echo "` + ExportedTreeMarker + ` $tree" >&2
`

// ExportedTreeMarker starts the export script's last line on standard
// error: the tree it exported, for GuestMarkExportedScript once the host
// has the patch.
const ExportedTreeMarker = "banger-exported-tree"

// GuestChangesScript returns a POSIX sh script, run in the guest, that
// prints "clean" when the working tree at guestPath (untracked files that
// are not ignored included) is as shipped or as last exported
// (ExportedFile), else "changed". It writes nothing to the repository.
func GuestChangesScript(guestPath string) string {
	return fmt.Sprintf(changesScript, shQuote(guestPath))
}

const changesScript = `set -eu
dest=%s
` + enterScript + stageScript + `now=$tree
shipped=$(git rev-parse -q --verify "` + ShippedRef + `^{tree}" || true)
exported=$(cat "$(git rev-parse --git-path ` + ExportedFile + `)" 2>/dev/null || true)
if [ "$now" = "$shipped" ] || [ "$now" = "$exported" ]; then echo clean; else echo changed; fi
`

// GuestMarkExportedScript returns a POSIX sh script, run in the guest,
// that records tree (as the export script reported it, checked here to
// be an object id) as the last export's, in ExportedFile.
func GuestMarkExportedScript(guestPath, tree string) (string, error) {
	if !objectIDRE.MatchString(tree) {
		return "", fmt.Errorf("exported tree %q: not an object id", tree)
	}
	return fmt.Sprintf(markScript, shQuote(guestPath), tree), nil
}

var objectIDRE = regexp.MustCompile(`^([0-9a-f]{40}|[0-9a-f]{64})$`)

const markScript = `set -eu
dest=%s
` + enterScript + `echo %s > "$(git rev-parse --git-path ` + ExportedFile + `)"
`

// ValidateBranch checks that name is a valid new branch name, as --branch
// takes it, with InvalidArgument otherwise.
func ValidateBranch(ctx context.Context, name string) error {
	if name == "" || strings.HasPrefix(name, "-") {
		return fmt.Errorf("branch %q: not a valid branch name: %w", name, errdefs.ErrInvalidArgument)
	}
	if _, err := git(ctx, "", nil, "check-ref-format", "--branch", name); err != nil {
		return fmt.Errorf("branch %q: not a valid branch name: %w", name, errdefs.ErrInvalidArgument)
	}
	return nil
}

// Apply applies an exported patch to the working tree at dir (the
// repository's top level) with `git apply`, without touching its index.
// An empty patch is no change.
func Apply(ctx context.Context, dir string, patch io.Reader) error {
	if _, err := git2(ctx, dir, nil, nil, patch, "apply", "--allow-empty", "--whitespace=nowarn", "-"); err != nil {
		return fmt.Errorf("apply workspace patch in %s: %w", dir, err)
	}
	return nil
}

// shQuote quotes s as one sh word.
func shQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
