package image

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/paths"
	"github.com/bangervm/banger/internal/store"
	"github.com/bangervm/banger/internal/testutil"
)

func newTestStore(t *testing.T) (*Store, paths.Layout) {
	t.Helper()
	testutil.RequireTool(t, "mke2fs", "e2fsprogs")
	testutil.RequireTool(t, "debugfs", "e2fsprogs")
	l := paths.Under(t.TempDir())
	if err := l.Ensure(); err != nil {
		t.Fatal(err)
	}
	db, err := store.Open(context.Background(), l.DB())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	s, err := New(Config{Layout: l, DB: db, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return s, l
}

func layerOf(t *testing.T, tarBytes []byte) v1.Layer {
	t.Helper()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(tarBytes)), nil },
		tarball.WithMediaType(types.OCILayer))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func imageOf(t *testing.T, cfg v1.Config, layers ...[]byte) v1.Image {
	return testutil.Image(t, cfg, layers...)
}

// debugfs runs a read-only debugfs request against an image.
func debugfs(t *testing.T, img, req string) string {
	t.Helper()
	out, err := exec.Command("debugfs", "-R", req, img).Output()
	if err != nil {
		t.Fatalf("debugfs %s: %v: %s", req, err, out)
	}
	return string(out)
}

func catFile(t *testing.T, img, path string) string {
	return debugfs(t, img, "cat "+path)
}

// base is a small two-layer image with the cases the flattener must get
// right end to end; the flattener's own tests cover each case in depth.
func base(t *testing.T) v1.Image {
	l1 := testutil.Tar(t,
		testutil.TarEntry{Name: "etc/", Type: '5'},
		testutil.TarEntry{Name: "etc/os-release", Body: "ID=banger-test\n"},
		testutil.TarEntry{Name: "etc/gone", Body: "deleted later"},
		testutil.TarEntry{Name: "bin/", Type: '5'},
		testutil.TarEntry{Name: "bin/su", Body: "setuid", Mode: 0o4755, UID: 0, GID: 0},
		testutil.TarEntry{Name: "home/", Type: '5'},
		testutil.TarEntry{Name: "home/user/", Type: '5', UID: 1000, GID: 1000},
		testutil.TarEntry{Name: "home/user/notes.txt", Body: "mine", UID: 1000, GID: 1000, Mode: 0o600},
		testutil.TarEntry{Name: "data/", Type: '5'},
		testutil.TarEntry{Name: "data/orig", Body: "v1"},
		testutil.TarEntry{Name: "data/link", Type: '1', Linkname: "data/orig"},
	)
	l2 := testutil.Tar(t,
		testutil.TarEntry{Name: "etc/.wh.gone"},
		testutil.TarEntry{Name: "data/orig", Body: "v2"},
		testutil.TarEntry{Name: "bin/sh", Type: '2', Linkname: "/bin/busybox"},
	)
	return imageOf(t, v1.Config{Env: []string{"PATH=/bin", "HELLO=world"}, Cmd: []string{"/bin/sh"}, WorkingDir: "/home/user", User: "1000"}, l1, l2)
}

