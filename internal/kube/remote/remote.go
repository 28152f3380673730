// Package remote serves banger's local API (the routes of package api, as
// internal/apiserver serves them for bangerd) on top of a Kubernetes
// cluster, so the CLI's client works unchanged on a cluster context. It
// runs in the CLI's process (see InProcess) with the user's kubeconfig and
// RBAC:
//
//   - /v1/vms list, get, create, delete and prune act on Sandbox objects in
//     one namespace; create streams the launcher Pod's progress (scheduled,
//     pulling, started, ready) until the Pod is Ready, and rolls back (deletes
//     the Sandbox) when it fails or the caller goes away.
//   - every other /v1/vms/{ref}/... route (exec, archive, logs, stats,
//     ports, workspace) is reverse-proxied to the launcher's own API over a
//     connection made by exec'ing `banger-launcher api` in the Pod
//     (internal/kube/podexec): the Pod opens no port.
//   - image, kernel, template, engine and daemon routes answer a clear
//     "not available on a cluster context" error.
package remote

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/rest"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/apiserver"
	"github.com/bangervm/banger/internal/buildinfo"
	kapi "github.com/bangervm/banger/internal/kube/api"
	"github.com/bangervm/banger/internal/kube/controller"
	"github.com/bangervm/banger/internal/kube/podexec"
)

// Config wires a handler.
type Config struct {
	REST *rest.Config
	// Namespace holds the context's Sandboxes.
	Namespace string
	// Context names the banger context, for messages.
	Context string
	// DefaultImage is the image of a create request that names none.
	DefaultImage string
	// Poll is how often create and delete look at the cluster while they
	// wait; 500ms when zero.
	Poll time.Duration
}

type server struct {
	c    Config
	log  *slog.Logger // discards: the CLI prints, never logs
	kube *kube
	// dial connects to the launcher API in t.
	dial func(ctx context.Context, t target) (net.Conn, error)
}

// New returns the API handler for the cluster and namespace of c.
func New(c Config) (http.Handler, error) {
	if c.Poll == 0 {
		c.Poll = 500 * time.Millisecond
	}
	k, err := newKube(c.REST, c.Namespace)
	if err != nil {
		return nil, err
	}
	s := &server{c: c, kube: k, log: slog.New(slog.DiscardHandler), dial: func(ctx context.Context, t target) (net.Conn, error) {
		return podexec.Dial(ctx, c.REST, t.Namespace, t.Pod, t.Container)
	}}
	return s.routes(), nil
}

