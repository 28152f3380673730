// Package install puts banger's controller on a Kubernetes cluster and
// takes it off again: the manifests of deploy/kubernetes (embedded; the
// same files kubectl apply -k applies), applied with server-side apply so
// that installing again updates in place, then a wait until the controller
// is Available. Uninstall refuses while Sandboxes exist unless forced.
package install

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"reflect"
	"slices"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"sigs.k8s.io/yaml"

	"github.com/bangervm/banger/deploy"
	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/kube/api"
)

// What the manifests name: the namespace they install into, and the
// controller's Deployment, container and flag that names the launcher
// image.
const (
	DefaultNamespace = "banger-system"
	Deployment       = "banger-controller"
	container        = "controller"
	launcherFlag     = "--launcher-image="
	accelFlag        = "--accel="
	selectorFlag     = "--node-selector="
	// DaemonSet is the node agent's (deploy/kubernetes/node.yaml).
	DaemonSet     = "banger-node"
	nodeContainer = "node"
	// FieldManager owns the fields banger applies.
	FieldManager = "banger"
	// partOf marks the namespace as banger's own: made by an install,
	// and so deleted by uninstall.
	partOfKey, partOf = "app.kubernetes.io/part-of", "banger"
	// managedBy selects what the controller made for Sandboxes (its
	// LabelManagedBy; not imported, which would link controller-runtime
	// into the CLI).
	managedBy = "app.kubernetes.io/managed-by=banger-controller"
)

// Options adjust the manifests; empty fields keep theirs.
type Options struct {
	Namespace       string
	ControllerImage string
	LauncherImage   string
	NodeImage       string
	// Accel is the controller's --accel: kvm or tcg.
	Accel string
	// NodeSelector (k=v[,k=v]) places the launcher Pods (the
	// controller's --node-selector) and the node agent.
	NodeSelector string
}

// Objects are the manifests kustomization.yaml lists, in its order, with
// opts applied: the namespace renamed everywhere it appears (the
// Namespace, the namespaced objects, the role binding's subject), the
// images set, the controller's --accel and --node-selector set, and the
// node agent given the same node selector.
func Objects(opts Options) ([]*unstructured.Unstructured, error) {
	if opts.Accel != "" {
		if _, err := api.ParseAccel(opts.Accel); err != nil {
			return nil, err
		}
	}
	if _, err := api.ParseNodeSelector(opts.NodeSelector); err != nil {
		return nil, err
	}
	dir := "kubernetes"
	b, err := fs.ReadFile(deploy.Kubernetes, path.Join(dir, "kustomization.yaml"))
	if err != nil {
		return nil, fmt.Errorf("read manifests: %w", err)
	}
	var k struct{ Resources []string }
	if err := yaml.Unmarshal(b, &k); err != nil {
		return nil, fmt.Errorf("parse kustomization.yaml: %w", err)
	}
	var objs []*unstructured.Unstructured
	for _, file := range k.Resources {
		b, err := fs.ReadFile(deploy.Kubernetes, path.Join(dir, file))
		if err != nil {
			return nil, fmt.Errorf("read manifests: %w", err)
		}
		dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(b), 4096)
		for {
			var u unstructured.Unstructured
			if err := dec.Decode(&u.Object); err == io.EOF {
				break
			} else if err != nil {
				return nil, fmt.Errorf("parse %s: %w", file, err)
			}
			if len(u.Object) == 0 {
				continue
			}
			if err := customize(&u, opts); err != nil {
				return nil, fmt.Errorf("%s: %w", file, err)
			}
			objs = append(objs, &u)
		}
	}
	return objs, nil
}

func customize(u *unstructured.Unstructured, opts Options) error {
	if ns := opts.Namespace; ns != "" && ns != DefaultNamespace {
		if u.GetKind() == "Namespace" && u.GetName() == DefaultNamespace {
			u.SetName(ns)
		}
		if u.GetNamespace() == DefaultNamespace {
			u.SetNamespace(ns)
		}
		if u.GetKind() == "ClusterRoleBinding" {
			subjects, _, _ := unstructured.NestedSlice(u.Object, "subjects")
			for _, s := range subjects {
				if m, ok := s.(map[string]any); ok && m["namespace"] == DefaultNamespace {
					m["namespace"] = ns
				}
			}
			if err := unstructured.SetNestedSlice(u.Object, subjects, "subjects"); err != nil {
				return err
			}
		}
	}
	switch {
	case u.GetKind() == "Deployment" && u.GetName() == Deployment:
		return customizeContainer(u, container, func(m map[string]any) {
			if opts.ControllerImage != "" {
				m["image"] = opts.ControllerImage
			}
			if opts.LauncherImage != "" {
				setFlag(m, launcherFlag, opts.LauncherImage)
			}
			if opts.Accel != "" {
				setFlag(m, accelFlag, opts.Accel)
			}
			if opts.NodeSelector != "" {
				setFlag(m, selectorFlag, opts.NodeSelector)
			}
		})
	case u.GetKind() == "DaemonSet" && u.GetName() == DaemonSet:
		if opts.NodeSelector != "" {
			sel, _ := api.ParseNodeSelector(opts.NodeSelector) // Objects checked it
			m := map[string]any{}
			for k, v := range sel {
				m[k] = v
			}
			if err := unstructured.SetNestedMap(u.Object, m, "spec", "template", "spec", "nodeSelector"); err != nil {
				return err
			}
		}
		return customizeContainer(u, nodeContainer, func(m map[string]any) {
			if opts.NodeImage != "" {
				m["image"] = opts.NodeImage
			}
		})
	}
	return nil
}

