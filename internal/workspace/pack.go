package workspace

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/hostcmd"
)

// The stream Pack writes and GuestPrepareScript reads is a tar archive
// (the guest image has tar; a shell has no easy way to read length-prefixed
// binary parts) laid out so that one `tar x` in the guest's new .git
// directory puts every part where it is used, with nothing written twice:
//
//	banger-stream/header.json     Header, one JSON object
//	banger-stream/changes.patch   `git diff --binary` from HEAD to the shipped tree
//	objects/pack/pack-<hash>.idx  the pack's index, made on the host
//	objects/pack/pack-<hash>.pack HEAD's objects
//
// Version 1 shipped a bundle that the guest saved, fetched (index-pack
// inflated and hashed every object and wrote the pack again) and checked
// out: three passes over the repository's bytes on a guest CPU that may
// be emulated. The host makes the pack and its index natively
// (pack-objects writes both), so the guest only writes them once and
// trusts the index, as it trusts the host that sends it. Integrity: tar
// fails on a truncated stream, the pack and index carry checksums, and
// checkout inflates (and so checks) every blob of HEAD.
//
// Shallow: the pack holds `git rev-list --objects --no-walk HEAD`, the
// commit with its whole tree and no parents, and the guest writes HEAD to
// .git/shallow, exactly as a --depth 1 clone would. With FullHistory the
// object list is all of HEAD's history and no shallow file is written.
const (
	StreamFormat  = "banger-workspace"
	StreamVersion = 2

	streamDir  = "banger-stream"
	packDir    = "objects/pack"
	headerName = streamDir + "/header.json"
	patchName  = streamDir + "/changes.patch"
)

// Header is the first member of the stream.
type Header struct {
	Format    string `json:"format"`  // StreamFormat
	Version   int    `json:"version"` // StreamVersion
	Head      string `json:"head"`    // the host's HEAD commit
	Branch    string `json:"branch"`  // the host's branch, "" when detached
	Shallow   bool   `json:"shallow"` // the pack holds HEAD without its parents
	Files     int    `json:"files"`   // files in the guest's tree
	Pack      string `json:"pack"`    // the pack's name, pack-<hash>
	PackSize  int64  `json:"packSize"`
	PatchSize int64  `json:"patchSize"`
}

