// Package apiserver serves bangerd's local API: it decodes requests, checks
// the caller and the protocol version, calls the domain through small
// interfaces, and encodes results, errors and progress streams. It holds no
// logic of its own, so it is tested against fakes.
package apiserver

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sort"
	"sync"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/safesocket"
)

// Images is what the API needs of the image store.
type Images interface {
	List(ctx context.Context) ([]api.Image, error)
	Get(ctx context.Context, name string) (api.Image, error)
	Delete(ctx context.Context, name string) error
	Pull(ctx context.Context, req api.PullImageRequest, progress func(api.Event)) (api.Image, error)
	Register(ctx context.Context, req api.RegisterImageRequest, progress func(api.Event)) (api.Image, error)
	Promote(ctx context.Context, req api.PromoteImageRequest) (api.Image, error)
	Cache(ctx context.Context) ([]api.CachedBlob, error)
	PruneCache(ctx context.Context, req api.PruneCacheRequest) (api.PruneCacheResult, error)
}

// Kernels is what the API needs of the kernel store.
type Kernels interface {
	List(ctx context.Context) ([]api.Kernel, error)
	Get(ctx context.Context, name string) (api.Kernel, error)
	Delete(ctx context.Context, name string) error
	Import(ctx context.Context, req api.ImportKernelRequest, progress func(api.Event)) (api.Kernel, error)
	Pull(ctx context.Context, req api.PullKernelRequest, progress func(api.Event)) (api.Kernel, error)
}

// Templates is what the API needs of the VM template store.
type Templates interface {
	Templates(ctx context.Context) ([]api.Template, error)
	RemoveTemplate(ctx context.Context, id string) error
	PruneTemplates(ctx context.Context) (api.PruneTemplatesResult, error)
}

// Config wires a Server.
type Config struct {
	Images  Images
	Kernels Kernels
	VMs     VMs
	// Templates is nil when the daemon keeps none.
	Templates Templates
	Engine    api.EngineInfo
	Network   api.NetworkInfo
	Version   api.VersionInfo
	Shutdown  func() // called by POST /v1/shutdown
	Log       *slog.Logger
}

// New returns the API handler.
func New(c Config) http.Handler {
	s := &server{c: c, ops: map[*http.Request]string{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+api.PathVersion, s.version)
	mux.HandleFunc("POST "+api.PathShutdown, s.shutdown)
	mux.HandleFunc("GET "+api.PathEngine, func(w http.ResponseWriter, r *http.Request) { writeJSON(w, s.c.Engine) })
	mux.HandleFunc("GET "+api.PathNetwork, func(w http.ResponseWriter, r *http.Request) { writeJSON(w, s.c.Network) })
	mux.HandleFunc("GET "+api.PathImages, s.listImages)
	mux.HandleFunc("GET "+api.PathImage+"{name}", s.getImage)
	mux.HandleFunc("DELETE "+api.PathImage+"{name}", s.deleteImage)
	mux.HandleFunc("POST "+api.PathImagePull, s.pullImage)
	mux.HandleFunc("POST "+api.PathImagePromote, s.promoteImage)
	mux.HandleFunc("POST "+api.PathImageRegister, s.registerImage)
	mux.HandleFunc("GET "+api.PathImageCache, s.imageCache)
	mux.HandleFunc("POST "+api.PathImageCachePrune, s.pruneImageCache)
	mux.HandleFunc("GET "+api.PathKernels, s.listKernels)
	mux.HandleFunc("GET "+api.PathKernel+"{name}", s.getKernel)
	mux.HandleFunc("DELETE "+api.PathKernel+"{name}", s.deleteKernel)
	mux.HandleFunc("POST "+api.PathKernelImport, s.importKernel)
	mux.HandleFunc("POST "+api.PathKernelPull, s.pullKernel)
	if c.VMs != nil {
		s.routeVMs(mux)
	}
	if c.Templates != nil {
		mux.HandleFunc("GET "+api.PathTemplates, s.listTemplates)
		mux.HandleFunc("DELETE "+api.PathTemplate+"{id}", s.removeTemplate)
		mux.HandleFunc("POST "+api.PathTemplatePrune, s.pruneTemplates)
	}
	return s.checkVersion(s.trackOperations(mux))
}

type server struct {
	c Config

	mu  sync.Mutex
	ops map[*http.Request]string // in flight, see trackOperations
}

// trackOperations records every request that may change something (all
// but GET and shutdown) while it runs, so the version answer can say what
// a restart would cut short.
func (s *server) trackOperations(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet || r.URL.Path == api.PathShutdown {
			next.ServeHTTP(w, r)
			return
		}
		s.mu.Lock()
		s.ops[r] = r.Method + " " + r.URL.Path
		s.mu.Unlock()
		defer func() {
			s.mu.Lock()
			delete(s.ops, r)
			s.mu.Unlock()
		}()
		next.ServeHTTP(w, r)
	})
}