func TestPullEndToEnd(t *testing.T) {
	s, _ := newTestStore(t)
	reg := testutil.NewRegistry(t)
	ref := reg.Push(t, base(t), "team/dev:1")
	ctx := context.Background()

	var events []api.Event
	img, err := s.Pull(ctx, api.PullImageRequest{Ref: ref}, func(e api.Event) { events = append(events, e) })
	if err != nil {
		t.Fatal(err)
	}
	if img.Name != "dev-1" {
		t.Errorf("default name %q, want dev-1", img.Name)
	}
	if img.Config.WorkingDir != "/home/user" || img.Config.User != "1000" || strings.Join(img.Config.Cmd, " ") != "/bin/sh" || len(img.Config.Env) != 2 {
		t.Errorf("config not recorded: %+v", img.Config)
	}
	if img.SizeBytes != 1<<30 {
		t.Errorf("size %d, want the 1 GiB minimum", img.SizeBytes)
	}
	if len(events) == 0 {
		t.Error("no progress events")
	}
	fs := img.RootFS
	if got := catFile(t, fs, "/etc/os-release"); got != "ID=banger-test\n" {
		t.Errorf("os-release = %q", got)
	}
	if out, _ := exec.Command("debugfs", "-R", "stat /etc/gone", fs).CombinedOutput(); !strings.Contains(string(out), "File not found") {
		t.Errorf("whiteout ignored: %s", out)
	}
	if got := catFile(t, fs, "/data/link"); got != "v1" {
		t.Errorf("hard link made in layer 1 has %q, want its layer-1 content v1", got)
	}
	if got := catFile(t, fs, "/data/orig"); got != "v2" {
		t.Errorf("replaced file has %q, want v2", got)
	}
	st := debugfs(t, fs, "stat /bin/su")
	if !strings.Contains(st, "Mode:  04755") {
		t.Errorf("setuid lost: %s", st)
	}
	st = debugfs(t, fs, "stat /home/user/notes.txt")
	if !strings.Contains(st, "User:  1000") || !strings.Contains(st, "Group:  1000") || !strings.Contains(st, "Mode:  0600") {
		t.Errorf("ownership or mode lost: %s", st)
	}
	if out := debugfs(t, fs, "stat /bin/sh"); !strings.Contains(out, `Fast link dest: "/bin/busybox"`) {
		t.Errorf("symlink: %s", out)
	}
	if out, err := exec.Command("e2fsck", "-fn", fs).CombinedOutput(); err != nil {
		t.Errorf("e2fsck: %v\n%s", err, out)
	}
	if st, err := os.Stat(fs); err != nil || st.Mode().Perm()&0o222 != 0 {
		t.Errorf("published rootfs must be read-only: %v %v", st.Mode(), err)
	}

	// A second pull of the same digest under another name shares the file.
	img2, err := s.Pull(ctx, api.PullImageRequest{Ref: ref, Name: "dev"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if img2.RootFS != img.RootFS {
		t.Errorf("same digest built twice: %s vs %s", img2.RootFS, img.RootFS)
	}
	if err := s.Delete(ctx, "dev-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(img.RootFS); err != nil {
		t.Errorf("rootfs removed while image dev still uses it: %v", err)
	}
	if err := s.Delete(ctx, "dev"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(img.RootFS); !os.IsNotExist(err) {
		t.Errorf("rootfs left after last image deleted: %v", err)
	}
	if _, err := s.Get(ctx, "dev"); !errdefs.IsNotFound(err) {
		t.Errorf("get deleted: %v", err)
	}
	cached, _ := s.Cache(ctx)
	if len(cached) != 2 {
		t.Errorf("cache holds %d blobs, want the 2 layers", len(cached))
	}
	res, err := s.PruneCache(ctx, api.PruneCacheRequest{DryRun: true})
	if err != nil || len(res.Removed) != 2 {
		t.Fatalf("dry-run prune: %+v %v", res, err)
	}
	if after, _ := s.Cache(ctx); len(after) != 2 {
		t.Error("dry run removed blobs")
	}
	if res, _ := s.PruneCache(ctx, api.PruneCacheRequest{}); len(res.Removed) != 2 {
		t.Errorf("prune removed %d", len(res.Removed))
	}
}

func TestPullMultiArchIndex(t *testing.T) {
	s, _ := newTestStore(t)
	reg := testutil.NewRegistry(t)
	amd := imageOf(t, v1.Config{}, testutil.Tar(t, testutil.TarEntry{Name: "arch", Body: "amd64"}))
	arm := imageOf(t, v1.Config{}, testutil.Tar(t, testutil.TarEntry{Name: "arch", Body: "arm64"}))
	idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex),
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}},
		mutate.IndexAddendum{Add: amd, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
	)
	ref := reg.Addr + "/multi:1"
	if err := pushIndex(ref, idx); err != nil {
		t.Fatal(err)
	}
	img, err := s.Pull(context.Background(), api.PullImageRequest{Ref: ref}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := catFile(t, img.RootFS, "/arch"); got != "amd64" {
		t.Errorf("picked %q, want the amd64 image", got)
	}
	want, _ := amd.Digest()
	if img.Digest != want.String() {
		t.Errorf("digest %s, want amd64 manifest %s", img.Digest, want)
	}

	armOnly := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex),
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}})
	if err := pushIndex(reg.Addr+"/armonly:1", armOnly); err != nil {
		t.Fatal(err)
	}
	_, err = s.Pull(context.Background(), api.PullImageRequest{Ref: reg.Addr + "/armonly:1"}, nil)
	if err == nil || !strings.Contains(err.Error(), "linux/amd64") {
		t.Errorf("arm-only index: %v, want an error naming linux/amd64", err)
	}
}

