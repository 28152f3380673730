package image

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/names"
)

// Register adopts an existing ext4 file as an image. The file is copied
// into the store (hashing it on the way) because a published rootfs must
// never change under the VMs that boot it, and the user's file might.
func (s *Store) Register(ctx context.Context, req api.RegisterImageRequest, progress func(api.Event)) (api.Image, error) {
	if progress == nil {
		progress = func(api.Event) {}
	}
	if err := names.Validate("image", req.Name); err != nil {
		return api.Image{}, err
	}
	if !filepath.IsAbs(req.RootFS) {
		return api.Image{}, fmt.Errorf("rootfs path %q must be absolute: %w", req.RootFS, errdefs.ErrInvalidArgument)
	}
	switch req.Format {
	case "", api.RootFSExt4:
	case api.RootFSTar:
		return s.registerTar(ctx, req, progress)
	default:
		return api.Image{}, fmt.Errorf("rootfs format %q: want %s or %s: %w", req.Format, api.RootFSExt4, api.RootFSTar, errdefs.ErrInvalidArgument)
	}
	src, err := os.Open(req.RootFS)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return api.Image{}, fmt.Errorf("rootfs %s: %w", req.RootFS, errdefs.ErrNotFound)
		}
		return api.Image{}, fmt.Errorf("rootfs: %w", err)
	}
	defer src.Close()
	st, err := src.Stat()
	if err != nil {
		return api.Image{}, err
	}
	if !st.Mode().IsRegular() {
		return api.Image{}, fmt.Errorf("rootfs %s is not a regular file: %w", req.RootFS, errdefs.ErrInvalidArgument)
	}
	if err := checkExt4(src); err != nil {
		return api.Image{}, fmt.Errorf("rootfs %s: %w", req.RootFS, err)
	}
	stage, err := s.stagingDir("register")
	if err != nil {
		return api.Image{}, err
	}
	defer os.RemoveAll(stage)
	out := filepath.Join(stage, "rootfs.ext4")
	dst, err := os.Create(out)
	if err != nil {
		return api.Image{}, err
	}
	progress(api.Event{Phase: "copy", Message: "copying " + req.RootFS, Total: st.Size()})
	h := sha256.New()
	pr := &progressReader{r: io.TeeReader(src, h), total: st.Size(), report: func(n int64) {
		progress(api.Event{Phase: "copy", Current: n, Total: st.Size()})
	}}
	if _, err := io.Copy(dst, &ctxReader{ctx: ctx, r: pr}); err != nil {
		dst.Close()
		return api.Image{}, fmt.Errorf("copy rootfs: %w", err)
	}
	if err := errors.Join(dst.Sync(), dst.Close()); err != nil {
		return api.Image{}, fmt.Errorf("copy rootfs: %w", err)
	}
	digest := "sha256:" + hex.EncodeToString(h.Sum(nil))
	s.mu.Lock()
	final, err := s.publish(out, digest)
	s.mu.Unlock()
	if err != nil {
		return api.Image{}, err
	}
	b := built{Digest: digest, RootFS: final, SizeBytes: st.Size(), ContentBytes: st.Size()}
	return s.record(ctx, req.Name, req.RootFS, "register", req.Kernel, b)
}

// checkExt4 looks for the ext2/3/4 superblock magic, so a wrong file is
// refused now rather than as a guest kernel panic at boot.
func checkExt4(r io.ReaderAt) error {
	var b [2]byte
	if _, err := r.ReadAt(b[:], 1024+56); err != nil {
		return fmt.Errorf("too small to be an ext4 file system: %w", errdefs.ErrInvalidArgument)
	}
	if binary.LittleEndian.Uint16(b[:]) != 0xEF53 {
		return fmt.Errorf("not an ext4 file system (no ext superblock magic): make one with mke2fs -t ext4 -d DIR: %w", errdefs.ErrInvalidArgument)
	}
	return nil
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// Cache lists the layer-blob cache with the images built from each blob.
func (s *Store) Cache(ctx context.Context) ([]api.CachedBlob, error) {
	blobs, err := s.blobs.list()
	if err != nil {
		return nil, err
	}
	refs, err := s.cfg.DB.ReferencedBlobs(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]api.CachedBlob, 0, len(blobs))
	for _, b := range blobs {
		out = append(out, api.CachedBlob{Digest: b.Digest, SizeBytes: b.Size, Images: refs[b.Digest]})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Digest < out[j].Digest })
	return out, nil
}

// PruneCache removes blobs no image was built from (or all, with req.All).
// Images do not need their blobs once built; the cache only saves
// downloads for later pulls.
func (s *Store) PruneCache(ctx context.Context, req api.PruneCacheRequest) (api.PruneCacheResult, error) {
	all, err := s.Cache(ctx)
	if err != nil {
		return api.PruneCacheResult{}, err
	}
	res := api.PruneCacheResult{DryRun: req.DryRun, Removed: []api.CachedBlob{}}
	for _, b := range all {
		if len(b.Images) > 0 && !req.All {
			continue
		}
		if !req.DryRun {
			p, err := s.blobs.path(b.Digest)
			if err != nil {
				return res, err
			}
			if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
				return res, fmt.Errorf("prune %s: %w", b.Digest, err)
			}
		}
		res.Removed = append(res.Removed, b)
		res.FreedBytes += b.SizeBytes
	}
	return res, nil
}
