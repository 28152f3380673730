package install

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/bangervm/banger/internal/kube/api"
	"github.com/bangervm/banger/internal/kube/controller"
)

func find(objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	for _, u := range objs {
		if u.GetKind() == kind && u.GetName() == name {
			return u
		}
	}
	return nil
}

func controllerContainer(t *testing.T, objs []*unstructured.Unstructured) map[string]any {
	t.Helper()
	d := find(objs, "Deployment", Deployment)
	if d == nil {
		t.Fatal("no controller deployment")
	}
	cs, _, _ := unstructured.NestedSlice(d.Object, "spec", "template", "spec", "containers")
	for _, c := range cs {
		if m := c.(map[string]any); m["name"] == container {
			return m
		}
	}
	t.Fatal("no controller container")
	return nil
}

// What kubectl apply -k applies is what install applies: every manifest
// in deploy/kubernetes is in the kustomization, which install reads, and
// the embedded copy is the file on disk.
func TestObjectsAreTheManifests(t *testing.T) {
	dir := filepath.Dir(api.CRDPath())
	b, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k struct{ Resources []string }
	if err := yaml.Unmarshal(b, &k); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
	var manifests []string
	for _, f := range files {
		if base := filepath.Base(f); base != "kustomization.yaml" {
			manifests = append(manifests, base)
		}
	}
	got := slices.Sorted(slices.Values(k.Resources))
	if !slices.Equal(got, manifests) {
		t.Errorf("kustomization lists %v, deploy/kubernetes has %v", got, manifests)
	}
	objs, err := Objects(Options{})
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, u := range objs {
		kinds = append(kinds, u.GetKind()+"/"+u.GetName())
	}
	want := []string{"CustomResourceDefinition/sandboxes.banger.dev", "Namespace/banger-system", "ServiceAccount/banger-controller",
		"ClusterRole/banger-controller", "ClusterRoleBinding/banger-controller", "Deployment/banger-controller", "DaemonSet/banger-node"}
	if !slices.Equal(kinds, want) {
		t.Errorf("objects %v, want %v", kinds, want)
	}
	c := controllerContainer(t, objs)
	if c["image"] != "banger.dev/controller:dev" || !slices.Contains(c["args"].([]any), any("--launcher-image=banger.dev/launcher:dev")) {
		t.Errorf("controller container %v: want the development images", c)
	}
	if !slices.Contains(c["args"].([]any), any("--accel="+controller.DefaultAccel)) {
		t.Errorf("controller args %v: want --accel=%s, the controller's own default, stated", c["args"], controller.DefaultAccel)
	}
	// The controller's label that uninstall waits on.
	if managedBy != controller.LabelManagedBy+"=banger-controller" {
		t.Errorf("selector %q does not name the controller's label %s", managedBy, controller.LabelManagedBy)
	}
}

func TestObjectsOptions(t *testing.T) {
	objs, err := Objects(Options{Namespace: "banger", ControllerImage: "reg.example/ctl:1", LauncherImage: "reg.example/launcher:1"})
	if err != nil {
		t.Fatal(err)
	}
	if find(objs, "Namespace", "banger") == nil || find(objs, "Namespace", DefaultNamespace) != nil {
		t.Error("want namespace banger instead of banger-system")
	}
	for _, u := range objs {
		if u.GetNamespace() != "" && u.GetNamespace() != "banger" {
			t.Errorf("%s %s in namespace %s, want banger", u.GetKind(), u.GetName(), u.GetNamespace())
		}
	}
	subjects, _, _ := unstructured.NestedSlice(find(objs, "ClusterRoleBinding", "banger-controller").Object, "subjects")
	if len(subjects) != 1 || subjects[0].(map[string]any)["namespace"] != "banger" {
		t.Errorf("binding subjects %v: want the service account in banger", subjects)
	}
	c := controllerContainer(t, objs)
	args := c["args"].([]any)
	if c["image"] != "reg.example/ctl:1" || !slices.Contains(args, any("--launcher-image=reg.example/launcher:1")) ||
		slices.ContainsFunc(args, func(a any) bool { return strings.Contains(a.(string), "banger.dev/launcher") }) {
		t.Errorf("controller container image %v args %v: want both images replaced", c["image"], args)
	}
	// The defaults are untouched by an earlier call's options.
	objs, err = Objects(Options{})
	if err != nil {
		t.Fatal(err)
	}
	if c := controllerContainer(t, objs); c["image"] != "banger.dev/controller:dev" {
		t.Errorf("image %v after options elsewhere, want the manifest's", c["image"])
	}
}