// TestPullHostile feeds broken registries and images: each must fail with
// a clear error, register nothing, leave no blob in the cache and nothing
// in staging.
func TestPullHostile(t *testing.T) {
	reg := testutil.NewRegistry(t)
	good := base(t)
	layers, _ := good.Layers()
	firstDigest, _ := layers[0].Digest()

	escape := imageOf(t, v1.Config{}, testutil.Tar(t, testutil.TarEntry{Name: "../../outside", Body: "x"}))
	symlinkOut := imageOf(t, v1.Config{}, testutil.Tar(t,
		testutil.TarEntry{Name: "evil", Type: '2', Linkname: "/tmp"},
		testutil.TarEntry{Name: "evil/pwned", Body: "x"}))
	zip := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	zipLayer := &mediaTypeLayer{Layer: layerOf(t, testutil.Tar(t, testutil.TarEntry{Name: "a", Body: "a"})), mt: "application/zip"}
	zip, _ = mutate.AppendLayers(zip, zipLayer)

	tests := []struct {
		name    string
		setup   func(t *testing.T) string // returns the ref
		wantErr string
		class   error
	}{
		{name: "dotdot entry", setup: func(t *testing.T) string { return reg.Push(t, escape, "escape:1") }, wantErr: "../../outside", class: errdefs.ErrInvalidArgument},
		{name: "write through symlink", setup: func(t *testing.T) string { return reg.Push(t, symlinkOut, "symlink:1") }, wantErr: "evil/pwned", class: errdefs.ErrInvalidArgument},
		{name: "digest mismatch", setup: func(t *testing.T) string {
			reg.Tamper(firstDigest.String(), func(b []byte) []byte {
				c := append([]byte(nil), b...)
				c[len(c)/2] ^= 0xff
				return c
			})
			return reg.Push(t, good, "corrupt:1")
		}, wantErr: "digest"},
		{name: "truncated blob", setup: func(t *testing.T) string {
			reg.Tamper(firstDigest.String(), func(b []byte) []byte { return b[:len(b)/2] })
			return reg.Push(t, good, "truncated:1")
		}, wantErr: firstDigest.String()},
		{name: "unsupported media type", setup: func(t *testing.T) string { return reg.Push(t, zip, "zip:1") }, wantErr: "application/zip", class: errdefs.ErrInvalidArgument},
		{name: "missing tag", setup: func(t *testing.T) string { return reg.Addr + "/nope:1" }, wantErr: "not found", class: errdefs.ErrNotFound},
		{name: "registry down", setup: func(t *testing.T) string {
			down := testutil.NewRegistry(t)
			ref := down.Push(t, good, "down:1")
			down.Close()
			return ref
		}, wantErr: "unreachable", class: errdefs.ErrUnavailable},
		{name: "bad reference", setup: func(t *testing.T) string { return "UPPER CASE::ref" }, wantErr: "reference", class: errdefs.ErrInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, l := newTestStore(t)
			reg.Tamper(firstDigest.String(), nil)
			outside := t.TempDir()
			ref := tt.setup(t)
			_, err := s.Pull(context.Background(), api.PullImageRequest{Ref: ref, Name: "x"}, nil)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want it to mention %q", err, tt.wantErr)
			}
			if tt.class != nil && errdefs.Class(err) != tt.class {
				t.Errorf("class = %v, want %v (err %v)", errdefs.Class(err), tt.class, err)
			}
			if imgs, _ := s.List(context.Background()); len(imgs) != 0 {
				t.Errorf("registered %v", imgs)
			}
			assertEmpty(t, l.Tmp())
			assertEmpty(t, l.Images())
			assertEmpty(t, filepath.Join(l.Blobs(), "incoming"))
			blobs, _ := s.blobs.list()
			for _, b := range blobs {
				if b.Digest == firstDigest.String() && strings.Contains(tt.name, "blob") || strings.Contains(tt.name, "digest") && b.Digest == firstDigest.String() {
					t.Errorf("corrupt blob %s cached", b.Digest)
				}
				verifyBlob(t, b)
			}
			assertEmpty(t, outside)
			if _, err := os.Stat("/tmp/pwned"); err == nil {
				t.Fatal("wrote /tmp/pwned through a symlink")
			}
		})
	}
}

