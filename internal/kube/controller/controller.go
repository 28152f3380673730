// Package controller runs each Sandbox (internal/kube/api) in its own
// launcher Pod: it makes the Pod (owned by the Sandbox, so deleting the
// Sandbox deletes it), sizes its requests from the VM, mirrors its state
// into the Sandbox's status, and deletes Sandboxes whose TTL ran out.
// Placement is the Kubernetes scheduler's. A Pod is found by its fixed name
// (PodName), so a restarted controller adopts the Pods it made.
package controller

import (
	"context"
	"fmt"
	"reflect"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/bangervm/banger/internal/kube/api"
)

// Reconciler keeps one launcher Pod per Sandbox.
type Reconciler struct {
	Client client.Client
	// APIReader reads past the cache; it confirms a Pod is really gone.
	APIReader client.Reader
	Launcher  Launcher
	// Now is the clock for TTLs; time.Now when nil.
	Now func() time.Time
}

// Setup registers r with mgr, watching Sandboxes and the Pods they own.
func (r *Reconciler) Setup(mgr ctrl.Manager) error {
	if r.Client == nil {
		r.Client = mgr.GetClient()
	}
	if r.APIReader == nil {
		r.APIReader = mgr.GetAPIReader()
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named("sandbox").
		For(&api.Sandbox{}).
		Owns(&corev1.Pod{}).
		Complete(r)
}

func (r *Reconciler) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// CacheOptions keeps the controller's cache to the Pods it made (by their
// managed-by label) instead of every Pod of the cluster; namespaces, when
// given, limits it to those.
func CacheOptions(namespaces ...string) cache.Options {
	o := cache.Options{ByObject: map[client.Object]cache.ByObject{
		&corev1.Pod{}: {Label: labels.SelectorFromSet(labels.Set{LabelManagedBy: managedBy})},
	}}
	if len(namespaces) > 0 {
		o.DefaultNamespaces = map[string]cache.Config{}
		for _, ns := range namespaces {
			o.DefaultNamespaces[ns] = cache.Config{}
		}
	}
	return o
}

// Reconcile brings one Sandbox's Pod and status in line.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var sb api.Sandbox
	if err := r.Client.Get(ctx, req.NamespacedName, &sb); err != nil {
		// Gone: the garbage collector deletes its Pod through the
		// owner reference.
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if sb.DeletionTimestamp != nil {
		return ctrl.Result{}, nil
	}
	var requeue time.Duration
	if at, ok := Expiry(&sb); ok {
		if left := at.Sub(r.now()); left > 0 {
			requeue = left
		} else {
			err := r.Client.Delete(ctx, &sb, client.Preconditions{UID: &sb.UID})
			if err != nil && !apierrors.IsNotFound(err) {
				return ctrl.Result{}, fmt.Errorf("delete expired sandbox %s: %w", req, err)
			}
			return ctrl.Result{}, nil
		}
	}

	st, err := r.ensurePod(ctx, &sb)
	if err != nil {
		return ctrl.Result{}, err
	}
	if !reflect.DeepEqual(st, sb.Status) {
		sb.Status = st
		if err := r.Client.Status().Update(ctx, &sb); err != nil {
			return ctrl.Result{}, fmt.Errorf("update status of sandbox %s: %w", req, err)
		}
	}
	return ctrl.Result{RequeueAfter: requeue}, nil
}

// ensurePod finds or makes sb's Pod and returns the status it implies.
func (r *Reconciler) ensurePod(ctx context.Context, sb *api.Sandbox) (api.SandboxStatus, error) {
	name := types.NamespacedName{Namespace: sb.Namespace, Name: PodName(sb)}
	var pod corev1.Pod
	err := r.Client.Get(ctx, name, &pod)
	switch {
	case err == nil:
		if !metav1.IsControlledBy(&pod, sb) {
			return api.SandboxStatus{Phase: api.PhaseFailed, Reason: ReasonPodTaken,
				Message: fmt.Sprintf("pod %s exists and is not this sandbox's: delete or rename it", name.Name)}, nil
		}
		return StatusFromPod(&pod), nil
	case !apierrors.IsNotFound(err):
		return api.SandboxStatus{}, fmt.Errorf("get pod %s: %w", name, err)
	}
	if sb.Status.PodName != "" {
		// The cache may not have seen a Pod made a moment ago.
		err := r.APIReader.Get(ctx, name, &pod)
		if err == nil {
			return api.SandboxStatus{}, fmt.Errorf("pod %s not in the cache yet", name)
		}
		if !apierrors.IsNotFound(err) {
			return api.SandboxStatus{}, fmt.Errorf("get pod %s: %w", name, err)
		}
		// The Pod existed and is gone: so is the VM in it. Making a new
		// one would boot a fresh VM under the old name.
		return api.SandboxStatus{Phase: api.PhaseFailed, Node: sb.Status.Node, PodName: sb.Status.PodName,
			Reason: ReasonPodGone, Message: "the launcher pod was deleted; delete the sandbox and create it again"}, nil
	}
	want, err := RenderPod(sb, r.Launcher)
	if err != nil {
		return api.SandboxStatus{Phase: api.PhaseFailed, Reason: ReasonInvalid, Message: err.Error()}, nil
	}
	if err := r.Client.Create(ctx, want); err != nil {
		if apierrors.IsAlreadyExists(err) {
			// The cache holds only the controller's own Pods
			// (CacheOptions): a Pod of that name may be someone else's.
			if err := r.APIReader.Get(ctx, name, &pod); err == nil && !metav1.IsControlledBy(&pod, sb) {
				return api.SandboxStatus{Phase: api.PhaseFailed, Reason: ReasonPodTaken,
					Message: fmt.Sprintf("pod %s exists and is not this sandbox's: delete or rename it", name.Name)}, nil
			}
		}
		return api.SandboxStatus{}, fmt.Errorf("create pod %s: %w", name, err)
	}
	return StatusFromPod(want), nil
}