func (s *server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+api.PathVersion, func(w http.ResponseWriter, r *http.Request) {
		apiserver.WriteJSON(w, api.VersionInfo{Version: buildinfo.Version, Commit: buildinfo.Commit, BuildTime: buildinfo.BuildTime, APIVersion: api.Version})
	})
	mux.HandleFunc("GET "+api.PathVMs, s.listVMs)
	mux.HandleFunc("POST "+api.PathVMs, s.createVM)
	mux.HandleFunc("POST "+api.PathVMPrune, s.pruneVMs)
	mux.HandleFunc("GET "+api.PathVM+"{ref}", s.getVM)
	mux.HandleFunc("DELETE "+api.PathVM+"{ref}", s.deleteVM)
	mux.HandleFunc("PATCH "+api.PathVM+"{ref}", s.unavailable("vm set", whyResize))
	// Stop and start set the Sandbox's spec.running (see stop). Kill
	// has no cluster form: the launcher always stops the VM cleanly.
	mux.HandleFunc("POST "+api.PathVM+"{ref}/"+api.ActionStop, func(w http.ResponseWriter, r *http.Request) {
		v, err := s.stop(r.Context(), r.PathValue("ref"))
		apiserver.Reply(w, v, err)
	})
	mux.HandleFunc("POST "+api.PathVM+"{ref}/"+api.ActionStart, func(w http.ResponseWriter, r *http.Request) {
		apiserver.Stream(w, r, s.log, func(ctx context.Context, progress func(api.Event)) (api.VM, error) {
			return s.start(ctx, r.PathValue("ref"), progress)
		})
	})
	mux.HandleFunc("POST "+api.PathVM+"{ref}/"+api.ActionRestart, func(w http.ResponseWriter, r *http.Request) {
		apiserver.Stream(w, r, s.log, func(ctx context.Context, progress func(api.Event)) (api.VM, error) {
			if _, err := s.stop(ctx, r.PathValue("ref")); err != nil {
				return api.VM{}, err
			}
			return s.start(ctx, r.PathValue("ref"), progress)
		})
	})
	mux.HandleFunc("POST "+api.PathVM+"{ref}/"+api.ActionKill, s.unavailable("vm kill", whyKill))
	mux.HandleFunc(api.PathVM+"{ref}/{rest...}", s.proxy)
	// A forward listens on the daemon's host; inside a launcher Pod it
	// would reach no one.
	mux.HandleFunc(api.PathVM+"{ref}/"+api.ActionForwards, s.unavailable("vm forward", whyFwd))
	mux.HandleFunc(api.PathVM+"{ref}/"+api.ActionForwards+"/{port}", s.unavailable("vm forward", whyFwd))
	for _, p := range []string{api.PathImages, api.PathImage, api.PathImagePull, api.PathImageRegister, api.PathImagePromote, api.PathImageCache, api.PathImageCachePrune} {
		mux.HandleFunc(p, s.unavailable("images", whyLocal))
	}
	for _, p := range []string{api.PathKernels, api.PathKernel, api.PathKernelImport, api.PathKernelPull} {
		mux.HandleFunc(p, s.unavailable("kernels", whyLocal))
	}
	for _, p := range []string{api.PathTemplates, api.PathTemplate, api.PathTemplatePrune} {
		mux.HandleFunc(p, s.unavailable("templates", whyLocal))
	}
	mux.HandleFunc(api.PathEngine, s.unavailable("banger engine", whyLocal))
	mux.HandleFunc(api.PathNetwork, s.unavailable("host networking", whyLocal))
	mux.HandleFunc(api.PathShutdown, s.unavailable("daemon shutdown", whyLocal))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(api.HeaderVersion, api.Version)
		mux.ServeHTTP(w, r)
	})
}

// Why routes are unavailable on a cluster.
const (
	whyLocal  = "they belong to the local daemon: banger --context local ... reaches it; a cluster's VMs boot OCI images by reference (--image REF) in their own Pods"
	whyResize = "a Sandbox's size is fixed: delete the VM and create it again with --vcpu and --memory"
	whyKill   = "banger vm stop stops a cluster's VM, and its launcher always syncs the guest first"
	whyFwd    = "a forward listens on the daemon's host, and a launcher Pod's ports reach no one outside the cluster"
)

func (s *server) unavailable(what, why string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		apiserver.WriteError(w, fmt.Errorf("%s: not available on a cluster context (context %s): %s: %w", what, s.c.Context, why, errdefs.ErrFailedPrecondition))
	}
}

// vms returns every VM of the namespace with its Sandbox.
func (s *server) vms(ctx context.Context) ([]api.VM, []kapi.Sandbox, error) {
	sbs, err := s.kube.listSandboxes(ctx)
	if err != nil {
		return nil, nil, err
	}
	pods, err := s.kube.launcherPods(ctx)
	if err != nil {
		return nil, nil, err
	}
	vms := make([]api.VM, 0, len(sbs))
	for i := range sbs {
		pod := pods[sbs[i].Name]
		if pod != nil && !isOwnPod(pod, &sbs[i]) {
			pod = nil
		}
		vms = append(vms, VMFromSandbox(&sbs[i], pod))
	}
	return vms, sbs, nil
}

func isOwnPod(pod *corev1.Pod, sb *kapi.Sandbox) bool {
	for _, o := range pod.OwnerReferences {
		if o.UID == sb.UID && o.Controller != nil && *o.Controller {
			return true
		}
	}
	return false
}