func (s *server) operations() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	ops := make([]string, 0, len(s.ops))
	for _, op := range s.ops {
		ops = append(ops, op)
	}
	sort.Strings(ops)
	return ops
}

// checkVersion refuses requests from a client that speaks another protocol
// version, naming both so the user knows which side to update.
func (s *server) checkVersion(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		want := s.c.Version.APIVersion
		w.Header().Set(api.HeaderVersion, want)
		if v := r.Header.Get(api.HeaderVersion); v != want {
			writeError(w, fmt.Errorf("bangerd %s speaks API v%s but this banger speaks v%s: use a banger CLI of the same version as the daemon, or stop the daemon (banger daemon stop) so the CLI starts its own: %w",
				s.c.Version.Version, want, v, errdefs.ErrVersionMismatch))
			return
		}
		next.ServeHTTP(w, r)
	})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(api.Status(err))
	json.NewEncoder(w).Encode(api.ErrorFrom(err))
}

func reply[T any](w http.ResponseWriter, v T, err error) {
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, v)
}

func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("request body: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	return nil
}

// stream runs op, sending its progress as JSON lines and finishing with
// its result or error. The request's context is cancelled when the client
// goes away, which cancels op.
func stream[T any](w http.ResponseWriter, r *http.Request, log *slog.Logger, op func(ctx context.Context, progress func(api.Event)) (T, error)) {
	w.Header().Set("Content-Type", api.StreamContentType)
	w.WriteHeader(http.StatusOK)
	fl, _ := w.(http.Flusher)
	var mu sync.Mutex
	enc := json.NewEncoder(w)
	send := func(ev api.Event) {
		mu.Lock()
		defer mu.Unlock()
		if enc.Encode(ev) == nil && fl != nil {
			fl.Flush()
		}
	}
	res, err := op(r.Context(), func(ev api.Event) {
		ev.Type = api.EventProgress
		send(ev)
	})
	if err != nil {
		if r.Context().Err() != nil && !errdefs.IsCanceled(err) {
			err = fmt.Errorf("%w: %w", errdefs.ErrCanceled, err)
		}
		log.Info("operation failed", "op", r.URL.Path, "err", err)
		send(api.Event{Type: api.EventError, Error: api.ErrorFrom(err)})
		return
	}
	b, err := json.Marshal(res)
	if err != nil {
		send(api.Event{Type: api.EventError, Error: api.ErrorFrom(err)})
		return
	}
	send(api.Event{Type: api.EventResult, Result: b})
}

func (s *server) version(w http.ResponseWriter, r *http.Request) {
	v := s.c.Version
	v.Operations = s.operations()
	writeJSON(w, v)
}

func (s *server) shutdown(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, struct{}{})
	if s.c.Shutdown != nil {
		go s.c.Shutdown()
	}
}

func (s *server) listImages(w http.ResponseWriter, r *http.Request) {
	v, err := s.c.Images.List(r.Context())
	if v == nil {
		v = []api.Image{}
	}
	reply(w, v, err)
}

func (s *server) getImage(w http.ResponseWriter, r *http.Request) {
	v, err := s.c.Images.Get(r.Context(), r.PathValue("name"))
	reply(w, v, err)
}

func (s *server) deleteImage(w http.ResponseWriter, r *http.Request) {
	reply(w, struct{}{}, s.c.Images.Delete(r.Context(), r.PathValue("name")))
}

func (s *server) promoteImage(w http.ResponseWriter, r *http.Request) {
	var req api.PromoteImageRequest
	if err := decode(r, &req); err != nil {
		writeError(w, err)
		return
	}
	v, err := s.c.Images.Promote(r.Context(), req)
	reply(w, v, err)
}

func (s *server) pullImage(w http.ResponseWriter, r *http.Request) {
	var req api.PullImageRequest
	if err := decode(r, &req); err != nil {
		writeError(w, err)
		return
	}
	stream(w, r, s.c.Log, func(ctx context.Context, p func(api.Event)) (api.Image, error) {
		return s.c.Images.Pull(ctx, req, p)
	})
}

