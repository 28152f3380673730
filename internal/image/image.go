// Package image is banger's image store: it pulls OCI images (or builds
// catalog images locally), flattens their layers into an ext4 root
// filesystem, and keeps one published file per image digest under the
// state directory, with a named record for each image in the state store.
//
// A published rootfs is never written again: VMs boot it read-only and
// keep their changes on a disk of their own. Everything is assembled in a
// staging directory and published by an atomic rename, so a crash or a
// cancelled pull leaves nothing half-made where readers look.
package image

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/names"
	"github.com/bangervm/banger/internal/paths"
	"github.com/bangervm/banger/internal/store"
)

// Config wires a Store.
type Config struct {
	Layout paths.Layout
	DB     *store.Store
	Log    *slog.Logger
	// DebianMirror overrides the mirror for catalog images built with
	// mmdebstrap; empty means the host's apt sources.
	DebianMirror string
	// Keychain file for registry credentials; empty means Docker's
	// default (~/.docker/config.json).
	Insecure bool
}

// Store is the image store. It is safe for concurrent use.
type Store struct {
	cfg   Config
	log   *slog.Logger
	blobs *blobCache

	// pulls coalesces concurrent builds of one image digest.
	pulls flights[built]
	// mu serialises publishing and removing rootfs files against the
	// records that point at them.
	mu sync.Mutex
}

// built is a published rootfs and what is known about it.
type built struct {
	Digest       string
	RootFS       string
	SizeBytes    int64
	ContentBytes int64
	Config       api.ImageConfig
	Layers       []string
}

// New opens the image store.
func New(cfg Config) (*Store, error) {
	bc, err := newBlobCache(cfg.Layout.Blobs())
	if err != nil {
		return nil, err
	}
	return &Store{cfg: cfg, log: cfg.Log, blobs: bc}, nil
}

// Close waits for pulls whose callers went away to finish rolling back,
// so that a daemon stopping mid-pull leaves no staging files behind.
func (s *Store) Close() { s.pulls.wait() }

func toAPI(img store.Image) api.Image {
	var c api.ImageConfig
	json.Unmarshal([]byte(img.ConfigJSON), &c)
	return api.Image{
		Name: img.Name, Digest: img.Digest, Ref: img.Ref, Source: img.Source, RootFS: img.RootFS,
		SizeBytes: img.SizeBytes, ContentBytes: img.ContentBytes, Kernel: img.Kernel, Config: c,
		Layers: img.Blobs, CreatedAt: img.CreatedAt,
	}
}

// List returns every image.
func (s *Store) List(ctx context.Context) ([]api.Image, error) {
	imgs, err := s.cfg.DB.ListImages(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]api.Image, 0, len(imgs))
	for _, img := range imgs {
		out = append(out, toAPI(img))
	}
	return out, nil
}

// Get returns the image called name (exact match only).
func (s *Store) Get(ctx context.Context, name string) (api.Image, error) {
	img, err := s.cfg.DB.GetImage(ctx, name)
	if err != nil {
		return api.Image{}, err
	}
	return toAPI(img), nil
}

// Delete removes the image called name, and its rootfs file when no other
// image shares it.
func (s *Store) Delete(ctx context.Context, name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	img, err := s.cfg.DB.GetImage(ctx, name)
	if err != nil {
		return err
	}
	users, err := s.cfg.DB.VMsUsingImage(ctx, name)
	if err != nil {
		return err
	}
	if len(users) > 0 {
		return fmt.Errorf("image %s is used by vm %s: delete those VMs first: %w", name, strings.Join(users, ", "), errdefs.ErrFailedPrecondition)
	}
	if err := s.cfg.DB.DeleteImage(ctx, name); err != nil {
		return err
	}
	return s.removeIfUnused(ctx, img.RootFS)
}

// removeIfUnused deletes a published rootfs no record points at. Caller
// holds s.mu.
func (s *Store) removeIfUnused(ctx context.Context, rootfs string) error {
	inUse, err := s.cfg.DB.RootFSInUse(ctx, rootfs)
	if err != nil || inUse {
		return err
	}
	// Only files banger published itself are ever removed.
	if filepath.Dir(rootfs) != s.cfg.Layout.Images() {
		return nil
	}
	if err := os.Remove(rootfs); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", rootfs, err)
	}
	return nil
}

// SourcePromoted is the source of an image image promote made local.
const SourcePromoted = "promoted"