// Pack writes the stream for m to w: the history the guest's checkout
// needs, and the working-tree changes. It stages the working tree again
// and fails with FailedPrecondition if the result is not exactly m.Files,
// so what --dry-run listed is what was shipped. Nothing is written to w
// before both parts are complete (they are built in a temporary directory
// first); a failure part-way through writing w leaves a truncated tar
// stream that the guest script rejects.
func Pack(ctx context.Context, m Manifest, w io.Writer) error {
	repo := m.Repo
	tmp, err := os.MkdirTemp("", "banger-workspace-*")
	if err != nil {
		return fmt.Errorf("pack workspace %s: %w", repo.Root, err)
	}
	defer os.RemoveAll(tmp)

	now, env, err := stage(ctx, repo, m.Options, tmp)
	if err != nil {
		return fmt.Errorf("pack workspace: %w", err)
	}
	if !slices.Equal(now.Files, m.Files) {
		return fmt.Errorf("pack workspace %s: the working tree changed since it was listed; run again: %w", repo.Root, errdefs.ErrFailedPrecondition)
	}

	patchPath := filepath.Join(tmp, "changes.patch")
	if err := toFile(patchPath, func(f io.Writer) error {
		_, err := git2(ctx, repo.Root, env, f, nil, append(diffArgs, "--cached", "--no-renames", repo.Head, "--")...)
		return err
	}); err != nil {
		return fmt.Errorf("pack workspace %s: diff: %w", repo.Root, err)
	}
	packBase := filepath.Join(tmp, "pack")
	pack, err := writePack(ctx, repo, !m.Options.FullHistory, packBase)
	if err != nil {
		return fmt.Errorf("pack workspace %s: pack: %w", repo.Root, err)
	}
	packPath, idxPath := packBase+"-"+pack+".pack", packBase+"-"+pack+".idx"

	h := Header{Format: StreamFormat, Version: StreamVersion, Head: repo.Head, Branch: repo.Branch,
		Shallow: !m.Options.FullHistory, Files: len(m.Files), Pack: "pack-" + pack}
	if h.PackSize, err = size(packPath); err != nil {
		return fmt.Errorf("pack workspace %s: %w", repo.Root, err)
	}
	if h.PatchSize, err = size(patchPath); err != nil {
		return fmt.Errorf("pack workspace %s: %w", repo.Root, err)
	}
	hdr, err := json.Marshal(h)
	if err != nil {
		return fmt.Errorf("pack workspace %s: %w", repo.Root, err)
	}
	hdr = append(hdr, '\n')

	tw := tar.NewWriter(w)
	if err := tarBytes(tw, headerName, hdr); err != nil {
		return fmt.Errorf("pack workspace %s: %w", repo.Root, err)
	}
	for _, m := range []struct{ name, path string }{
		{patchName, patchPath},
		// The index first: the guest then fails on a truncated pack
		// with tar's error rather than a pack without an index.
		{packDir + "/" + h.Pack + ".idx", idxPath},
		{packDir + "/" + h.Pack + ".pack", packPath},
	} {
		if err := tarFile(tw, m.name, m.path); err != nil {
			return fmt.Errorf("pack workspace %s: %w", repo.Root, err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("pack workspace %s: %w", repo.Root, err)
	}
	return nil
}

// diffArgs make a patch that `git apply` takes whatever the user's diff
// settings (noprefix, external drivers, textconv, colour) are.
var diffArgs = []string{"diff", "--binary", "--full-index", "--no-color", "--no-ext-diff", "--no-textconv",
	"--src-prefix=a/", "--dst-prefix=b/"}

// writePack writes HEAD's objects (only the commit and its tree when
// shallow) as base-<hash>.pack and base-<hash>.idx and returns the hash.
func writePack(ctx context.Context, repo Repo, shallow bool, base string) (string, error) {
	revList := []string{"rev-list", "--objects"}
	if shallow {
		revList = append(revList, "--no-walk")
	}
	revList = append(revList, repo.Head, "--")

	pr, pw := io.Pipe()
	var out bytes.Buffer
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		_, err := git2(gctx, repo.Root, nil, pw, nil, revList...)
		pw.CloseWithError(err)
		return err
	})
	g.Go(func() error {
		_, err := git2(gctx, repo.Root, nil, &out, pr, "pack-objects", "-q", base)
		pr.CloseWithError(io.ErrClosedPipe) // unblock rev-list if pack-objects stopped early
		return err
	})
	if err := g.Wait(); err != nil {
		return "", err
	}
	hash := strings.TrimSpace(out.String())
	if !packHashRe.MatchString(hash) {
		return "", fmt.Errorf("pack-objects printed %q, not a pack hash", hash)
	}
	return hash, nil
}

var packHashRe = regexp.MustCompile(`^[0-9a-f]{40}([0-9a-f]{24})?$`)

// git2 is git with standard input and output streams.
func git2(ctx context.Context, dir string, env []string, stdout io.Writer, stdin io.Reader, args ...string) ([]byte, error) {
	return hostcmd.Git(ctx, hostcmd.GitCmd{Dir: dir, Args: args, Env: append(append([]string(nil), readEnv...), env...),
		Stdout: stdout, Stdin: stdin})
}

func toFile(path string, fill func(io.Writer) error) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if err := fill(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func size(path string) (int64, error) {
	st, err := os.Stat(path)
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}

// epoch is every member's mtime, so the same input gives the same stream.
var epoch = time.Unix(0, 0)

func tarBytes(tw *tar.Writer, name string, b []byte) error {
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(b)), ModTime: epoch, Typeflag: tar.TypeReg}); err != nil {
		return err
	}
	_, err := tw.Write(b)
	return err
}

func tarFile(tw *tar.Writer, name, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: st.Size(), ModTime: epoch, Typeflag: tar.TypeReg}); err != nil {
		return err
	}
	_, err = io.Copy(tw, f)
	return err
}