func (s *server) registerImage(w http.ResponseWriter, r *http.Request) {
	var req api.RegisterImageRequest
	if err := decode(r, &req); err != nil {
		writeError(w, err)
		return
	}
	stream(w, r, s.c.Log, func(ctx context.Context, p func(api.Event)) (api.Image, error) {
		return s.c.Images.Register(ctx, req, p)
	})
}

func (s *server) imageCache(w http.ResponseWriter, r *http.Request) {
	v, err := s.c.Images.Cache(r.Context())
	if v == nil {
		v = []api.CachedBlob{}
	}
	reply(w, v, err)
}

func (s *server) pruneImageCache(w http.ResponseWriter, r *http.Request) {
	var req api.PruneCacheRequest
	if err := decode(r, &req); err != nil {
		writeError(w, err)
		return
	}
	v, err := s.c.Images.PruneCache(r.Context(), req)
	reply(w, v, err)
}

func (s *server) listKernels(w http.ResponseWriter, r *http.Request) {
	v, err := s.c.Kernels.List(r.Context())
	if v == nil {
		v = []api.Kernel{}
	}
	reply(w, v, err)
}

func (s *server) getKernel(w http.ResponseWriter, r *http.Request) {
	v, err := s.c.Kernels.Get(r.Context(), r.PathValue("name"))
	reply(w, v, err)
}

func (s *server) deleteKernel(w http.ResponseWriter, r *http.Request) {
	reply(w, struct{}{}, s.c.Kernels.Delete(r.Context(), r.PathValue("name")))
}

func (s *server) importKernel(w http.ResponseWriter, r *http.Request) {
	var req api.ImportKernelRequest
	if err := decode(r, &req); err != nil {
		writeError(w, err)
		return
	}
	stream(w, r, s.c.Log, func(ctx context.Context, p func(api.Event)) (api.Kernel, error) {
		return s.c.Kernels.Import(ctx, req, p)
	})
}

func (s *server) pullKernel(w http.ResponseWriter, r *http.Request) {
	var req api.PullKernelRequest
	if err := decode(r, &req); err != nil {
		writeError(w, err)
		return
	}
	stream(w, r, s.c.Log, func(ctx context.Context, p func(api.Event)) (api.Kernel, error) {
		return s.c.Kernels.Pull(ctx, req, p)
	})
}

// PeerCheck returns a ConnContext hook for http.Server that closes
// connections from anyone but root or the daemon's own user. The socket's
// 0600 mode already keeps others out; this holds even if the mode is
// loosened by mistake.
func PeerCheck(log *slog.Logger) func(ctx context.Context, c net.Conn) context.Context {
	self := os.Getuid()
	return func(ctx context.Context, c net.Conn) context.Context {
		if _, ok := c.(*net.UnixConn); !ok {
			return ctx
		}
		cred, err := safesocket.PeerCred(c)
		if err != nil || !safesocket.Allowed(cred.Uid, self) {
			log.Warn("refused connection", "uid", cred.Uid, "pid", cred.Pid, "err", err)
			c.Close()
		}
		return ctx
	}
}

func (s *server) listTemplates(w http.ResponseWriter, r *http.Request) {
	v, err := s.c.Templates.Templates(r.Context())
	if v == nil {
		v = []api.Template{}
	}
	reply(w, v, err)
}

func (s *server) removeTemplate(w http.ResponseWriter, r *http.Request) {
	reply(w, struct{}{}, s.c.Templates.RemoveTemplate(r.Context(), r.PathValue("id")))
}

func (s *server) pruneTemplates(w http.ResponseWriter, r *http.Request) {
	v, err := s.c.Templates.PruneTemplates(r.Context())
	reply(w, v, err)
}

// WriteJSON, WriteError, Reply and Stream answer as this package's
// handlers do; package kube/remote serves the same API on a cluster.
func WriteJSON(w http.ResponseWriter, v any)      { writeJSON(w, v) }
func WriteError(w http.ResponseWriter, err error) { writeError(w, err) }
func Reply[T any](w http.ResponseWriter, v T, err error) {
	reply(w, v, err)
}

// Stream is stream for handlers outside this package.
func Stream[T any](w http.ResponseWriter, r *http.Request, log *slog.Logger, op func(ctx context.Context, progress func(api.Event)) (T, error)) {
	stream(w, r, log, op)
}
