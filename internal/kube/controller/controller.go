// Package controller runs each Sandbox (internal/kube/api) in its own
// launcher Pod, on a disk of its own: it makes the disk's
// PersistentVolumeClaim and the Pod (both owned by the Sandbox, so
// deleting the Sandbox deletes them), sizes the Pod's requests from the
// VM, deletes the Pod and keeps the claim while spec.running is false,
// mirrors the Pod's state into the Sandbox's status, and deletes Sandboxes
// whose TTL ran out. Placement is the Kubernetes scheduler's. Pods and
// claims are found by fixed names (PodName, ClaimName), so a restarted
// controller adopts what it made.
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
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

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

// podNodeField indexes the controller's Pods by the node they run on.
const podNodeField = "spec.nodeName"

// Setup registers r with mgr, watching Sandboxes, the Pods and claims
// they own, and the Ready condition of the nodes their Pods run on.
func (r *Reconciler) Setup(mgr ctrl.Manager) error {
	if r.Client == nil {
		r.Client = mgr.GetClient()
	}
	if r.APIReader == nil {
		r.APIReader = mgr.GetAPIReader()
	}
	err := mgr.GetFieldIndexer().IndexField(context.Background(), &corev1.Pod{}, podNodeField, func(o client.Object) []string {
		if n := o.(*corev1.Pod).Spec.NodeName; n != "" {
			return []string{n}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("index pods by node: %w", err)
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named("sandbox").
		For(&api.Sandbox{}).
		Owns(&corev1.Pod{}).
		Owns(&corev1.PersistentVolumeClaim{}).
		Watches(&corev1.Node{}, handler.EnqueueRequestsFromMapFunc(r.sandboxesOn), builder.WithPredicates(readyChanged)).
		Complete(r)
}

// readyChanged passes node events that can change a Sandbox's phase: a
// node's Ready condition changing, and a node going; not the heartbeats
// a node's status carries.
var readyChanged = predicate.Funcs{
	CreateFunc: func(event.CreateEvent) bool { return true },
	DeleteFunc: func(event.DeleteEvent) bool { return true },
	UpdateFunc: func(e event.UpdateEvent) bool {
		return nodeReady(e.ObjectOld) != nodeReady(e.ObjectNew)
	},
	GenericFunc: func(event.GenericEvent) bool { return false },
}

func nodeReady(o client.Object) corev1.ConditionStatus {
	n, ok := o.(*corev1.Node)
	if !ok {
		return ""
	}
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status
		}
	}
	return ""
}

// sandboxesOn maps a node to the Sandboxes whose launcher Pods it runs.
func (r *Reconciler) sandboxesOn(ctx context.Context, o client.Object) []reconcile.Request {
	var pods corev1.PodList
	if err := r.Client.List(ctx, &pods, client.MatchingFields{podNodeField: o.GetName()}); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "list pods on node", "node", o.GetName())
		return nil
	}
	var reqs []reconcile.Request
	for _, p := range pods.Items {
		if owner := metav1.GetControllerOf(&p); owner != nil && owner.Kind == api.Kind {
			reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: p.Namespace, Name: owner.Name}})
		}
	}
	return reqs
}

func (r *Reconciler) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// CacheOptions keeps the controller's cache to the Pods and claims it made
// (by their managed-by label) instead of every one of the cluster;
// namespaces, when given, limits it to those.
func CacheOptions(namespaces ...string) cache.Options {
	mine := cache.ByObject{Label: labels.SelectorFromSet(labels.Set{LabelManagedBy: managedBy})}
	o := cache.Options{ByObject: map[client.Object]cache.ByObject{
		&corev1.Pod{}:                   mine,
		&corev1.PersistentVolumeClaim{}: mine,
		// Every node is watched (for its Ready condition); the images a
		// node lists are most of its size and of no use here.
		&corev1.Node{}: {Transform: func(o any) (any, error) {
			if n, ok := o.(*corev1.Node); ok {
				n.Status.Images = nil
			}
			return o, nil
		}},
	}}
	if len(namespaces) > 0 {
		o.DefaultNamespaces = map[string]cache.Config{}
		for _, ns := range namespaces {
			o.DefaultNamespaces[ns] = cache.Config{}
		}
	}
	return o
}