func (s *server) listVMs(w http.ResponseWriter, r *http.Request) {
	sel, err := api.ParseLabels(r.URL.Query()[api.QueryLabel])
	if err != nil {
		apiserver.WriteError(w, err)
		return
	}
	all, _, err := s.vms(r.Context())
	out := []api.VM{}
	for _, v := range all {
		if api.MatchLabels(v.Labels, sel) {
			out = append(out, v)
		}
	}
	apiserver.Reply(w, out, err)
}

// validName is a Kubernetes object name; anything else can only be an id
// (prefix).
var validName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$`)

// resolve finds the Sandbox ref names: by name, else by unique UID prefix
// (banger's VM ids on a cluster are the Sandboxes' UIDs).
func (s *server) resolve(ctx context.Context, ref string) (*kapi.Sandbox, error) {
	if validName.MatchString(ref) {
		sb, err := s.kube.getSandbox(ctx, ref)
		if err == nil || !errdefs.IsNotFound(err) {
			return sb, err
		}
	}
	sbs, err := s.kube.listSandboxes(ctx)
	if err != nil {
		return nil, err
	}
	var found *kapi.Sandbox
	for i := range sbs {
		if ref != "" && strings.HasPrefix(string(sbs[i].UID), ref) {
			if found != nil {
				return nil, fmt.Errorf("vm %q: the id prefix matches more than one vm: give more of it: %w", ref, errdefs.ErrInvalidArgument)
			}
			found = &sbs[i]
		}
	}
	if found == nil {
		return nil, fmt.Errorf("vm %q: no such vm in namespace %s of context %s: %w", ref, s.c.Namespace, s.c.Context, errdefs.ErrNotFound)
	}
	return found, nil
}

// get returns ref's Sandbox, its Pod (nil without one) and its VM.
func (s *server) get(ctx context.Context, ref string) (*kapi.Sandbox, *corev1.Pod, api.VM, error) {
	sb, err := s.resolve(ctx, ref)
	if err != nil {
		return nil, nil, api.VM{}, err
	}
	pod, err := s.kube.launcherPod(ctx, sb)
	if err != nil {
		return nil, nil, api.VM{}, err
	}
	return sb, pod, VMFromSandbox(sb, pod), nil
}

func (s *server) getVM(w http.ResponseWriter, r *http.Request) {
	_, _, v, err := s.get(r.Context(), r.PathValue("ref"))
	apiserver.Reply(w, v, err)
}

func (s *server) createVM(w http.ResponseWriter, r *http.Request) {
	var req api.CreateVMRequest
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		apiserver.WriteError(w, fmt.Errorf("request body: %v: %w", err, errdefs.ErrInvalidArgument))
		return
	}
	if req.Image == "" {
		req.Image = s.c.DefaultImage
	}
	sb, err := SandboxFromRequest(req, s.c.Namespace)
	if err != nil {
		apiserver.WriteError(w, err)
		return
	}
	apiserver.Stream(w, r, s.log, func(ctx context.Context, progress func(api.Event)) (api.VM, error) {
		return s.create(ctx, sb, req.NoStart, progress)
	})
}

func (s *server) deleteVM(w http.ResponseWriter, r *http.Request) {
	force := r.URL.Query().Get("force") == "1"
	apiserver.Reply(w, struct{}{}, s.delete(r.Context(), r.PathValue("ref"), force))
}

func (s *server) pruneVMs(w http.ResponseWriter, r *http.Request) {
	var req api.PruneVMsRequest
	if r.ContentLength != 0 {
		if err := json.NewDecoder(http.MaxBytesReader(nil, r.Body, 1<<20)).Decode(&req); err != nil {
			apiserver.WriteError(w, fmt.Errorf("request body: %v: %w", err, errdefs.ErrInvalidArgument))
			return
		}
	}
	if err := api.ValidateLabels(req.Labels); err != nil {
		apiserver.WriteError(w, err)
		return
	}
	v, err := s.prune(r.Context(), req.Labels)
	apiserver.Reply(w, v, err)
}

// target is a container whose launcher API podexec reaches.
type target struct {
	Namespace, Pod, Container string
}

// podTarget is the launcher container of pod.
func podTarget(pod *corev1.Pod) target {
	return target{Namespace: pod.Namespace, Pod: pod.Name, Container: controller.ContainerName}
}
