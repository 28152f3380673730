package kernel

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

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/catalog"
	"github.com/bangervm/banger/internal/names"
	"github.com/bangervm/banger/internal/paths"
	"github.com/bangervm/banger/internal/store"
)

// StoreConfig wires a Store.
type StoreConfig struct {
	Layout paths.Layout
	DB     *store.Store
	Log    *slog.Logger
}

// Store keeps named kernels: one directory per kernel under the state dir
// (vmlinux, optional bzImage and initrd.img), recorded in the state store.
// A kernel directory is staged completely and then renamed into place.
type Store struct {
	cfg StoreConfig
	mu  sync.Mutex // serialises name checks with publishing
}

// NewStore opens the kernel store and removes kernel directories that no
// record names (left by a crash between publishing and recording).
func NewStore(cfg StoreConfig) *Store {
	s := &Store{cfg: cfg}
	entries, _ := os.ReadDir(cfg.Layout.Kernels())
	for _, e := range entries {
		if _, err := cfg.DB.GetKernel(context.Background(), e.Name()); errdefs.IsNotFound(err) {
			cfg.Log.Info("removing unrecorded kernel directory", "dir", e.Name())
			os.RemoveAll(filepath.Join(cfg.Layout.Kernels(), e.Name()))
		}
	}
	return s
}

func (s *Store) toAPI(k store.Kernel) api.Kernel {
	var info Info
	json.Unmarshal([]byte(k.InfoJSON), &info)
	out := api.Kernel{
		Name: k.Name, Version: info.Version, Format: info.Format, PVH: info.PVH, Source: k.Source,
		Dir: k.Dir, Vmlinux: filepath.Join(k.Dir, VmlinuxFile), Modules: info.Modules,
		SizeBytes: info.Size, CreatedAt: k.CreatedAt,
	}
	if info.Format == FormatBzImage {
		out.BzImage = filepath.Join(k.Dir, BzImageFile)
	}
	if info.HasInitrd {
		out.Initrd = filepath.Join(k.Dir, InitrdFile)
	}
	return out
}

// List returns every kernel.
func (s *Store) List(ctx context.Context) ([]api.Kernel, error) {
	ks, err := s.cfg.DB.ListKernels(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]api.Kernel, 0, len(ks))
	for _, k := range ks {
		out = append(out, s.toAPI(k))
	}
	return out, nil
}

// Get returns the kernel called name (exact match).
func (s *Store) Get(ctx context.Context, name string) (api.Kernel, error) {
	k, err := s.cfg.DB.GetKernel(ctx, name)
	if err != nil {
		return api.Kernel{}, err
	}
	return s.toAPI(k), nil
}

// Delete removes a kernel. Images that name it as their default are
// refused, so a later `vm run` does not fail on a missing kernel.
func (s *Store) Delete(ctx context.Context, name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	k, err := s.cfg.DB.GetKernel(ctx, name)
	if err != nil {
		return err
	}
	users, err := s.cfg.DB.ImagesUsingKernel(ctx, name)
	if err != nil {
		return err
	}
	vms, err := s.cfg.DB.VMsUsingKernel(ctx, name)
	if err != nil {
		return err
	}
	if len(vms) > 0 {
		return fmt.Errorf("kernel %s is booted by vm %s: delete those VMs first: %w", name, strings.Join(vms, ", "), errdefs.ErrFailedPrecondition)
	}
	if len(users) > 0 {
		return fmt.Errorf("kernel %s is the default kernel of image %s: delete or re-register those images first: %w", name, strings.Join(users, ", "), errdefs.ErrFailedPrecondition)
	}
	if err := s.cfg.DB.DeleteKernel(ctx, name); err != nil {
		return err
	}
	if err := os.RemoveAll(k.Dir); err != nil {
		return fmt.Errorf("remove %s: %w", k.Dir, err)
	}
	return nil
}

