// Package images builds banger's container images in Go from files on the
// machine, with no Docker and no registry: banger.dev/controller:dev (the
// static banger-controller), banger.dev/node:dev (the static banger-node)
// and banger.dev/launcher:dev (banger-launcher
// with QEMU, its libraries and firmware, e2fsprogs and a guest kernel),
// written as one docker-save tar that `ctr images import` reads. Tests
// import the tar into their cluster's containerd; `make kube-images` writes
// it into bin/.
package images

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// The images' names in tests (pulled with imagePullPolicy Never).
const (
	Launcher   = "banger.dev/launcher:dev"
	Controller = "banger.dev/controller:dev"
	Node       = "banger.dev/node:dev"
)

// Entry is one file, directory or symlink of a layer. A regular file's
// bytes come from Src (read when the layer is made; a symlink there is
// followed) or Data.
type Entry struct {
	Path string // inside the image, absolute or relative to /
	Dir  bool
	Link string // a symlink to this target
	Src  string
	Data []byte
	Mode int64 // 0: 0755 for directories and files from Src, 0644 for Data
}

// Layer is an uncompressed tar of entries, sorted by path, with each
// missing parent directory added (0755), every entry owned by root and
// dated 0, so the same files give the same bytes.
func Layer(entries []Entry) ([]byte, error) {
	byPath := map[string]Entry{}
	for _, e := range entries {
		p := strings.TrimPrefix(path.Clean("/"+e.Path), "/")
		if p == "" {
			continue
		}
		e.Path = p
		byPath[p] = e
		for d := path.Dir(p); d != "."; d = path.Dir(d) {
			if _, ok := byPath[d]; !ok {
				byPath[d] = Entry{Path: d, Dir: true}
			}
		}
	}
	names := make([]string, 0, len(byPath))
	for p := range byPath {
		names = append(names, p)
	}
	sort.Strings(names)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, p := range names {
		e := byPath[p]
		h := &tar.Header{Name: p, Mode: e.Mode, Format: tar.FormatPAX}
		var body []byte
		switch {
		case e.Dir:
			h.Typeflag, h.Name = tar.TypeDir, p+"/"
			if h.Mode == 0 {
				h.Mode = 0o755
			}
		case e.Link != "":
			h.Typeflag, h.Linkname, h.Mode = tar.TypeSymlink, e.Link, 0o777
		default:
			h.Typeflag = tar.TypeReg
			body = e.Data
			if e.Src != "" {
				b, err := os.ReadFile(e.Src)
				if err != nil {
					return nil, fmt.Errorf("image file /%s: %w", p, err)
				}
				body = b
				if h.Mode == 0 {
					h.Mode = 0o755
				}
			}
			if h.Mode == 0 {
				h.Mode = 0o644
			}
			h.Size = int64(len(body))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(body); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Image is a linux/amd64 image of one layer (an uncompressed tar) with the
// given config.
func Image(layer []byte, cfg v1.Config) (v1.Image, error) {
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

// WriteTar writes the images, by name (repo:tag), as one docker-save tar
// at path: what `ctr images import` and `docker load` read.
func WriteTar(path string, imgs map[string]v1.Image) error {
	refs := map[name.Reference]v1.Image{}
	for ref, img := range imgs {
		tag, err := name.NewTag(ref)
		if err != nil {
			return fmt.Errorf("image name %q: %w", ref, err)
		}
		refs[tag] = img
	}
	if err := tarball.MultiRefWriteToFile(path, refs); err != nil {
		return fmt.Errorf("write images to %s: %w", path, err)
	}
	return nil
}

// ControllerImage is banger-controller alone: bin must be static
// (CGO_ENABLED=0), as `make` builds it.
func ControllerImage(bin string) (v1.Image, error) {
	return staticImage("banger-controller", bin, "65534:65534")
}

// NodeImage is banger-node alone (static, as ControllerImage's binary),
// run as root: the kubelet's device plugin directory is root's (see
// deploy/kubernetes/node.yaml).
func NodeImage(bin string) (v1.Image, error) {
	return staticImage("banger-node", bin, "0:0")
}

// staticImage is one static binary at /usr/local/bin/NAME, its entrypoint,
// run as user.
func staticImage(name, bin, user string) (v1.Image, error) {
	layer, err := Layer([]Entry{
		{Path: "/usr/local/bin/" + name, Src: bin},
		{Path: "/etc/passwd", Data: []byte("root:x:0:0:root:/:/nonexistent\nnobody:x:65534:65534:nobody:/:/nonexistent\n")},
		{Path: "/tmp", Dir: true, Mode: 0o1777},
	})
	if err != nil {
		return nil, fmt.Errorf("%s image: %w", name, err)
	}
	return Image(layer, v1.Config{Entrypoint: []string{"/usr/local/bin/" + name}, User: user})
}

// Walk calls fn for each entry of the layers of the image ref in the
// docker-save tar at path, in order (what a test checks an image by).
func Walk(path, ref string, fn func(h *tar.Header, r io.Reader) error) error {
	tag, err := name.NewTag(ref)
	if err != nil {
		return err
	}
	img, err := tarball.ImageFromPath(path, &tag)
	if err != nil {
		return fmt.Errorf("%s in %s: %w", ref, path, err)
	}
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	for _, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			return err
		}
		tr := tar.NewReader(rc)
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err == nil {
				err = fn(h, tr)
			}
			if err != nil {
				rc.Close()
				return err
			}
		}
		rc.Close()
	}
	return nil
}
