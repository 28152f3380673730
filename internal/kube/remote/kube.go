package remote

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/bangervm/banger/errdefs"
	kapi "github.com/bangervm/banger/internal/kube/api"
	"github.com/bangervm/banger/internal/kube/controller"
)

// kube is the part of the cluster the handler uses: Sandboxes and launcher
// Pods in one namespace.
type kube struct {
	ns   string
	sbx  *rest.RESTClient
	pods kubernetes.Interface
}

func newKube(cfg *rest.Config, ns string) (*kube, error) {
	s := runtime.NewScheme()
	if err := kapi.AddToScheme(s); err != nil {
		return nil, err
	}
	c := rest.CopyConfig(cfg)
	c.GroupVersion = &kapi.GroupVersion
	c.APIPath = "/apis"
	c.NegotiatedSerializer = serializer.NewCodecFactory(s).WithoutConversion()
	if c.UserAgent == "" {
		c.UserAgent = "banger"
	}
	sbx, err := rest.RESTClientFor(c)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	pods, err := kubernetes.NewForConfig(c)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return &kube{ns: ns, sbx: sbx, pods: pods}, nil
}

func (k *kube) listSandboxes(ctx context.Context) ([]kapi.Sandbox, error) {
	var l kapi.SandboxList
	err := k.sbx.Get().Namespace(k.ns).Resource(kapi.Resource).Do(ctx).Into(&l)
	return l.Items, k.err("list sandboxes", err)
}

func (k *kube) getSandbox(ctx context.Context, name string) (*kapi.Sandbox, error) {
	var sb kapi.Sandbox
	err := k.sbx.Get().Namespace(k.ns).Resource(kapi.Resource).Name(name).Do(ctx).Into(&sb)
	if err != nil {
		return nil, k.err("get sandbox "+name, err)
	}
	return &sb, nil
}

// createSandbox creates sb; kept says whether the cluster kept a
// spec.running of false (see setRunning).
func (k *kube) createSandbox(ctx context.Context, sb *kapi.Sandbox) (out *kapi.Sandbox, kept bool, err error) {
	out = &kapi.Sandbox{}
	if err := k.sbx.Post().Namespace(k.ns).Resource(kapi.Resource).Body(sb).Do(ctx).Into(out); err != nil {
		return nil, false, k.err("create sandbox "+sb.Name, err)
	}
	return out, out.Spec.Running != nil && !*out.Spec.Running, nil
}

// runningIs reports whether the Sandbox JSON raw has spec.running set to
// want.
func runningIs(raw []byte, want bool) bool {
	var got struct {
		Spec struct {
			Running *bool `json:"running"`
		} `json:"spec"`
	}
	return json.Unmarshal(raw, &got) == nil && got.Spec.Running != nil && *got.Spec.Running == want
}

// deleteSandbox deletes the Sandbox with uid (and nothing that took its
// name since), its Pod first (foreground propagation).
func (k *kube) deleteSandbox(ctx context.Context, name string, uid types.UID) error {
	fg := metav1.DeletePropagationForeground
	opts := &metav1.DeleteOptions{PropagationPolicy: &fg, Preconditions: &metav1.Preconditions{UID: &uid}}
	err := k.sbx.Delete().Namespace(k.ns).Resource(kapi.Resource).Name(name).Body(opts).Do(ctx).Error()
	if apierrors.IsNotFound(err) {
		return nil
	}
	return k.err("delete sandbox "+name, err)
}

// annotate sets one annotation of a Sandbox.
func (k *kube) annotate(ctx context.Context, name, key, value string) error {
	patch := fmt.Appendf(nil, `{"metadata":{"annotations":{%q:%q}}}`, key, value)
	err := k.sbx.Patch(types.MergePatchType).Namespace(k.ns).Resource(kapi.Resource).Name(name).Body(patch).Do(ctx).Error()
	return k.err("annotate sandbox "+name, err)
}

// launcherPods returns the controller's Pods in the namespace by Sandbox
// name.
func (k *kube) launcherPods(ctx context.Context) (map[string]*corev1.Pod, error) {
	l, err := k.pods.CoreV1().Pods(k.ns).List(ctx, metav1.ListOptions{LabelSelector: controller.LabelSandbox})
	if err != nil {
		return nil, k.err("list pods", err)
	}
	out := map[string]*corev1.Pod{}
	for i := range l.Items {
		p := &l.Items[i]
		out[p.Labels[controller.LabelSandbox]] = p
	}
	return out, nil
}

// launcherPod returns sb's Pod, nil when it has none. A Pod of that name
// that sb does not control is not its.
func (k *kube) launcherPod(ctx context.Context, sb *kapi.Sandbox) (*corev1.Pod, error) {
	p, err := k.pods.CoreV1().Pods(k.ns).Get(ctx, controller.PodName(sb), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, k.err("get pod "+controller.PodName(sb), err)
	}
	if !metav1.IsControlledBy(p, sb) {
		return nil, nil
	}
	return p, nil
}

// err gives a Kubernetes error banger's class and says what to do.
func (k *kube) err(op string, err error) error {
	if err == nil {
		return nil
	}
	var class error
	hint := ""
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		class = errdefs.ErrCanceled
	case apierrors.IsNotFound(err) && isResourceMissing(err):
		class = errdefs.ErrFailedPrecondition
		hint = ": the cluster has no Sandbox resource: install banger's controller (kubectl apply -k deploy/kubernetes)"
	case apierrors.IsNotFound(err):
		class = errdefs.ErrNotFound
	case apierrors.IsAlreadyExists(err), apierrors.IsConflict(err):
		class = errdefs.ErrAlreadyExists
	case apierrors.IsInvalid(err), apierrors.IsBadRequest(err):
		class = errdefs.ErrInvalidArgument
	case apierrors.IsForbidden(err), apierrors.IsUnauthorized(err):
		class = errdefs.ErrPermissionDenied
		hint = fmt.Sprintf(": in namespace %s banger needs sandboxes get, list, create, delete and patch, pods get and list, and pods/exec create (see README, Running on Kubernetes)", k.ns)
	default:
		class = errdefs.ErrUnavailable
	}
	return fmt.Errorf("%s in namespace %s: %w%s: %w", op, k.ns, err, hint, class)
}

// isResourceMissing tells a NotFound for a resource type the apiserver
// does not serve (no CRD) from one for a missing object.
func isResourceMissing(err error) bool {
	var se apierrors.APIStatus
	if !errors.As(err, &se) {
		return false
	}
	st := se.Status()
	return strings.Contains(st.Message, "could not find the requested resource") || st.Details == nil || st.Details.Name == ""
}

// podGone reports whether pod, that very one (by UID), no longer exists.
func (k *kube) podGone(ctx context.Context, pod *corev1.Pod) (bool, error) {
	p, err := k.pods.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return true, nil
	case err != nil:
		return false, k.err("get pod "+pod.Name, err)
	}
	return p.UID != pod.UID, nil
}

// setRunning sets the Sandbox's spec.running and reports whether the
// cluster kept it: a Sandbox CRD without the field (before kubedisk's
// controller) prunes it silently.
func (k *kube) setRunning(ctx context.Context, name string, running bool) (kept bool, err error) {
	patch := fmt.Appendf(nil, `{"spec":{"running":%t}}`, running)
	raw, err := k.sbx.Patch(types.MergePatchType).Namespace(k.ns).Resource(kapi.Resource).Name(name).Body(patch).Do(ctx).Raw()
	if err != nil {
		return false, k.err("set spec.running of sandbox "+name, err)
	}
	return runningIs(raw, running), nil
}