// Import stages a kernel from host files or a .deb and publishes it.
func (s *Store) Import(ctx context.Context, req api.ImportKernelRequest, progress func(api.Event)) (api.Kernel, error) {
	if progress == nil {
		progress = func(api.Event) {}
	}
	for _, p := range []string{req.Kernel, req.Initrd, req.Modules, req.Deb} {
		if p != "" && !filepath.IsAbs(p) {
			return api.Kernel{}, fmt.Errorf("path %q must be absolute: %w", p, errdefs.ErrInvalidArgument)
		}
		if p != "" {
			if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
				return api.Kernel{}, fmt.Errorf("%s: %w", p, errdefs.ErrNotFound)
			}
		}
	}
	if (req.Kernel == "") == (req.Deb == "") {
		return api.Kernel{}, fmt.Errorf("import kernel: give either a kernel file or a .deb: %w", errdefs.ErrInvalidArgument)
	}
	return s.stageAndPublish(ctx, req.Name, progress, func(ctx context.Context, stage string) (Info, string, error) {
		if req.Deb != "" {
			progress(api.Event{Phase: "import", Message: "unpacking " + filepath.Base(req.Deb)})
			info, err := ImportDeb(ctx, stage, req.Deb)
			return info, "deb:" + req.Deb, err
		}
		progress(api.Event{Phase: "import", Message: "importing " + filepath.Base(req.Kernel)})
		info, err := ImportFiles(ctx, stage, req.Kernel, req.Initrd, req.Modules)
		return info, "file:" + req.Kernel, err
	})
}

// Pull fetches a kernel by catalog name (through the host's apt) or from an
// OCI image.
func (s *Store) Pull(ctx context.Context, req api.PullKernelRequest, progress func(api.Event)) (api.Kernel, error) {
	if progress == nil {
		progress = func(api.Event) {}
	}
	if e, ok := catalog.Kernel(req.Ref); ok {
		nm := req.Name
		if nm == "" {
			nm = e.Name
		}
		if e.Kind != "apt" {
			return api.Kernel{}, fmt.Errorf("catalog kernel %s: kind %q is not supported by this banger: %w", e.Name, e.Kind, errdefs.ErrInvalidArgument)
		}
		return s.stageAndPublish(ctx, nm, progress, func(ctx context.Context, stage string) (Info, string, error) {
			progress(api.Event{Phase: "download", Message: "apt-get download " + e.Source})
			dl := filepath.Join(stage, "download")
			if err := os.Mkdir(dl, 0o700); err != nil {
				return Info{}, "", err
			}
			deb, err := AptDownload(ctx, dl, e.Source)
			if err != nil {
				return Info{}, "", err
			}
			progress(api.Event{Phase: "import", Message: "unpacking " + filepath.Base(deb)})
			out := filepath.Join(stage, "kernel")
			info, err := ImportDeb(ctx, out, deb)
			if err != nil {
				return Info{}, "", err
			}
			// Keep only the kernel, not the downloaded package.
			if err := os.RemoveAll(dl); err != nil {
				return Info{}, "", err
			}
			return info, "apt:" + filepath.Base(deb), moveUp(out, stage)
		})
	}
	ref, err := parseKernelRef(req.Ref)
	if err != nil {
		return api.Kernel{}, err
	}
	nm := req.Name
	if nm == "" {
		repo := ref.Context().RepositoryStr()
		nm = names.Sanitize(repo[strings.LastIndex(repo, "/")+1:])
		if t, ok := ref.(name.Tag); ok && t.TagStr() != "latest" {
			nm = names.Sanitize(nm + "-" + t.TagStr())
		}
	}
	return s.stageAndPublish(ctx, nm, progress, func(ctx context.Context, stage string) (Info, string, error) {
		progress(api.Event{Phase: "resolve", Message: "resolving " + ref.String()})
		img, err := remote.Image(ref, remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain),
			remote.WithPlatform(v1.Platform{OS: "linux", Architecture: "amd64"}))
		if err != nil {
			return Info{}, "", fmt.Errorf("%s: %w", ref, err)
		}
		d, _ := img.Digest()
		progress(api.Event{Phase: "download", Message: "extracting kernel files"})
		rc := mutate.Extract(img)
		defer rc.Close()
		info, err := ImportTar(ctx, stage, rc)
		return info, "oci:" + ref.String() + "@" + d.String(), err
	})
}