// Reconcile brings one Sandbox's claim, Pod and status in line.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var sb api.Sandbox
	if err := r.Client.Get(ctx, req.NamespacedName, &sb); err != nil {
		// Gone: the garbage collector deletes its Pod and claim through
		// their owner references.
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

	st, err := r.ensureClaim(ctx, &sb)
	if err == nil && st == nil {
		if sb.Spec.IsRunning() {
			st, err = r.ensurePod(ctx, &sb)
		} else {
			st, err = r.stopPod(ctx, &sb)
		}
		if st != nil {
			st.ClaimName = ClaimName(&sb)
		}
	}
	if err != nil {
		return ctrl.Result{}, err
	}
	st.ObservedGeneration = sb.Generation
	if !reflect.DeepEqual(*st, sb.Status) {
		sb.Status = *st
		if err := r.Client.Status().Update(ctx, &sb); err != nil {
			return ctrl.Result{}, fmt.Errorf("update status of sandbox %s: %w", req, err)
		}
	}
	return ctrl.Result{RequeueAfter: requeue}, nil
}

func failed(reason, format string, args ...any) *api.SandboxStatus {
	return &api.SandboxStatus{Phase: api.PhaseFailed, Reason: reason, Message: fmt.Sprintf(format, args...)}
}

// ensureClaim finds or makes sb's disk claim. It returns a status only
// when the Sandbox cannot go on: the claim's name is someone else's, or
// the claim it had is gone (and the VM's disk with it).
func (r *Reconciler) ensureClaim(ctx context.Context, sb *api.Sandbox) (*api.SandboxStatus, error) {
	name := types.NamespacedName{Namespace: sb.Namespace, Name: ClaimName(sb)}
	var pvc corev1.PersistentVolumeClaim
	found, st, err := r.find(ctx, sb, name, &pvc, ReasonClaimTaken)
	if found || st != nil || err != nil {
		return st, err
	}
	if sb.Status.ClaimName != "" {
		if err := r.confirmGone(ctx, name, &pvc); err != nil {
			return nil, err
		}
		// A new claim would be an empty disk under the old name.
		st := failed(ReasonClaimGone, "the disk's persistent volume claim %s was deleted; delete the sandbox and create it again", name.Name)
		st.ClaimName = sb.Status.ClaimName
		return st, nil
	}
	want, err := RenderClaim(sb, r.Launcher)
	if err != nil {
		return failed(ReasonInvalid, "%s", err.Error()), nil
	}
	return r.create(ctx, sb, want, &pvc, ReasonClaimTaken)
}

// ensurePod finds or makes sb's Pod and returns the status it implies.
func (r *Reconciler) ensurePod(ctx context.Context, sb *api.Sandbox) (*api.SandboxStatus, error) {
	name := types.NamespacedName{Namespace: sb.Namespace, Name: PodName(sb)}
	var pod corev1.Pod
	found, st, err := r.find(ctx, sb, name, &pod, ReasonPodTaken)
	if st != nil || err != nil {
		return st, err
	}
	if found {
		st, err := r.podStatus(ctx, &pod)
		if err != nil {
			return nil, err
		}
		if pod.DeletionTimestamp != nil && sb.Status.Phase == api.PhaseStopping {
			// Started again before the stop finished: still
			// stopping, and a new Pod follows once this one is gone.
			st.Phase = api.PhaseStopping
		}
		return &st, nil
	}
	if sb.Status.PodName != "" {
		if err := r.confirmGone(ctx, name, &pod); err != nil {
			return nil, err
		}
		if sb.Status.Phase != api.PhaseStopping {
			// The Pod existed and is gone, not stopped by us: so is the
			// VM in it, and a new Pod would boot it behind the user's
			// back. Stopping and starting the Sandbox does that on
			// purpose.
			return &api.SandboxStatus{Phase: api.PhaseFailed, Node: sb.Status.Node, PodName: sb.Status.PodName,
				Reason: ReasonPodGone, Message: "the launcher pod was deleted; stop and start the sandbox to boot it again from its disk"}, nil
		}
	}
	want, err := RenderPod(sb, r.Launcher)
	if err != nil {
		return failed(ReasonInvalid, "%s", err.Error()), nil
	}
	if st, err := r.create(ctx, sb, want, &pod, ReasonPodTaken); st != nil || err != nil {
		return st, err
	}
	created := StatusFromPod(want)
	return &created, nil
}

