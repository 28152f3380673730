package remote

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"

	corev1 "k8s.io/api/core/v1"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/apiserver"
)

// launcherPath is the launcher's route for VM route rest of Sandbox name:
// inside its Pod the VM is called as the Sandbox is.
func launcherPath(name, rest string) string {
	return api.PathVM + name + "/" + rest
}

// proxy sends a /v1/vms/{ref}/... request to the launcher's API in the
// VM's Pod, over a connection exec'd there (one per request: one exec is
// one HTTP connection). Upgrades (exec) pass through.
func (s *server) proxy(w http.ResponseWriter, r *http.Request) {
	sb, pod, v, err := s.get(r.Context(), r.PathValue("ref"))
	if err != nil {
		apiserver.WriteError(w, err)
		return
	}
	if v.State == api.VMUnknown {
		// Its kubelet does not answer: an exec would hang.
		apiserver.WriteError(w, fmt.Errorf("vm %s is unknown (%s): try again when the node is back: %w", v.Name, v.Reason, errdefs.ErrUnavailable))
		return
	}
	if pod == nil || pod.Status.Phase != corev1.PodRunning || pod.DeletionTimestamp != nil {
		why := ""
		if v.Reason != "" {
			why = " (" + v.Reason + ")"
		}
		apiserver.WriteError(w, fmt.Errorf("vm %s is %s%s: its launcher does not run: %w", v.Name, v.State, why, errdefs.ErrFailedPrecondition))
		return
	}
	rest := r.PathValue("rest")
	var workspace *api.WorkspaceRequest
	if r.Method == http.MethodPut && rest == api.ActionWorkspace {
		// Recorded on the Sandbox too, once the launcher took it.
		b, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, 1<<20))
		workspace = &api.WorkspaceRequest{}
		if err == nil {
			err = json.Unmarshal(b, workspace)
		}
		if err != nil {
			apiserver.WriteError(w, fmt.Errorf("request body: %v: %w", err, errdefs.ErrInvalidArgument))
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(b))
	}
	rp := s.reverseProxy(podTarget(pod), launcherPath(sb.Name, rest), v.Name)
	if workspace != nil {
		rp.ModifyResponse = func(resp *http.Response) error {
			if resp.StatusCode >= 300 {
				return nil
			}
			ctx := resp.Request.Context()
			if err := s.kube.annotate(ctx, sb.Name, AnnotationWorkspace, workspace.Path); err != nil {
				return err
			}
			_, _, cur, err := s.get(ctx, sb.Name)
			if err != nil {
				return err
			}
			b, _ := json.Marshal(cur)
			resp.Body.Close()
			resp.Body = io.NopCloser(bytes.NewReader(b))
			resp.ContentLength = int64(len(b))
			resp.Header.Set("Content-Length", strconv.Itoa(len(b)))
			return nil
		}
	}
	rp.ServeHTTP(w, r)
}

// reverseProxy sends requests to path on the launcher API of t.
func (s *server) reverseProxy(t target, path, vm string) *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL = &url.URL{Scheme: "http", Host: "launcher", Path: path, RawQuery: pr.In.URL.RawQuery}
			pr.Out.Host = "launcher"
		},
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return s.dial(ctx, t)
			},
			DisableKeepAlives: true,
		},
		// Logs and streams reach the caller as they come.
		FlushInterval: -1,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if r.Context().Err() != nil {
				err = fmt.Errorf("%w: %w", errdefs.ErrCanceled, err)
			} else if errdefs.Class(err) == nil {
				err = fmt.Errorf("%w: %w", err, errdefs.ErrUnavailable)
			}
			apiserver.WriteError(w, fmt.Errorf("vm %s: the launcher's API in pod %s: %w", vm, t.Pod, err))
		},
	}
}