// moveUp moves the entries of dir into parent and removes dir.
func moveUp(dir, parent string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := os.Rename(filepath.Join(dir, e.Name()), filepath.Join(parent, e.Name())); err != nil {
			return err
		}
	}
	return os.Remove(dir)
}

// stageAndPublish runs fill on a fresh staging directory and, if it
// succeeds, publishes the directory under name. On any failure the staging
// directory is removed and nothing is recorded.
func (s *Store) stageAndPublish(ctx context.Context, nm string, progress func(api.Event), fill func(ctx context.Context, stage string) (Info, string, error)) (api.Kernel, error) {
	if err := names.Validate("kernel", nm); err != nil {
		return api.Kernel{}, err
	}
	if err := s.checkFree(ctx, nm); err != nil {
		return api.Kernel{}, err
	}
	tmp, err := os.MkdirTemp(s.cfg.Layout.Tmp(), "kernel-")
	if err != nil {
		return api.Kernel{}, err
	}
	defer os.RemoveAll(tmp)
	stage := filepath.Join(tmp, nm)
	if err := os.Mkdir(stage, 0o755); err != nil {
		return api.Kernel{}, err
	}
	info, source, err := fill(ctx, stage)
	if err != nil {
		return api.Kernel{}, fmt.Errorf("kernel %s: %w", nm, err)
	}
	if err := ctx.Err(); err != nil {
		return api.Kernel{}, err
	}
	infoJSON, _ := json.Marshal(info)

	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkFree(ctx, nm); err != nil {
		return api.Kernel{}, err
	}
	final := filepath.Join(s.cfg.Layout.Kernels(), nm)
	os.RemoveAll(final) // an unrecorded leftover; checkFree proved no record names it
	if err := os.Rename(stage, final); err != nil {
		return api.Kernel{}, fmt.Errorf("publish kernel %s: %w", nm, err)
	}
	rec := store.Kernel{Name: nm, Dir: final, Source: source, InfoJSON: string(infoJSON), CreatedAt: time.Now()}
	if err := s.cfg.DB.PutKernel(context.WithoutCancel(ctx), rec); err != nil {
		os.RemoveAll(final)
		return api.Kernel{}, err
	}
	progress(api.Event{Phase: "done", Message: "kernel " + nm + " ready"})
	return s.toAPI(rec), nil
}

func (s *Store) checkFree(ctx context.Context, nm string) error {
	_, err := s.cfg.DB.GetKernel(ctx, nm)
	if err == nil {
		return fmt.Errorf("kernel %q exists: remove it first (banger kernel rm %s) or choose another --name: %w", nm, nm, errdefs.ErrAlreadyExists)
	}
	if !errdefs.IsNotFound(err) {
		return err
	}
	return nil
}

// parseKernelRef parses an OCI reference to a kernel image. It must name
// its registry (a host with a dot or a port, or localhost): a bare name
// such as "debian-clod" is a mistyped catalog name, not Docker Hub's
// library, which has no kernels.
func parseKernelRef(s string) (name.Reference, error) {
	bad := func(why string) error {
		return fmt.Errorf("kernel %q: %s: give a catalog name (%s; banger kernel list --available) or an OCI reference with its registry, such as ghcr.io/org/kernel:6.1: %w",
			s, why, strings.Join(catalog.KernelNames(), ", "), errdefs.ErrInvalidArgument)
	}
	if !catalog.NamesRegistry(s) {
		return nil, bad("not in the catalog, and not a reference naming a registry")
	}
	ref, err := name.ParseReference(s)
	if err != nil {
		return nil, bad(err.Error())
	}
	return ref, nil
}