type mediaTypeLayer struct {
	v1.Layer
	mt types.MediaType
}

func (l *mediaTypeLayer) MediaType() (types.MediaType, error) { return l.mt, nil }

func verifyBlob(t *testing.T, b cachedBlob) {
	data, err := os.ReadFile(b.Path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	if "sha256:"+hex.EncodeToString(sum[:]) != b.Digest || len(data) == 0 {
		t.Errorf("cached blob %s does not match its digest", b.Digest)
	}
}

func assertEmpty(t *testing.T, dir string) {
	t.Helper()
	var found []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if p != dir && err == nil {
			found = append(found, p)
		}
		return nil
	})
	if len(found) > 0 {
		t.Errorf("%s not empty: %v", dir, found)
	}
}

// TestPullCoalesces: concurrent pulls of one ref download each blob once
// and build one rootfs.
func TestPullCoalesces(t *testing.T) {
	s, l := newTestStore(t)
	reg := testutil.NewRegistry(t)
	big := make([]byte, 8<<20)
	for i := range big {
		big[i] = byte(i * 7)
	}
	img := imageOf(t, v1.Config{},
		testutil.Tar(t, testutil.TarEntry{Name: "big", Body: string(big)}),
		testutil.Tar(t, testutil.TarEntry{Name: "small", Body: "s"}))
	ref := reg.Push(t, img, "co:1")
	const n = 6
	var wg sync.WaitGroup
	errs := make([]error, n)
	results := make([]api.Image, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			results[i], errs[i] = s.Pull(context.Background(), api.PullImageRequest{Ref: ref, Name: fmt.Sprintf("co-%d", i)}, nil)
		}(i)
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("pull %d: %v", i, err)
		}
		if results[i].RootFS != results[0].RootFS {
			t.Errorf("pull %d built its own rootfs", i)
		}
	}
	layers, _ := img.Layers()
	for _, la := range layers {
		d, _ := la.Digest()
		if got := reg.BlobGets(d.String()); got != 1 {
			t.Errorf("blob %s fetched %d times, want 1", d, got)
		}
	}
	entries, _ := os.ReadDir(l.Images())
	if len(entries) != 1 {
		t.Errorf("%d rootfs files, want 1", len(entries))
	}
}

