//go:build kube

package remote_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	crclient "sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/bangervm/banger/api"
	kapi "github.com/bangervm/banger/internal/kube/api"
	"github.com/bangervm/banger/internal/kube/controller"
	"github.com/bangervm/banger/internal/kube/kubetest"
	"github.com/bangervm/banger/internal/testutil/kubecluster"
)

// A node lost: the kubelet of the VM's node stops (SIGSTOP: the node cut
// off, its Pods' processes running on) and, once kube-controller-manager
// marks the node's Ready condition Unknown, the Sandbox says phase
// Unknown, reason NodeLost, naming the node; through the CLI, as a user
// holding only the README's RBAC, vm list and vm list --json show the VM
// unknown with that reason, vm exec and vm stop are refused at once
// instead of hanging on the silent kubelet, vm prune leaves it, and vm
// delete -f of a second VM returns at once, vm show saying it is being
// deleted until the node is back and its Sandbox, Pod and claim go. When the kubelet goes on, the Sandbox
// is Running and the VM running again. (On the way, vm list's
// short id: the UID's first group, which vm show finds.) The launcher is
// the busybox stand-in: no guest boots.
func TestNodeLost(t *testing.T) {
	start := time.Now()
	cl := kubecluster.StartWith(t, kubecluster.Options{NodeMonitorGracePeriod: 15 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	kubetest.InstallCRD(ctx, t, cl)
	admin := kubetest.Client(t, cl.Config)
	quietController()
	kubetest.StartController(t, cl.Config, standInLauncher())
	restrictedUser(ctx, t, cl, admin)
	run, must := cliAs(t, cl)
	must("vm", "create", "--name", "box", "--image", "debian", "--memory", "128")
	must("vm", "create", "--name", "doomed", "--image", "debian", "--memory", "128")
	t.Logf("box running at %s", time.Since(start).Round(100*time.Millisecond))

	// vm list shows the Sandbox UID's first group as the id, which vm
	// show finds as it finds the whole UID.
	var sb kapi.Sandbox
	if err := admin.Get(ctx, crclient.ObjectKey{Namespace: "default", Name: "box"}, &sb); err != nil {
		t.Fatal(err)
	}
	short, _, _ := strings.Cut(string(sb.UID), "-")
	if out := must("vm", "list"); !strings.Contains(out, short+" ") || strings.Contains(out, string(sb.UID)) {
		t.Errorf("vm list:\n%s\nwant id %s, not the whole UID %s", out, short, sb.UID)
	}
	if out := must("vm", "show", short); !strings.Contains(out, string(sb.UID)) {
		t.Errorf("vm show %s:\n%s\nwant box, with its whole id", short, out)
	}

	cl.PauseKubelet(t)
	kubetest.Poll(ctx, t, "sandbox box on a lost node", func() (bool, error) {
		if err := admin.Get(ctx, crclient.ObjectKey{Namespace: "default", Name: "box"}, &sb); err != nil {
			return false, err
		}
		return sb.Status.Phase == kapi.PhaseUnknown, fmt.Errorf("phase %s", sb.Status.Phase)
	})
	t.Logf("box unknown at %s: %+v", time.Since(start).Round(100*time.Millisecond), sb.Status)
	if st := sb.Status; st.Reason != controller.ReasonNodeLost || !strings.Contains(st.Message, "node "+kubecluster.NodeName+" stopped reporting") || st.Node != kubecluster.NodeName {
		t.Errorf("status on a lost node %+v: want reason %s and a message naming node %s", st, controller.ReasonNodeLost, kubecluster.NodeName)
	}

	out := must("vm", "list")
	if !strings.Contains(out, "unknown") || !strings.Contains(out, "vm box is unknown: NodeLost: node "+kubecluster.NodeName+" stopped reporting") {
		t.Errorf("vm list on a lost node:\n%s\nwant box unknown, and why under the table", out)
	}
	var vms []api.VM
	err := json.Unmarshal([]byte(must("vm", "list", "--json")), &vms)
	if i := slices.IndexFunc(vms, func(v api.VM) bool { return v.Name == "box" }); err != nil || i < 0 ||
		vms[i].State != api.VMUnknown || vms[i].Node != kubecluster.NodeName || !strings.Contains(vms[i].Reason, controller.ReasonNodeLost) {
		t.Errorf("vm list --json on a lost node: %+v, %v; want box unknown on %s with reason %s", vms, err, kubecluster.NodeName, controller.ReasonNodeLost)
	}
	if code, _, errOut := run("vm", "exec", "box", "--", "true"); code == 0 || !strings.Contains(errOut, "try again when the node is back") {
		t.Errorf("vm exec on a lost node: exit %d, stderr %q; want a refusal saying to wait for the node", code, errOut)
	}
	if code, out, errOut := run("vm", "prune", "-f"); code != 0 || out != "" {
		t.Errorf("vm prune on a lost node: exit %d, stdout %q, stderr %q; want the VMs kept", code, out, errOut)
	}
	if code, _, errOut := run("vm", "stop", "box"); code != 1 || !strings.Contains(errOut, "can be stopped once its node answers") {
		t.Errorf("vm stop on a lost node: exit %d, stderr %q; want a refusal naming delete --force", code, errOut)
	}
	// Delete returns at once; vm show says the VM is being deleted until
	// the node answers, when its Pod, Sandbox and claim go.
	must("vm", "delete", "-f", "doomed")
	if out := must("vm", "show", "doomed"); !strings.Contains(out, "stopping") || !strings.Contains(out, "being deleted once its node answers") {
		t.Errorf("vm show after deleting a VM on a lost node:\n%s\nwant doomed being deleted once the node answers", out)
	}

	cl.ResumeKubelet(t)
	kubetest.Poll(ctx, t, "vm box running again", func() (bool, error) {
		var vms []api.VM
		code, out, errOut := run("vm", "list", "--json")
		if code != 0 || json.Unmarshal([]byte(out), &vms) != nil || len(vms) != 1 {
			return false, fmt.Errorf("exit %d, %q, %q", code, out, errOut)
		}
		return vms[0].State == api.VMRunning, fmt.Errorf("%s: %s", vms[0].State, vms[0].Reason)
	})
	t.Logf("box running again at %s", time.Since(start).Round(100*time.Millisecond))
	kubetest.Poll(ctx, t, "doomed's sandbox, pod and claim gone", func() (bool, error) {
		var sbs kapi.SandboxList
		var pods corev1.PodList
		var pvcs corev1.PersistentVolumeClaimList
		err := errors.Join(admin.List(ctx, &sbs, crclient.InNamespace("default")), admin.List(ctx, &pods, crclient.InNamespace("default")),
			admin.List(ctx, &pvcs, crclient.InNamespace("default")))
		return err == nil && len(sbs.Items) == 1 && len(pods.Items) == 1 && len(pvcs.Items) == 1,
			fmt.Errorf("%d sandboxes, %d pods, %d claims, %v", len(sbs.Items), len(pods.Items), len(pvcs.Items), err)
	})
	must("vm", "delete", "-f", "box")
}