func nodeAgent(t *testing.T, objs []*unstructured.Unstructured) (spec, container map[string]any) {
	t.Helper()
	d := find(objs, "DaemonSet", DaemonSet)
	if d == nil {
		t.Fatal("no node agent daemonset")
	}
	spec, _, _ = unstructured.NestedMap(d.Object, "spec", "template", "spec")
	cs, _, _ := unstructured.NestedSlice(d.Object, "spec", "template", "spec", "containers")
	if len(cs) != 1 || cs[0].(map[string]any)["name"] != nodeContainer {
		t.Fatalf("node agent containers %v: want %q only", cs, nodeContainer)
	}
	return spec, cs[0].(map[string]any)
}

// The node agent gets what a device plugin needs and nothing else: the
// kubelet's device plugin directory, root without capabilities, no token,
// and a toleration of banger's taint.
func TestNodeAgentManifest(t *testing.T) {
	objs, err := Objects(Options{})
	if err != nil {
		t.Fatal(err)
	}
	spec, c := nodeAgent(t, objs)
	if c["image"] != "banger.dev/node:dev" {
		t.Errorf("node image %v", c["image"])
	}
	vols, _, _ := unstructured.NestedSlice(spec, "volumes")
	if len(vols) != 1 {
		t.Fatalf("volumes %v: want the device plugin directory only", vols)
	}
	hp, _, _ := unstructured.NestedString(vols[0].(map[string]any), "hostPath", "path")
	if hp != "/var/lib/kubelet/device-plugins" {
		t.Errorf("host path %q, want the kubelet's device plugin directory", hp)
	}
	for _, f := range []string{"hostNetwork", "hostPID", "hostIPC", "serviceAccountName"} {
		if _, ok := spec[f]; ok {
			t.Errorf("pod spec sets %s", f)
		}
	}
	if spec["automountServiceAccountToken"] != false {
		t.Error("the node agent gets an API token; it needs none")
	}
	sc, _, _ := unstructured.NestedMap(c, "securityContext")
	drop, _, _ := unstructured.NestedStringSlice(sc, "capabilities", "drop")
	add, _, _ := unstructured.NestedStringSlice(sc, "capabilities", "add")
	if sc["privileged"] == true || sc["allowPrivilegeEscalation"] != false || sc["readOnlyRootFilesystem"] != true ||
		!slices.Equal(drop, []string{"ALL"}) || len(add) != 0 {
		t.Errorf("node agent security context %v: want no privileges, no escalation, read-only root, every capability dropped", sc)
	}
	tol, _, _ := unstructured.NestedSlice(spec, "tolerations")
	if len(tol) != 1 || tol[0].(map[string]any)["key"] != controller.Taint || tol[0].(map[string]any)["effect"] != "NoSchedule" {
		t.Errorf("tolerations %v: want banger's taint %s", tol, controller.Taint)
	}
}

func TestObjectsPlacement(t *testing.T) {
	objs, err := Objects(Options{Accel: "tcg", NodeSelector: "banger.dev/node=yes,zone=a", NodeImage: "reg.example/node:1"})
	if err != nil {
		t.Fatal(err)
	}
	args := controllerContainer(t, objs)["args"].([]any)
	if !slices.Contains(args, any("--accel=tcg")) || slices.Contains(args, any("--accel=kvm")) ||
		!slices.Contains(args, any("--node-selector=banger.dev/node=yes,zone=a")) {
		t.Errorf("controller args %v: want --accel=tcg (once) and the node selector", args)
	}
	spec, c := nodeAgent(t, objs)
	sel, _, _ := unstructured.NestedStringMap(spec, "nodeSelector")
	if len(sel) != 2 || sel["banger.dev/node"] != "yes" || sel["zone"] != "a" {
		t.Errorf("node agent selector %v: want the launcher Pods'", sel)
	}
	if c["image"] != "reg.example/node:1" {
		t.Errorf("node image %v", c["image"])
	}
	for _, bad := range []Options{{Accel: "auto"}, {NodeSelector: "zone"}, {NodeSelector: "a=b c"}} {
		if _, err := Objects(bad); err == nil {
			t.Errorf("Objects(%+v): no error", bad)
		}
	}
}
