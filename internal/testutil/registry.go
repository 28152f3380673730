package testutil

import (
	"archive/tar"
	"bytes"
	"io"
	"log"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/crane"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Registry is go-containerregistry's in-process registry on 127.0.0.1,
// with hooks to count and tamper with what it serves.
type Registry struct {
	Addr string // host:port

	mu       sync.Mutex
	blobGets map[string]int
	tamper   map[string]func([]byte) []byte
	stall    map[string]chan struct{}
	srv      *http.Server
	ln       net.Listener
}

// NewRegistry starts a registry that lives as long as the test.
func NewRegistry(t testing.TB) *Registry {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &Registry{Addr: ln.Addr().String(), blobGets: map[string]int{}, tamper: map[string]func([]byte) []byte{}, stall: map[string]chan struct{}{}, ln: ln}
	inner := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	r.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if i := strings.Index(req.URL.Path, "/blobs/sha256:"); i >= 0 && req.Method == http.MethodGet {
			d := req.URL.Path[i+len("/blobs/"):]
			r.mu.Lock()
			r.blobGets[d]++
			f := r.tamper[d]
			hold := r.stall[d]
			r.mu.Unlock()
			if hold != nil {
				rec := &recorder{header: http.Header{}}
				inner.ServeHTTP(rec, req)
				w.Header().Set("Content-Length", strconv.Itoa(rec.body.Len()))
				w.WriteHeader(rec.code)
				w.Write(rec.body.Bytes()[:rec.body.Len()/2])
				w.(http.Flusher).Flush()
				select {
				case <-hold:
					w.Write(rec.body.Bytes()[rec.body.Len()/2:])
				case <-req.Context().Done():
				}
				return
			}
			if f != nil {
				rec := &recorder{header: http.Header{}}
				inner.ServeHTTP(rec, req)
				body := f(rec.body.Bytes())
				for k, v := range rec.header {
					if k != "Content-Length" {
						w.Header()[k] = v
					}
				}
				w.WriteHeader(rec.code)
				w.Write(body)
				return
			}
		}
		inner.ServeHTTP(w, req)
	})}
	go r.srv.Serve(ln)
	t.Cleanup(func() { r.srv.Close() })
	return r
}

// Serve serves the same registry on ln too (one inside a network
// namespace, for clients there) until the test ends, and returns ln's
// address. Push through Addr, pull through this one.
func (r *Registry) Serve(t testing.TB, ln net.Listener) string {
	srv := &http.Server{Handler: r.srv.Handler}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// Close stops the registry (to test a registry that is down).
func (r *Registry) Close() { r.srv.Close() }

// BlobGets returns how many times the blob was fetched.
func (r *Registry) BlobGets(digest string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.blobGets[digest]
}

// Tamper makes the registry pass the blob through f before serving it.
func (r *Registry) Tamper(digest string, f func([]byte) []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.tamper[digest] = f
}

// Stall makes the registry send half of the blob and then wait until the
// returned function is called (or the client goes away), to catch a pull
// in the middle of a layer.
func (r *Registry) Stall(digest string) (release func()) {
	ch := make(chan struct{})
	r.mu.Lock()
	r.stall[digest] = ch
	r.mu.Unlock()
	var once sync.Once
	return func() { once.Do(func() { close(ch) }) }
}

// Push pushes img as repo:tag and returns the full reference.
func (r *Registry) Push(t testing.TB, img v1.Image, repoTag string) string {
	t.Helper()
	ref := r.Addr + "/" + repoTag
	if err := crane.Push(img, ref); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	return ref
}

type recorder struct {
	header http.Header
	body   bytes.Buffer
	code   int
}

func (r *recorder) Header() http.Header         { return r.header }
func (r *recorder) Write(b []byte) (int, error) { return r.body.Write(b) }
func (r *recorder) WriteHeader(c int)           { r.code = c }

// TarEntry is one entry of a test layer.
type TarEntry struct {
	Name     string
	Type     byte // tar.TypeReg if zero
	Body     string
	Mode     int64
	UID, GID int
	Linkname string
	Xattrs   map[string]string
}

// Tar builds an uncompressed tar archive from entries.
func Tar(t testing.TB, entries ...TarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.Name, Typeflag: e.Type, Mode: e.Mode, Uid: e.UID, Gid: e.GID, Linkname: e.Linkname, Format: tar.FormatPAX}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Mode == 0 {
			h.Mode = 0o644
			if h.Typeflag == tar.TypeDir {
				h.Mode = 0o755
			}
		}
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.Body))
		}
		if len(e.Xattrs) > 0 {
			h.PAXRecords = map[string]string{}
			for k, v := range e.Xattrs {
				h.PAXRecords["SCHILY.xattr."+k] = v
			}
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			tw.Write([]byte(e.Body))
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// Image builds a linux/amd64 OCI image from uncompressed layer tars
// (gzip-compressed on push) with the given config.
func Image(t testing.TB, cfg v1.Config, layers ...[]byte) v1.Image {
	t.Helper()
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	for _, b := range layers {
		b := b
		l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil },
			tarball.WithMediaType(types.OCILayer))
		if err != nil {
			t.Fatal(err)
		}
		if img, err = mutate.AppendLayers(img, l); err != nil {
			t.Fatal(err)
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.Config = cfg
	cf.OS, cf.Architecture = "linux", "amd64"
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}
