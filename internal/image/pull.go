package image

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/catalog"
	"github.com/bangervm/banger/internal/ext4"
	"github.com/bangervm/banger/internal/image/flatten"
	"github.com/bangervm/banger/internal/names"
)

// platform is the only one banger runs.
var platform = v1.Platform{OS: "linux", Architecture: "amd64"}

// Pull turns an OCI reference or a catalog name into a named image.
// Concurrent pulls of one image share a single download and build.
func (s *Store) Pull(ctx context.Context, req api.PullImageRequest, progress func(api.Event)) (api.Image, error) {
	if progress == nil {
		progress = func(api.Event) {}
	}
	if req.SizeBytes < 0 {
		return api.Image{}, fmt.Errorf("size %d: must be positive: %w", req.SizeBytes, errdefs.ErrInvalidArgument)
	}
	if e, ok := catalog.Image(req.Ref); ok {
		return s.pullCatalog(ctx, e, req, progress)
	}
	ref, err := name.ParseReference(req.Ref)
	if err != nil {
		return api.Image{}, fmt.Errorf("image reference %q: %v: give an OCI reference such as docker.io/library/alpine:3.20, or a catalog name (%s): %w",
			req.Ref, err, strings.Join(catalog.ImageNames(), ", "), errdefs.ErrInvalidArgument)
	}
	nm := req.Name
	if nm == "" {
		nm = defaultName(ref)
	}
	if err := names.Validate("image", nm); err != nil {
		return api.Image{}, err
	}
	if err := s.refusePromoted(ctx, nm); err != nil {
		return api.Image{}, err
	}

	progress(api.Event{Phase: "resolve", Message: "resolving " + ref.String()})
	img, digest, err := s.resolve(ctx, ref)
	if err != nil {
		return api.Image{}, err
	}
	b, ok := s.publishedFor(ctx, digest)
	if !ok || req.SizeBytes != 0 {
		b, _, err = s.pulls.do(ctx, digest+fmt.Sprintf("/%d", req.SizeBytes), progress, func(ctx context.Context, progress func(api.Event)) (built, error) {
			return s.build(ctx, img, digest, req.SizeBytes, progress)
		})
		if err != nil {
			return api.Image{}, fmt.Errorf("pull %s: %w", ref, err)
		}
	}
	return s.record(ctx, nm, ref.String(), "oci", req.Kernel, b)
}

// defaultName derives an image name from a reference: the last path part of
// the repository, plus the tag unless it is "latest".
func defaultName(ref name.Reference) string {
	repo := ref.Context().RepositoryStr()
	n := repo[strings.LastIndex(repo, "/")+1:]
	if t, ok := ref.(name.Tag); ok && t.TagStr() != "latest" {
		n += "-" + t.TagStr()
	}
	return names.Sanitize(n)
}

func (s *Store) remoteOptions(ctx context.Context) []remote.Option {
	return []remote.Option{
		remote.WithContext(ctx),
		remote.WithAuthFromKeychain(authn.DefaultKeychain),
		remote.WithPlatform(platform),
		remote.WithUserAgent("banger"),
	}
}

// resolve fetches the manifest (choosing linux/amd64 from an index) and
// checks that banger can unpack what it describes.
func (s *Store) resolve(ctx context.Context, ref name.Reference) (v1.Image, string, error) {
	desc, err := remote.Get(ref, s.remoteOptions(ctx)...)
	if err != nil {
		return nil, "", registryError(ref, err)
	}
	switch desc.MediaType {
	case types.OCIImageIndex, types.DockerManifestList, types.OCIManifestSchema1, types.DockerManifestSchema2:
	default:
		return nil, "", fmt.Errorf("%s has media type %q, which is not an image: %w", ref, desc.MediaType, errdefs.ErrInvalidArgument)
	}
	img, err := desc.Image()
	if err != nil {
		if desc.MediaType.IsIndex() {
			return nil, "", fmt.Errorf("%s has no %s image: %v: %w", ref, platform, err, errdefs.ErrNotFound)
		}
		return nil, "", registryError(ref, err)
	}
	mt, err := img.MediaType()
	if err != nil {
		return nil, "", registryError(ref, err)
	}
	if mt != types.OCIManifestSchema1 && mt != types.DockerManifestSchema2 {
		return nil, "", fmt.Errorf("%s: manifest media type %q is not supported (want %s or %s): %w", ref, mt, types.OCIManifestSchema1, types.DockerManifestSchema2, errdefs.ErrInvalidArgument)
	}
	m, err := img.Manifest()
	if err != nil {
		return nil, "", registryError(ref, err)
	}
	if ct := m.Config.MediaType; ct != types.OCIConfigJSON && ct != types.DockerConfigJSON {
		return nil, "", fmt.Errorf("%s: config media type %q is not a container image config (is it an artifact?): %w", ref, ct, errdefs.ErrInvalidArgument)
	}
	for i, l := range m.Layers {
		if _, err := decompressorFor(l.MediaType); err != nil {
			return nil, "", fmt.Errorf("%s: layer %d (%s): %w", ref, i+1, l.Digest, err)
		}
	}
	d, err := img.Digest()
	if err != nil {
		return nil, "", registryError(ref, err)
	}
	return img, d.String(), nil
}

