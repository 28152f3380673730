package kubecluster

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"path"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// The images every test cluster has, made on the machine from Debian's
// static busybox: the cluster pulls nothing (pods use imagePullPolicy
// Never or IfNotPresent).
const (
	// PauseImage is containerd's sandbox image. busybox sleeping stands in
	// for the pause program: the sandbox's PID 1 only has to exist, and
	// containerd stops sandboxes with SIGKILL.
	PauseImage = "registry.k8s.io/pause:3.10"
	// BusyboxImage has /bin/busybox and the usual applet links (sh,
	// echo, cat, sleep, ...).
	BusyboxImage = "banger.test/busybox:1"
)

var busyboxApplets = []string{"sh", "echo", "cat", "sleep", "true", "false", "ls", "env", "id", "hostname", "wc", "head", "tail", "grep", "test", "["}

// busyboxLayer is a tar of /bin/busybox (the file at src) and its applet
// links.
func busyboxLayer(src string) ([]byte, error) {
	bin, err := os.ReadFile(src)
	if err != nil {
		return nil, fmt.Errorf("busybox for the test images: %w (apt-get install busybox-static)", err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	hdrs := []*tar.Header{
		{Name: "bin/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "tmp/", Typeflag: tar.TypeDir, Mode: 0o1777},
		{Name: "bin/busybox", Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(bin))},
	}
	for _, h := range hdrs {
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write(bin); err != nil {
				return nil, err
			}
		}
	}
	for _, a := range busyboxApplets {
		if err := tw.WriteHeader(&tar.Header{Name: path.Join("bin", a), Typeflag: tar.TypeSymlink, Linkname: "busybox", Mode: 0o777}); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func image(layer []byte, cfg v1.Config) (v1.Image, error) {
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(layer)), nil })
	if err != nil {
		return nil, err
	}
	img, err := mutate.AppendLayers(empty.Image, l)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.Config = cfg
	cf.OS, cf.Architecture = "linux", "amd64"
	return mutate.ConfigFile(img, cf)
}

// writeImages writes the pause and busybox images as one docker-save tar
// (what ctr images import reads) at dst, from the busybox binary at src.
func writeImages(dst, src string) error {
	layer, err := busyboxLayer(src)
	if err != nil {
		return err
	}
	env := []string{"PATH=/bin"}
	pause, err := image(layer, v1.Config{Entrypoint: []string{"/bin/busybox", "sleep", "2147483647"}, Env: env})
	if err != nil {
		return err
	}
	bb, err := image(layer, v1.Config{Cmd: []string{"sh"}, Env: env})
	if err != nil {
		return err
	}
	refs := map[name.Reference]v1.Image{}
	for ref, img := range map[string]v1.Image{PauseImage: pause, BusyboxImage: bb} {
		tag, err := name.NewTag(ref)
		if err != nil {
			return err
		}
		refs[tag] = img
	}
	if err := tarball.MultiRefWriteToFile(dst, refs); err != nil {
		return fmt.Errorf("write test images: %w", err)
	}
	return nil
}