// podStatus is the status pod implies, given the health of its node.
func (r *Reconciler) podStatus(ctx context.Context, pod *corev1.Pod) (api.SandboxStatus, error) {
	st := StatusFromPod(pod)
	if pod.Spec.NodeName == "" {
		return st, nil
	}
	node := &corev1.Node{}
	err := r.Client.Get(ctx, types.NamespacedName{Name: pod.Spec.NodeName}, node)
	switch {
	case apierrors.IsNotFound(err):
		node = nil
	case err != nil:
		return st, fmt.Errorf("get node %s of pod %s/%s: %w", pod.Spec.NodeName, pod.Namespace, pod.Name, err)
	}
	return WithNode(st, pod.Spec.NodeName, node), nil
}

// find reads sb's object name into obj from the cache: found when it is
// there and sb's; a Failed status (reason taken) when it is someone
// else's.
func (r *Reconciler) find(ctx context.Context, sb *api.Sandbox, name types.NamespacedName, obj client.Object, taken string) (found bool, st *api.SandboxStatus, err error) {
	err = r.Client.Get(ctx, name, obj)
	switch {
	case apierrors.IsNotFound(err):
		return false, nil, nil
	case err != nil:
		return false, nil, fmt.Errorf("get %s %s: %w", kindOf(obj), name, err)
	case !metav1.IsControlledBy(obj, sb):
		return false, takenStatus(obj, taken), nil
	}
	return true, nil, nil
}

// confirmGone reads past the cache whether an object sb had is really
// gone: the cache may not have seen one made a moment ago.
func (r *Reconciler) confirmGone(ctx context.Context, name types.NamespacedName, obj client.Object) error {
	err := r.APIReader.Get(ctx, name, obj)
	switch {
	case err == nil:
		return fmt.Errorf("%s %s not in the cache yet", kindOf(obj), name)
	case !apierrors.IsNotFound(err):
		return fmt.Errorf("get %s %s: %w", kindOf(obj), name, err)
	}
	return nil
}

// create makes want; if its name is taken, it reads the object there into
// existing and returns a Failed status when it is someone else's (the
// cache holds only the controller's own objects, CacheOptions).
func (r *Reconciler) create(ctx context.Context, sb *api.Sandbox, want, existing client.Object, taken string) (*api.SandboxStatus, error) {
	err := r.Client.Create(ctx, want)
	if err == nil {
		return nil, nil
	}
	key := client.ObjectKeyFromObject(want)
	if apierrors.IsAlreadyExists(err) {
		if err := r.APIReader.Get(ctx, key, existing); err == nil && !metav1.IsControlledBy(existing, sb) {
			return takenStatus(existing, taken), nil
		}
	}
	return nil, fmt.Errorf("create %s %s: %w", kindOf(want), key, err)
}

func takenStatus(obj client.Object, reason string) *api.SandboxStatus {
	return failed(reason, "%s %s exists and is not this sandbox's: delete or rename it", kindOf(obj), obj.GetName())
}

func kindOf(obj client.Object) string {
	if _, ok := obj.(*corev1.PersistentVolumeClaim); ok {
		return "persistent volume claim"
	}
	return "pod"
}

// stopPod deletes sb's Pod, if it has one, for spec.running false: the
// kubelet sends the launcher SIGTERM, and the launcher stops the VM
// cleanly within the Pod's grace period. The claim stays.
func (r *Reconciler) stopPod(ctx context.Context, sb *api.Sandbox) (*api.SandboxStatus, error) {
	name := types.NamespacedName{Namespace: sb.Namespace, Name: PodName(sb)}
	var pod corev1.Pod
	err := r.Client.Get(ctx, name, &pod)
	if apierrors.IsNotFound(err) && sb.Status.PodName != "" {
		// The cache may not have seen a Pod made a moment ago.
		err = r.APIReader.Get(ctx, name, &pod)
	}
	switch {
	case apierrors.IsNotFound(err):
		return &api.SandboxStatus{Phase: api.PhaseStopped}, nil
	case err != nil:
		return nil, fmt.Errorf("get pod %s: %w", name, err)
	case !metav1.IsControlledBy(&pod, sb):
		// Someone else's Pod of that name: not ours to delete, and no VM
		// of this Sandbox runs.
		return &api.SandboxStatus{Phase: api.PhaseStopped}, nil
	}
	if pod.DeletionTimestamp == nil {
		err := r.Client.Delete(ctx, &pod, client.Preconditions{UID: &pod.UID})
		if err != nil && !apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("delete pod %s to stop sandbox %s: %w", name, sb.Name, err)
		}
	}
	return &api.SandboxStatus{Phase: api.PhaseStopping, PodName: pod.Name, Node: pod.Spec.NodeName}, nil
}