// customizeContainer calls fn on the container name of u's Pod template.
func customizeContainer(u *unstructured.Unstructured, name string, fn func(map[string]any)) error {
	containers, _, _ := unstructured.NestedSlice(u.Object, "spec", "template", "spec", "containers")
	found := false
	for _, c := range containers {
		m, ok := c.(map[string]any)
		if !ok || m["name"] != name {
			continue
		}
		found = true
		fn(m)
	}
	if !found {
		return fmt.Errorf("%s %s has no container %q", strings.ToLower(u.GetKind()), u.GetName(), name)
	}
	return unstructured.SetNestedSlice(u.Object, containers, "spec", "template", "spec", "containers")
}

// setFlag sets the container's argument flag (such as "--accel=") to
// value, replacing the one there or adding it.
func setFlag(m map[string]any, flag, value string) {
	args, _ := m["args"].([]any)
	for i, a := range args {
		if s, ok := a.(string); ok && strings.HasPrefix(s, flag) {
			args[i] = flag + value
			return
		}
	}
	m["args"] = append(args, flag+value)
}

// Client talks to one cluster.
type Client struct {
	dyn    dynamic.Interface
	kube   kubernetes.Interface
	mapper meta.RESTMapper
	// Out gets a line per object created, changed or deleted.
	Out io.Writer
	// Poll is how often waits look again; one second when zero.
	Poll time.Duration
}

// New returns a Client for the cluster cfg reaches.
func New(cfg *rest.Config, out io.Writer) (*Client, error) {
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &Client{dyn: dyn, kube: kube, mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc)), Out: out}, nil
}

func (c *Client) resource(u *unstructured.Unstructured) (dynamic.ResourceInterface, string, error) {
	gvk := u.GroupVersionKind()
	m, err := c.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return nil, "", fmt.Errorf("%s %s: %w", gvk.Kind, u.GetName(), err)
	}
	// As kubectl names objects: kind.group/name.
	label := strings.ToLower(gvk.Kind)
	if gvk.Group != "" {
		label += "." + gvk.Group
	}
	label += "/" + u.GetName()
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		return c.dyn.Resource(m.Resource).Namespace(u.GetNamespace()), label, nil
	}
	return c.dyn.Resource(m.Resource), label, nil
}

