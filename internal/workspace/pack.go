package workspace

import (
	"archive/tar"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/hostcmd"
)

// The stream Pack writes and GuestPrepareScript reads is a tar archive
// (the guest image has tar; a shell has no easy way to read length-prefixed
// binary parts) holding, in this order:
//
//	header.json     Header, one JSON object
//	repo.bundle     a v2 git bundle whose one ref, HEAD, is the host's HEAD
//	changes.patch   `git diff --binary` from HEAD to the shipped tree
//
// Shallow bundles: `git bundle create` cannot cut history at a depth (a
// bundle made with --max-count lists the parents as prerequisites and
// leaves out every object they reach, so it cannot be cloned), and a bundle
// made in a temporary shallow clone fails fetch's connectivity check. Pack
// therefore writes the bundle itself: the v2 header naming HEAD, then
// `git rev-list --objects --no-walk HEAD | git pack-objects --stdout`, the
// commit with its whole tree and no parents. The guest writes HEAD to
// .git/shallow before fetching, exactly as a --depth 1 clone would, and
// the connectivity check passes. With FullHistory the object list is all
// of HEAD's history and no shallow file is written.
const (
	StreamFormat  = "banger-workspace"
	StreamVersion = 1

	headerName = "header.json"
	bundleName = "repo.bundle"
	patchName  = "changes.patch"
)

// Header is the first member of the stream.
type Header struct {
	Format     string `json:"format"`  // StreamFormat
	Version    int    `json:"version"` // StreamVersion
	Head       string `json:"head"`    // the host's HEAD commit
	Branch     string `json:"branch"`  // the host's branch, "" when detached
	Shallow    bool   `json:"shallow"` // the bundle holds HEAD without its parents
	Files      int    `json:"files"`   // files in the guest's tree
	BundleSize int64  `json:"bundleSize"`
	PatchSize  int64  `json:"patchSize"`
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

	patchPath := filepath.Join(tmp, patchName)
	if err := toFile(patchPath, func(f io.Writer) error {
		_, err := git2(ctx, repo.Root, env, f, nil, append(diffArgs, "--cached", "--no-renames", repo.Head, "--")...)
		return err
	}); err != nil {
		return fmt.Errorf("pack workspace %s: diff: %w", repo.Root, err)
	}
	bundlePath := filepath.Join(tmp, bundleName)
	if err := toFile(bundlePath, func(f io.Writer) error {
		return writeBundle(ctx, repo, !m.Options.FullHistory, f)
	}); err != nil {
		return fmt.Errorf("pack workspace %s: bundle: %w", repo.Root, err)
	}

	h := Header{Format: StreamFormat, Version: StreamVersion, Head: repo.Head, Branch: repo.Branch,
		Shallow: !m.Options.FullHistory, Files: len(m.Files)}
	if h.BundleSize, err = size(bundlePath); err != nil {
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
	for _, p := range []string{bundlePath, patchPath} {
		if err := tarFile(tw, p); err != nil {
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

// writeBundle writes a v2 bundle of HEAD to w; see the comment on the
// stream format for why it is not `git bundle create`.
func writeBundle(ctx context.Context, repo Repo, shallow bool, w io.Writer) error {
	if _, err := fmt.Fprintf(w, "# v2 git bundle\n%s HEAD\n\n", repo.Head); err != nil {
		return err
	}
	revList := []string{"rev-list", "--objects"}
	if shallow {
		revList = append(revList, "--no-walk")
	}
	revList = append(revList, repo.Head, "--")

	pr, pw := io.Pipe()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		_, err := git2(gctx, repo.Root, nil, pw, nil, revList...)
		pw.CloseWithError(err)
		return err
	})
	g.Go(func() error {
		_, err := git2(gctx, repo.Root, nil, w, pr, "pack-objects", "--stdout", "-q")
		pr.CloseWithError(io.ErrClosedPipe) // unblock rev-list if pack-objects stopped early
		return err
	})
	return g.Wait()
}

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

func tarFile(tw *tar.Writer, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Name: filepath.Base(path), Mode: 0o644, Size: st.Size(), ModTime: epoch, Typeflag: tar.TypeReg}); err != nil {
		return err
	}
	_, err = io.Copy(tw, f)
	return err
}