// Promote makes the pulled image req.Name local (SourcePromoted): pinned
// to the root filesystem it has now, its config and kernel kept, no longer
// holding layer blobs in the cache (it needs none), and never replaced by
// a pull (record refuses). With req.As, a promoted copy under that name
// shares the root filesystem and req.Name stays as it is.
func (s *Store) Promote(ctx context.Context, req api.PromoteImageRequest) (api.Image, error) {
	to := req.Name
	if req.As != "" {
		to = req.As
		if err := names.Validate("image", to); err != nil {
			return api.Image{}, err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	img, err := s.cfg.DB.GetImage(ctx, req.Name)
	if err != nil {
		return api.Image{}, err
	}
	if img.Source != "oci" && img.Source != "debootstrap" {
		return api.Image{}, fmt.Errorf("image %s is already local (source %s): only pulled images are promoted: %w", img.Name, img.Source, errdefs.ErrFailedPrecondition)
	}
	if req.As != "" {
		if _, err := s.cfg.DB.GetImage(ctx, to); err == nil {
			return api.Image{}, fmt.Errorf("image %s already exists: choose another --as, or delete it first: %w", to, errdefs.ErrAlreadyExists)
		}
	}
	if img.Ref != "" {
		img.Ref = strings.TrimPrefix(img.Ref, "promoted from ")
		img.Ref = "promoted from " + img.Ref
	}
	img.Name, img.Source, img.Blobs, img.CreatedAt = to, SourcePromoted, nil, time.Now()
	if err := s.cfg.DB.PutImage(ctx, img); err != nil {
		return api.Image{}, err
	}
	out, err := s.cfg.DB.GetImage(ctx, to)
	if err != nil {
		return api.Image{}, err
	}
	return toAPI(out), nil
}

// refusePromoted refuses a pull into name when name is a promoted image,
// before anything is downloaded.
func (s *Store) refusePromoted(ctx context.Context, name string) error {
	if img, err := s.cfg.DB.GetImage(ctx, name); err == nil && img.Source == SourcePromoted {
		return promotedError(name)
	}
	return nil
}

func promotedError(name string) error {
	return fmt.Errorf("image %s is promoted (local, pinned): a pull never replaces it; pull under another --name, or delete it first: %w", name, errdefs.ErrAlreadyExists)
}

// record gives name to a published rootfs, replacing what the name
// pointed at before, unless that is a promoted image.
func (s *Store) record(ctx context.Context, name, ref, source, kernel string, b built) (api.Image, error) {
	cfgJSON, _ := json.Marshal(b.Config)
	rec := store.Image{
		Name: name, Digest: b.Digest, Ref: ref, Source: source, RootFS: b.RootFS,
		SizeBytes: b.SizeBytes, ContentBytes: b.ContentBytes, ConfigJSON: string(cfgJSON),
		Kernel: kernel, CreatedAt: time.Now(), Blobs: b.Layers,
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old, err := s.cfg.DB.GetImage(ctx, name)
	hadOld := err == nil
	if hadOld && old.Source == SourcePromoted {
		// Promoted while this pull ran.
		if err := s.removeIfUnused(ctx, rec.RootFS); err != nil {
			s.log.Warn("remove the rootfs of a refused pull", "image", name, "err", err)
		}
		return api.Image{}, promotedError(name)
	}
	if err := s.cfg.DB.PutImage(ctx, rec); err != nil {
		return api.Image{}, err
	}
	if hadOld && old.RootFS != rec.RootFS {
		if err := s.removeIfUnused(ctx, old.RootFS); err != nil {
			s.log.Warn("remove replaced rootfs", "image", name, "err", err)
		}
	}
	img, err := s.cfg.DB.GetImage(ctx, name)
	if err != nil {
		return api.Image{}, err
	}
	return toAPI(img), nil
}

// publish moves a finished rootfs from staging to its final place. A rootfs
// already published for the digest wins: it is identical by construction.
func (s *Store) publish(staged, digest string) (string, error) {
	final := filepath.Join(s.cfg.Layout.Images(), strings.ReplaceAll(digest, ":", "-")+".ext4")
	if _, err := os.Stat(final); err == nil {
		return final, nil
	}
	if err := os.Chmod(staged, 0o444); err != nil {
		return "", err
	}
	if err := os.Rename(staged, final); err != nil {
		return "", fmt.Errorf("publish %s: %w", final, err)
	}
	if d, err := os.Open(filepath.Dir(final)); err == nil {
		d.Sync()
		d.Close()
	}
	return final, nil
}

func (s *Store) stagingDir(kind string) (string, error) {
	spreadSubdirs(s.cfg.Layout.Tmp())
	d, err := os.MkdirTemp(s.cfg.Layout.Tmp(), kind+"-")
	if err != nil {
		return "", fmt.Errorf("staging dir: %w", err)
	}
	return d, nil
}

// publishedFor returns the rootfs already built for digest, if any.
func (s *Store) publishedFor(ctx context.Context, digest string) (built, bool) {
	img, err := s.cfg.DB.ImageByDigest(ctx, digest)
	if err != nil {
		return built{}, false
	}
	if _, err := os.Stat(img.RootFS); err != nil {
		return built{}, false
	}
	full, err := s.cfg.DB.GetImage(ctx, img.Name)
	if err != nil {
		return built{}, false
	}
	a := toAPI(full)
	return built{Digest: digest, RootFS: a.RootFS, SizeBytes: a.SizeBytes, ContentBytes: a.ContentBytes, Config: a.Config, Layers: a.Layers}, true
}

func validateNew(kind, name string) error {
	return names.Validate(kind, name)
}