// Install applies the manifests with opts and waits, up to timeout, until
// the controller's Deployment is Available and the node agent runs, ready,
// on every node its DaemonSet places it on. Running it again updates what
// changed and leaves the rest.
func (c *Client) Install(ctx context.Context, opts Options, timeout time.Duration) error {
	objs, err := Objects(opts)
	if err != nil {
		return err
	}
	for _, u := range objs {
		if err := c.apply(ctx, u); err != nil {
			return err
		}
	}
	ns := opts.Namespace
	if ns == "" {
		ns = DefaultNamespace
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := c.waitAvailable(ctx, ns, timeout); err != nil {
		return err
	}
	return c.waitNodeAgent(ctx, ns, timeout)
}

func (c *Client) apply(ctx context.Context, u *unstructured.Unstructured) error {
	ri, label, err := c.resource(u)
	if err != nil {
		return err
	}
	before, err := ri.Get(ctx, u.GetName(), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		before = nil
	} else if err != nil {
		return fmt.Errorf("get %s: %w", label, err)
	}
	if u.GetKind() == "Namespace" && before != nil && before.GetLabels()[partOfKey] != partOf {
		// Someone else's namespace: banger's objects go in it, and
		// uninstall will leave it.
		fmt.Fprintf(c.Out, "%s exists, left as it is\n", label)
		return nil
	}
	after, err := ri.Apply(ctx, u.GetName(), u, metav1.ApplyOptions{FieldManager: FieldManager, Force: true})
	if err != nil {
		return fmt.Errorf("apply %s: %w", label, err)
	}
	switch {
	case before == nil:
		fmt.Fprintf(c.Out, "%s created\n", label)
	case !reflect.DeepEqual(content(before), content(after)):
		fmt.Fprintf(c.Out, "%s configured\n", label)
	default:
		fmt.Fprintf(c.Out, "%s unchanged\n", label)
	}
	return nil
}

// content is u without what changes when nothing was changed: its
// status, resource version and field managers' bookkeeping.
func content(u *unstructured.Unstructured) map[string]any {
	u = u.DeepCopy()
	unstructured.RemoveNestedField(u.Object, "status")
	unstructured.RemoveNestedField(u.Object, "metadata", "resourceVersion")
	unstructured.RemoveNestedField(u.Object, "metadata", "managedFields")
	return u.Object
}

// waitAvailable waits until the controller's Deployment has rolled out and
// is Available; on timeout it says what its Pod waits for.
func (c *Client) waitAvailable(ctx context.Context, ns string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		d, err := c.kube.AppsV1().Deployments(ns).Get(ctx, Deployment, metav1.GetOptions{})
		if err == nil && available(d) {
			fmt.Fprintf(c.Out, "deployment.apps/%s available\n", Deployment)
			return nil
		}
		select {
		case <-ctx.Done():
			if err == nil {
				err = errors.New(c.podStateOf(context.WithoutCancel(ctx), ns, Deployment, "deployment"))
			}
			return fmt.Errorf("controller %s/%s not available after %s: %v", ns, Deployment, timeout, err)
		case <-time.After(c.poll()):
		}
	}
}

func available(d *appsv1.Deployment) bool {
	if d.Status.ObservedGeneration < d.Generation || d.Status.UpdatedReplicas < *d.Spec.Replicas {
		return false
	}
	for _, cond := range d.Status.Conditions {
		if cond.Type == appsv1.DeploymentAvailable {
			return cond.Status == corev1.ConditionTrue
		}
	}
	return false
}

// waitNodeAgent waits until the node agent's DaemonSet has rolled out
// and its Pod is ready on every node it is scheduled to (none, when no
// node matches its selector); on timeout it says what a Pod waits for.
func (c *Client) waitNodeAgent(ctx context.Context, ns string, timeout time.Duration) error {
	for {
		d, err := c.kube.AppsV1().DaemonSets(ns).Get(ctx, DaemonSet, metav1.GetOptions{})
		if err == nil && daemonSetReady(d) {
			fmt.Fprintf(c.Out, "daemonset.apps/%s ready on %d nodes\n", DaemonSet, d.Status.NumberReady)
			return nil
		}
		select {
		case <-ctx.Done():
			if err == nil {
				err = errors.New(c.podStateOf(context.WithoutCancel(ctx), ns, DaemonSet, "daemonset"))
			}
			return fmt.Errorf("node agent %s/%s not ready after %s: %v", ns, DaemonSet, timeout, err)
		case <-time.After(c.poll()):
		}
	}
}

func daemonSetReady(d *appsv1.DaemonSet) bool {
	s := d.Status
	return s.ObservedGeneration >= d.Generation && s.UpdatedNumberScheduled == s.DesiredNumberScheduled &&
		s.NumberReady == s.DesiredNumberScheduled && s.NumberUnavailable == 0
}

// podStateOf says why the Pod of the workload name (labelled with it, as
// the manifests do) is not ready, for an error.
func (c *Client) podStateOf(ctx context.Context, ns, name, kind string) string {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	pods, err := c.kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=" + name})
	if err != nil {
		return fmt.Sprintf("list its pods: %v", err)
	}
	if len(pods.Items) == 0 {
		return "no pod (kubectl describe " + kind + " " + name + " -n " + ns + ")"
	}
	p := pods.Items[0]
	for _, cs := range p.Status.ContainerStatuses {
		if w := cs.State.Waiting; w != nil {
			return fmt.Sprintf("pod %s: %s %s", p.Name, w.Reason, w.Message)
		}
	}
	for _, cond := range p.Status.Conditions {
		if cond.Status != corev1.ConditionTrue && cond.Message != "" {
			return fmt.Sprintf("pod %s: %s: %s", p.Name, cond.Reason, cond.Message)
		}
	}
	return fmt.Sprintf("pod %s is %s, not ready", p.Name, p.Status.Phase)
}

func (c *Client) poll() time.Duration {
	if c.Poll > 0 {
		return c.Poll
	}
	return time.Second
}

var sandboxes = schema.GroupVersionResource{Group: api.Group, Version: api.Version, Resource: api.Resource}