// registryError says which registry failed and how, with a class the CLI
// can act on.
func registryError(ref name.Reference, err error) error {
	reg := ref.Context().RegistryStr()
	var terr *transport.Error
	switch {
	case errors.Is(err, context.Canceled):
		return fmt.Errorf("%s: %w", ref, err)
	case errors.As(err, &terr) && terr.StatusCode == 404:
		return fmt.Errorf("%s: not found on %s: %w", ref, reg, errdefs.ErrNotFound)
	case errors.As(err, &terr) && (terr.StatusCode == 401 || terr.StatusCode == 403):
		return fmt.Errorf("%s: %s refused access (HTTP %d): log in with docker login, banger reads ~/.docker/config.json: %w", ref, reg, terr.StatusCode, errdefs.ErrPermissionDenied)
	case errors.Is(err, syscall.ECONNREFUSED), isNetError(err):
		return fmt.Errorf("registry %s unreachable: %v: %w", reg, err, errdefs.ErrUnavailable)
	}
	return fmt.Errorf("%s: %w", ref, err)
}

func isNetError(err error) bool {
	var ne net.Error
	var oe *net.OpError
	var dnse *net.DNSError
	return errors.As(err, &oe) || errors.As(err, &dnse) || (errors.As(err, &ne) && ne.Timeout())
}

type decompressor func(io.Reader) (io.ReadCloser, error)

func decompressorFor(mt types.MediaType) (decompressor, error) {
	switch mt {
	case types.DockerLayer, types.OCILayer, "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip":
		return func(r io.Reader) (io.ReadCloser, error) {
			zr, err := gzip.NewReader(r)
			return zr, err
		}, nil
	case types.OCILayerZStd:
		return func(r io.Reader) (io.ReadCloser, error) {
			zr, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1))
			if err != nil {
				return nil, err
			}
			return zr.IOReadCloser(), nil
		}, nil
	case types.OCIUncompressedLayer, types.DockerUncompressedLayer:
		return func(r io.Reader) (io.ReadCloser, error) { return io.NopCloser(r), nil }, nil
	}
	return nil, fmt.Errorf("layer media type %q cannot be unpacked (supported: tar, tar+gzip, tar+zstd): %w", mt, errdefs.ErrInvalidArgument)
}

// build downloads (or reads from the cache) every layer, applies them in
// order to a staging tree, makes the ext4 and publishes it.
func (s *Store) build(ctx context.Context, img v1.Image, digest string, size int64, progress func(api.Event)) (built, error) {
	layers, err := img.Layers()
	if err != nil {
		return built{}, err
	}
	m, err := img.Manifest()
	if err != nil {
		return built{}, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return built{}, fmt.Errorf("image config: %w", err)
	}
	var digests []string
	// Blobs are synced into the cache in the background while the next
	// layers are applied; all of them are waited for before publishing.
	var published []func() error
	defer func() {
		for _, wait := range published {
			wait()
		}
	}()
	apply := func(tree *flatten.Tree) error {
		for i, l := range layers {
			desc := m.Layers[i]
			digests = append(digests, desc.Digest.String())
			wait, err := s.applyLayer(ctx, tree, l, desc, i+1, len(layers), progress)
			if err != nil {
				return fmt.Errorf("layer %d/%d (%s): %w", i+1, len(layers), desc.Digest, err)
			}
			published = append(published, wait)
		}
		return nil
	}
	settle := func() error {
		for i, wait := range published {
			if err := wait(); err != nil {
				return fmt.Errorf("layer %d/%d (%s): %w", i+1, len(layers), m.Layers[i].Digest, err)
			}
		}
		return nil
	}
	b, err := s.buildTree(ctx, digest, size, progress, apply, settle)
	if err != nil {
		return built{}, err
	}
	c := cf.Config
	b.Layers = digests
	b.Config = api.ImageConfig{Env: c.Env, Entrypoint: c.Entrypoint, Cmd: c.Cmd, WorkingDir: c.WorkingDir, User: c.User}
	return b, nil
}

