package image

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/image/flatten"
)

// registerTar converts a tar of a whole root filesystem into an image:
// what a launcher Pod's rootfs init container writes from the image the
// kubelet pulled (internal/kube/rootfs). The tar is the user's choice, so
// it goes through the path a pulled layer takes (flatten refuses escaping
// paths, links out of the tree and devices it cannot hold; the ext4 is
// sized from what was written), as the image's one layer.
func (s *Store) registerTar(ctx context.Context, req api.RegisterImageRequest, progress func(api.Event)) (api.Image, error) {
	f, err := os.Open(req.RootFS)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return api.Image{}, fmt.Errorf("rootfs %s: %w", req.RootFS, errdefs.ErrNotFound)
		}
		return api.Image{}, fmt.Errorf("rootfs: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return api.Image{}, err
	}
	if !st.Mode().IsRegular() {
		return api.Image{}, fmt.Errorf("rootfs %s is not a regular file: %w", req.RootFS, errdefs.ErrInvalidArgument)
	}
	// The digest names the published ext4, so it is known before the
	// build: one read to hash, one to apply.
	progress(api.Event{Phase: "hash", Message: "hashing " + req.RootFS, Total: st.Size()})
	h := sha256.New()
	if _, err := io.Copy(h, &ctxReader{ctx: ctx, r: f}); err != nil {
		return api.Image{}, fmt.Errorf("read rootfs %s: %w", req.RootFS, err)
	}
	digest := "sha256:" + hex.EncodeToString(h.Sum(nil))
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return api.Image{}, err
	}
	apply := func(tree *flatten.Tree) error {
		pr := &progressReader{r: f, total: st.Size(), report: func(n int64) {
			progress(api.Event{Phase: "layer", Layer: 1, Layers: 1, Current: n, Total: st.Size()})
		}}
		if err := tree.Apply(ctx, pr); err != nil {
			return fmt.Errorf("rootfs %s: %w", req.RootFS, err)
		}
		return nil
	}
	b, err := s.buildTree(ctx, digest, 0, progress, apply, func() error { return nil })
	if err != nil {
		return api.Image{}, err
	}
	b.Config = req.Config
	return s.record(ctx, req.Name, req.RootFS, "tar", req.Kernel, b)
}