// Sandboxes lists every Sandbox of the cluster as namespace/name; none
// when the CRD is not installed.
func (c *Client) Sandboxes(ctx context.Context) ([]string, error) {
	list, err := c.dyn.Resource(sandboxes).List(ctx, metav1.ListOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list sandboxes: %w", err)
	}
	var names []string
	for _, sb := range list.Items {
		names = append(names, sb.GetNamespace()+"/"+sb.GetName())
	}
	return names, nil
}

// Uninstall deletes what Install applied and waits, up to timeout, until
// it is gone. While Sandboxes exist it refuses, unless force: then it
// deletes them first and waits for their Pods (the launchers stop their
// VMs) and disks to go. The namespace is opts.Namespace, else the one the
// installed role binding names, else DefaultNamespace.
func (c *Client) Uninstall(ctx context.Context, opts Options, force bool, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if opts.Namespace == "" {
		opts.Namespace = c.installedNamespace(ctx)
	}
	names, err := c.Sandboxes(ctx)
	if err != nil {
		return err
	}
	if len(names) > 0 {
		if !force {
			return fmt.Errorf("%d sandboxes exist (%s): delete them first, or uninstall with --force, which deletes them and their disks: %w",
				len(names), strings.Join(names, ", "), errdefs.ErrFailedPrecondition)
		}
		if err := c.deleteSandboxes(ctx, names); err != nil {
			return err
		}
	}
	objs, err := Objects(opts)
	if err != nil {
		return err
	}
	slices.Reverse(objs)
	var gone []func() (bool, error)
	for _, u := range objs {
		ri, label, err := c.resource(u)
		if err != nil {
			if meta.IsNoMatchError(err) {
				continue // the CRD is gone already
			}
			return err
		}
		if u.GetKind() == "Namespace" {
			ns, err := ri.Get(ctx, u.GetName(), metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				continue
			}
			if err != nil {
				return fmt.Errorf("get %s: %w", label, err)
			}
			if ns.GetLabels()[partOfKey] != partOf {
				fmt.Fprintf(c.Out, "%s kept: banger did not make it\n", label)
				continue
			}
		}
		// Foreground: an object is gone once what it owns is (the
		// controller's Pod, with its Deployment).
		fg := metav1.DeletePropagationForeground
		err = ri.Delete(ctx, u.GetName(), metav1.DeleteOptions{PropagationPolicy: &fg})
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return fmt.Errorf("delete %s: %w", label, err)
		}
		fmt.Fprintf(c.Out, "%s deleted\n", label)
		gone = append(gone, func() (bool, error) {
			_, err := ri.Get(ctx, u.GetName(), metav1.GetOptions{})
			return apierrors.IsNotFound(err), err
		})
	}
	for _, g := range gone {
		if err := c.wait(ctx, "the uninstalled objects to go", g); err != nil {
			return err
		}
	}
	return nil
}

// installedNamespace is the namespace of the controller's service account
// as the installed role binding names it.
func (c *Client) installedNamespace(ctx context.Context) string {
	b, err := c.kube.RbacV1().ClusterRoleBindings().Get(ctx, Deployment, metav1.GetOptions{})
	if err == nil {
		for _, s := range b.Subjects {
			if s.Kind == "ServiceAccount" && s.Namespace != "" {
				return s.Namespace
			}
		}
	}
	return DefaultNamespace
}

func (c *Client) deleteSandboxes(ctx context.Context, names []string) error {
	bg := metav1.DeletePropagationBackground
	for _, n := range names {
		ns, name, _ := strings.Cut(n, "/")
		err := c.dyn.Resource(sandboxes).Namespace(ns).Delete(ctx, name, metav1.DeleteOptions{PropagationPolicy: &bg})
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete sandbox %s: %w", n, err)
		}
		fmt.Fprintf(c.Out, "sandbox.%s/%s deleted\n", api.Group, n)
	}
	// The garbage collector deletes their Pods and claims; wait for it,
	// so that nothing of them is left once uninstall returns.
	owned := metav1.ListOptions{LabelSelector: managedBy}
	return c.wait(ctx, "the sandboxes' pods and disks to go", func() (bool, error) {
		pods, err := c.kube.CoreV1().Pods("").List(ctx, owned)
		if err != nil {
			return false, err
		}
		pvcs, err := c.kube.CoreV1().PersistentVolumeClaims("").List(ctx, owned)
		if err != nil {
			return false, err
		}
		return len(pods.Items)+len(pvcs.Items) == 0, fmt.Errorf("%d pods and %d claims left", len(pods.Items), len(pvcs.Items))
	})
}

func (c *Client) wait(ctx context.Context, what string, done func() (bool, error)) error {
	for {
		ok, err := done()
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w (%v)", what, ctx.Err(), err)
		case <-time.After(c.poll()):
		}
	}
}