// buildTree is what every image built from tar layers shares: apply fills
// a staging tree (through flatten, which refuses hostile entries), the
// ext4 is made from it, settle runs before anything is published, and the
// ext4 is published under digest (and size, when set).
func (s *Store) buildTree(ctx context.Context, digest string, size int64, progress func(api.Event), apply func(*flatten.Tree) error, settle func() error) (built, error) {
	stage, err := s.stagingDir("pull")
	if err != nil {
		return built{}, err
	}
	defer os.RemoveAll(stage)
	root, discard := filepath.Join(stage, "root"), filepath.Join(stage, "discard")
	for _, d := range []string{root, discard} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return built{}, err
		}
	}
	tree, err := flatten.New(root)
	if err != nil {
		return built{}, err
	}
	defer tree.Close()
	// What later layers replace is set aside and removed with the stage,
	// after the image is built.
	if err := tree.Discard(discard); err != nil {
		return built{}, err
	}
	if err := apply(tree); err != nil {
		return built{}, err
	}
	progress(api.Event{Phase: "ext4", Message: "building ext4 root filesystem"})
	out := filepath.Join(stage, "rootfs.ext4")
	if err := ext4.Build(ctx, ext4.Options{Dir: root, Output: out, SizeBytes: size, ContentBytes: tree.ContentSize(), Inodes: tree.Inodes(), Fixups: tree.Fixups()}); err != nil {
		return built{}, err
	}
	if err := settle(); err != nil {
		return built{}, err
	}
	st, err := os.Stat(out)
	if err != nil {
		return built{}, err
	}
	key := digest
	if size != 0 {
		key = fmt.Sprintf("%s-%d", digest, size)
	}
	s.mu.Lock()
	final, err := s.publish(out, key)
	s.mu.Unlock()
	if err != nil {
		return built{}, err
	}
	return built{Digest: digest, RootFS: final, SizeBytes: st.Size(), ContentBytes: tree.ContentSize()}, nil
}

// applyLayer applies one layer. On success it returns a function that
// waits for the layer's blob to be published in the cache.
func (s *Store) applyLayer(ctx context.Context, tree *flatten.Tree, l v1.Layer, desc v1.Descriptor, n, total int, progress func(api.Event)) (func() error, error) {
	dec, err := decompressorFor(desc.MediaType)
	if err != nil {
		return nil, err
	}
	blob, err := s.blobs.open(ctx, desc.Digest.String(), desc.Size, l.Compressed)
	if err != nil {
		return nil, err
	}
	defer blob.Close()
	pr := &progressReader{r: blob, total: desc.Size, report: func(cur int64) {
		progress(api.Event{Phase: "layer", Layer: n, Layers: total, Current: cur, Total: desc.Size})
	}}
	// A layer that does not unpack may be a corrupt download rather than
	// a bad image: when the blob fails verification, say that instead.
	fail := func(err error) error {
		if verr := blob.Verify(); verr != nil && ctx.Err() == nil {
			return verr
		}
		return err
	}
	// The decompressors read 4 KiB at a time from a plain reader; every
	// read of a download is also a write to the cache file, so read in
	// large pieces.
	zr, err := dec(bufio.NewReaderSize(pr, blobReadBuffer))
	if err != nil {
		return nil, fail(fmt.Errorf("decompress: %v: %w", err, errdefs.ErrInvalidArgument))
	}
	defer zr.Close()
	ra := newReadAhead(zr)
	defer ra.Close()
	if err := tree.Apply(ctx, ra); err != nil {
		ra.Close()
		return nil, fail(err)
	}
	// Read the compressed stream to its end so its checksum (gzip) and
	// the blob digest are verified before the layer counts as applied.
	if _, err := io.Copy(io.Discard, ra); err != nil {
		ra.Close()
		return nil, fail(fmt.Errorf("decompress: %w", err))
	}
	ra.Close()
	wait, err := blob.CommitAsync()
	if err != nil {
		return nil, err
	}
	pr.report(desc.Size)
	return wait, nil
}

const blobReadBuffer = 256 << 10

// progressReader reports how far a stream has been read, at most every
// 1 MiB so a fast local pull does not drown the client in events.
type progressReader struct {
	r      io.Reader
	n      int64
	last   int64
	total  int64
	report func(int64)
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.n += int64(n)
	if p.n-p.last >= 1<<20 {
		p.last = p.n
		p.report(p.n)
	}
	return n, err
}