func TestPullCancelRollsBack(t *testing.T) {
	s, l := newTestStore(t)
	reg := testutil.NewRegistry(t)
	ref := reg.Push(t, base(t), "cancel:1")
	ctx, cancel := context.WithCancel(context.Background())
	_, err := s.Pull(ctx, api.PullImageRequest{Ref: ref}, func(ev api.Event) {
		if ev.Phase == "layer" {
			cancel()
		}
	})
	if err == nil {
		t.Fatal("cancelled pull succeeded")
	}
	// The flight finishes in the background after the last waiter left.
	s.pulls.mu.Lock()
	s.pulls.mu.Unlock()
	waitEmpty(t, l.Tmp())
	if imgs, _ := s.List(context.Background()); len(imgs) != 0 {
		t.Errorf("registered %v", imgs)
	}
}

func waitEmpty(t *testing.T, dir string) {
	t.Helper()
	for i := 0; i < 200; i++ {
		if e, _ := os.ReadDir(dir); len(e) == 0 {
			return
		}
		sleepMs(20)
	}
	assertEmpty(t, dir)
}

func TestRegister(t *testing.T) {
	s, _ := newTestStore(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "root")
	os.MkdirAll(filepath.Join(src, "etc"), 0o755)
	os.WriteFile(filepath.Join(src, "etc", "hostname"), []byte("reg\n"), 0o644)
	file := filepath.Join(dir, "rootfs.ext4")
	if out, err := exec.Command("mke2fs", "-q", "-t", "ext4", "-d", src, file, "16M").CombinedOutput(); err != nil {
		t.Fatalf("mke2fs: %v %s", err, out)
	}
	img, err := s.Register(context.Background(), api.RegisterImageRequest{Name: "mine", RootFS: file}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := catFile(t, img.RootFS, "/etc/hostname"); got != "reg\n" {
		t.Errorf("registered content %q", got)
	}
	if img.RootFS == file {
		t.Error("register must copy the file into the store")
	}
	notExt4 := filepath.Join(dir, "x.img")
	os.WriteFile(notExt4, bytes.Repeat([]byte{1}, 4096), 0o644)
	for _, tt := range []struct {
		req   api.RegisterImageRequest
		class error
	}{
		{api.RegisterImageRequest{Name: "bad", RootFS: notExt4}, errdefs.ErrInvalidArgument},
		{api.RegisterImageRequest{Name: "bad", RootFS: filepath.Join(dir, "missing")}, errdefs.ErrNotFound},
		{api.RegisterImageRequest{Name: "Bad Name", RootFS: file}, errdefs.ErrInvalidArgument},
		{api.RegisterImageRequest{Name: "bad", RootFS: "relative.ext4"}, errdefs.ErrInvalidArgument},
	} {
		if _, err := s.Register(context.Background(), tt.req, nil); errdefs.Class(err) != tt.class {
			t.Errorf("Register(%+v) = %v, want class %v", tt.req, err, tt.class)
		}
	}
	if imgs, _ := s.List(context.Background()); len(imgs) != 1 {
		t.Errorf("images: %v", imgs)
	}
}

func TestDebianMirror(t *testing.T) {
	deb822 := "Types: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm\n\nTypes: deb\nURIs: http://security.example/debian-security\n"
	if got := scanMirror(strings.NewReader(deb822), true); got != "http://mirror.example/debian" {
		t.Errorf("deb822: %q", got)
	}
	secFirst := "Types: deb-src\nURIs: http://src.example/\n\nTypes: deb\nURIs: http://security.example/debian-security\n\nTypes: deb\nURIs: http://m.example/debian\n"
	if got := scanMirror(strings.NewReader(secFirst), true); got != "http://m.example/debian" {
		t.Errorf("deb822 skipping: %q", got)
	}
	list := "# comment\ndeb [arch=amd64 signed-by=/x] http://archive.ubuntu.com/ubuntu jammy main\n"
	if got := scanMirror(strings.NewReader(list), false); got != "http://archive.ubuntu.com/ubuntu" {
		t.Errorf("list: %q", got)
	}
}

// TestPromote: a promoted image keeps its root filesystem and config
// through a re-pull of its reference (which updates only pulled images),
// is never replaced by a pull into its name, holds no blob in the cache,
// and survives image cache prune --all; --as promotes a copy and leaves
// the pulled image as it was; a local image is not promoted again.
func TestPromote(t *testing.T) {
	s, _ := newTestStore(t)
	reg := testutil.NewRegistry(t)
	ctx := context.Background()
	ref := reg.Push(t, base(t), "team/dev:1")
	pulled, err := s.Pull(ctx, api.PullImageRequest{Ref: ref, Name: "dev"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	pinned, err := s.Promote(ctx, api.PromoteImageRequest{Name: "dev", As: "dev-pinned"})
	if err != nil {
		t.Fatal(err)
	}
	if pinned.Source != SourcePromoted || pinned.RootFS != pulled.RootFS || pinned.Config.WorkingDir != "/home/user" || len(pinned.Layers) != 0 || !strings.HasPrefix(pinned.Ref, "promoted from ") {
		t.Errorf("promoted copy: %+v", pinned)
	}
	if still, _ := s.Get(ctx, "dev"); still.Source != "oci" || len(still.Layers) == 0 {
		t.Errorf("--as changed the pulled image: %+v", still)
	}
	// The reference moves on: a re-pull updates the pulled image only.
	ref2 := reg.Push(t, testutil.Image(t, v1.Config{}, testutil.Tar(t, testutil.TarEntry{Name: "etc/os-release", Body: "ID=v2\n"})), "team/dev:1")
	if ref2 != ref {
		t.Fatalf("pushed %s, want the same reference %s", ref2, ref)
	}
	repulled, err := s.Pull(ctx, api.PullImageRequest{Ref: ref, Name: "dev"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if repulled.RootFS == pulled.RootFS {
		t.Fatal("the re-pull did not change the pulled image: the test proves nothing")
	}
	if got := catFile(t, pinned.RootFS, "/etc/os-release"); got != "ID=banger-test\n" {
		t.Errorf("promoted image's rootfs after the re-pull: os-release %q", got)
	}
	// A pull into a promoted name is refused, before and after promotion
	// in place.
	if _, err := s.Pull(ctx, api.PullImageRequest{Ref: ref, Name: "dev-pinned"}, nil); !errdefs.IsAlreadyExists(err) || !strings.Contains(err.Error(), "promoted") {
		t.Errorf("pull into a promoted name: %v", err)
	}
	if _, err := s.Promote(ctx, api.PromoteImageRequest{Name: "dev"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Pull(ctx, api.PullImageRequest{Ref: ref, Name: "dev"}, nil); !errdefs.IsAlreadyExists(err) {
		t.Errorf("pull into an image promoted in place: %v", err)
	}
	// Nothing holds the cache any more; pruning it all leaves both
	// promoted images bootable.
	if _, err := s.PruneCache(ctx, api.PruneCacheRequest{All: true}); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"dev", "dev-pinned"} {
		img, err := s.Get(ctx, n)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(img.RootFS); err != nil {
			t.Errorf("%s's rootfs after prune --all: %v", n, err)
		}
	}
	for _, tc := range []struct {
		req   api.PromoteImageRequest
		class error
	}{
		{api.PromoteImageRequest{Name: "dev"}, errdefs.ErrFailedPrecondition},              // already local
		{api.PromoteImageRequest{Name: "nope"}, errdefs.ErrNotFound},                       // no such image
		{api.PromoteImageRequest{Name: "dev", As: "Bad Name"}, errdefs.ErrInvalidArgument}, // name
	} {
		if _, err := s.Promote(ctx, tc.req); errdefs.Class(err) != tc.class {
			t.Errorf("Promote(%+v): %v, want %v", tc.req, err, tc.class)
		}
	}
}
