//go:build kube

package remote_test

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	crclient "sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/client"
	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/cli"
	kapi "github.com/bangervm/banger/internal/kube/api"
	"github.com/bangervm/banger/internal/kube/controller"
	"github.com/bangervm/banger/internal/kube/kubetest"
	"github.com/bangervm/banger/internal/kube/remote"
	"github.com/bangervm/banger/internal/testutil/kubecluster"
)

// standIn is the launcher Pod's program in place of the real launcher
// (whose VM needs its image and a registry): it installs a
// `banger-launcher` whose api answers one HTTP request — an exec with the
// upgrade, then a stdout frame "hello" and exit status 3; anything else
// with its request line, so the test sees what reached the Pod — and
// whose ready (the readiness probe) passes 3 s after the start, and sleeps
// until SIGTERM. The test image's busybox has few applet links; busybox
// has the rest.
const standIn = `cat > /bin/banger-launcher <<'EOF'
#!/bin/sh
case "$1" in
ready) test -e /tmp/ready; exit ;;
api) ;;
*) exit 2 ;;
esac
read -r line
line=$(printf %s "$line" | busybox tr -d '\r')
len=0
while read -r h; do
  h=$(printf %s "$h" | busybox tr -d '\r')
  [ -z "$h" ] && break
  case "$h" in Content-Length:*) len=${h#*: } ;; esac
done
case "$line" in
*"/exec HTTP/1.1")
  head -c "$len" >/dev/null
  printf 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: banger-exec\r\nConnection: Upgrade\r\n\r\n'
  printf 'o\000\000\000\005hello'
  printf 'q\000\000\000\012{"code":3}'
  exit 0 ;;
esac
printf 'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s' "${#line}" "$line"
EOF
busybox chmod 755 /bin/banger-launcher
(sleep 3; : > /tmp/ready) &
trap 'exit 0' TERM
sleep 3600 & wait`

// userRole is what the README says a user of a cluster context needs, in
// one namespace.
var userRole = []rbacv1.PolicyRule{
	{APIGroups: []string{kapi.Group}, Resources: []string{kapi.Resource}, Verbs: []string{"get", "list", "create", "delete", "patch"}},
	{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list"}},
	{APIGroups: []string{""}, Resources: []string{"pods/exec"}, Verbs: []string{"create"}},
}

// standInLauncher runs standIn in busybox.
func standInLauncher() controller.Launcher {
	l := controller.DefaultLauncher(kubecluster.BusyboxImage)
	l.PullPolicy = corev1.PullNever
	// Its Sandboxes' images are never pulled: the stand-in is no VM.
	l.ImageFromNode = false
	l.Command = []string{"sh", "-c", standIn}
	// Small enough that two VMs fit the node's 2 CPUs.
	l.CPUOverhead.Set(0)
	return l
}

// grantUser gives user the README's rights in namespace default.
func grantUser(ctx context.Context, t *testing.T, c crclient.Client, user string) {
	t.Helper()
	role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "banger-user", Namespace: "default"}, Rules: userRole}
	binding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "banger-user", Namespace: "default"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: "User", Name: user}},
	}
	for _, o := range []crclient.Object{role, binding} {
		if err := c.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
}

// contextClient is banger's client on namespace default of the cluster
// cfg reaches, as a cluster context's.
func contextClient(t *testing.T, cfg *rest.Config) *client.Client {
	t.Helper()
	h, err := remote.New(remote.Config{REST: cfg, Namespace: "default", Context: "test", Poll: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	dial, stop := remote.InProcess(h)
	t.Cleanup(stop)
	return client.NewWithDial("test", dial)
}

// events collects progress messages.
type events struct {
	mu   sync.Mutex
	msgs []string
	seen chan string
}

func (e *events) add(ev api.Event) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.msgs = append(e.msgs, ev.Message)
	if e.seen != nil {
		select {
		case e.seen <- ev.Message:
		default:
		}
	}
}

func (e *events) String() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return strings.Join(e.msgs, "\n")
}

// On a real cluster, as a user holding only the README's RBAC: create
// streams the launcher Pod's progress until it is Ready, list and get
// (by name and id prefix) map Sandboxes to VMs with labels and node,
// routes under a VM reach `banger-launcher api` in its Pod through exec
// with the path rewritten to the launcher's name for the VM, the
// workspace is recorded on the Sandbox, delete refuses a running VM
// without force and waits until the Pod is gone, a create that cannot be
// scheduled reports why and is rolled back when the caller gives up, and
// prune deletes a failed VM and keeps a running one. The launcher is a
// busybox stand-in (no VM boots): the real launcher is the launcher
// helper's.
func TestClusterContext(t *testing.T) {
	start := time.Now()
	cl := kubecluster.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	admin := kubetest.Client(t, cl.Config)
	kubetest.InstallCRD(ctx, t, cl)
	quietController()
	kubetest.StartController(t, cl.Config, standInLauncher())
	c := contextClient(t, restrictedUser(ctx, t, cl, admin))

	var ev events
	box, err := c.CreateVM(ctx, api.CreateVMRequest{Name: "box", Image: "debian", MemoryMiB: 128, DiskBytes: 512 << 20, Labels: map[string]string{"team": "a"}, TTLSeconds: 3600}, ev.add)
	if err != nil {
		t.Fatalf("create: %v\nprogress:\n%s", err, ev.String())
	}
	t.Logf("box ready at %s; progress:\n%s", time.Since(start).Round(100*time.Millisecond), ev.String())
	if box.State != api.VMRunning || box.Node != kubecluster.NodeName || box.DiskBytes != 512<<20 || box.ExpiresAt == nil || box.ID == "" {
		t.Errorf("created %+v: want running on %s, 512 MiB of disk, an expiry and an id", box, kubecluster.NodeName)
	}
	if p := ev.String(); !strings.Contains(p, "sandbox box created in namespace default") || !strings.Contains(p, "launcher started on node "+kubecluster.NodeName+", waiting for the VM to be ready") ||
		!strings.Contains(p, "vm box ready on node "+kubecluster.NodeName) {
		t.Errorf("progress lacks creation or readiness:\n%s", p)
	}

	vms, err := c.VMsLabeled(ctx, map[string]string{"team": "a"})
	if err != nil || len(vms) != 1 || vms[0].Name != "box" || vms[0].State != api.VMRunning {
		t.Errorf("list team=a: %+v, %v; want box running", vms, err)
	}
	if vms, err := c.VMsLabeled(ctx, map[string]string{"team": "b"}); err != nil || len(vms) != 0 {
		t.Errorf("list team=b: %+v, %v; want none", vms, err)
	}
	for _, ref := range []string{"box", box.ID[:8]} {
		if v, err := c.VM(ctx, ref); err != nil || v.ID != box.ID {
			t.Errorf("get %s: %+v, %v; want box", ref, v, err)
		}
	}
	if _, err := c.VM(ctx, "ghost"); !errdefs.IsNotFound(err) {
		t.Errorf("get ghost: %v, want not found", err)
	}

	// A VM's routes reach its Pod through exec: the stand-in answers
	// with the request line it was sent.
	var logs bytes.Buffer
	if err := c.VMLogs(ctx, box.ID[:8], false, &logs); err != nil || logs.String() != "GET /v1/vms/box/logs HTTP/1.1" {
		t.Errorf("logs through the launcher: %q, %v; want the request line for the launcher's name of the VM", logs.String(), err)
	}
	var out bytes.Buffer
	st, err := c.Exec(ctx, box.ID[:8], api.ExecRequest{Argv: []string{"true"}}, client.ExecIO{Stdout: &out})
	if err != nil || st.Code != 3 || out.String() != "hello" {
		t.Errorf("exec through the launcher: status %+v, stdout %q, %v; want 3 and hello", st, out.String(), err)
	}
	v, err := c.SetVMWorkspace(ctx, "box", "/root/repo")
	if err != nil || v.Workspace != "/root/repo" {
		t.Errorf("set workspace: %+v, %v; want /root/repo recorded", v, err)
	}
	if v, err := c.VM(ctx, "box"); err != nil || v.Workspace != "/root/repo" {
		t.Errorf("after setting the workspace: %+v, %v", v, err)
	}

	// A create that cannot be scheduled says why; giving up rolls it back.
	big := events{seen: make(chan string, 16)}
	cctx, ccancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() {
		_, err := c.CreateVM(cctx, api.CreateVMRequest{Name: "big", Image: "debian", MemoryMiB: 1 << 20}, big.add)
		errc <- err
	}()
	for msg := range big.seen {
		if strings.Contains(msg, "waiting for a node") && strings.Contains(msg, "Insufficient memory") {
			break
		}
	}
	ccancel()
	if err := <-errc; !errdefs.IsCanceled(err) {
		t.Errorf("cancelled create: %v, want canceled", err)
	}
	waitFor(ctx, t, "big rolled back", func() bool {
		err := admin.Get(ctx, crclient.ObjectKey{Namespace: "default", Name: "big"}, &kapi.Sandbox{})
		return apierrors.IsNotFound(err)
	})
	t.Logf("big rolled back at %s; progress:\n%s", time.Since(start).Round(100*time.Millisecond), big.String())

	// Prune takes a failed VM (its Pod deleted behind its back) and
	// leaves a running one.
	if _, err := c.CreateVM(ctx, api.CreateVMRequest{Name: "doomed", Image: "debian", MemoryMiB: 128, Labels: map[string]string{"team": "a"}}, nil); err != nil {
		t.Fatal(err)
	}
	if err := admin.Delete(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "doomed-vm"}}); err != nil {
		t.Fatal(err)
	}
	waitFor(ctx, t, "doomed failed", func() bool {
		v, err := c.VM(ctx, "doomed")
		return err == nil && v.State == api.VMError
	})
	res, err := c.PruneVMs(ctx, map[string]string{"team": "a"})
	if err != nil || len(res.Deleted) != 1 || res.Deleted[0] != "doomed" {
		t.Errorf("prune team=a: %+v, %v; want doomed deleted", res, err)
	}
	t.Logf("pruned at %s", time.Since(start).Round(100*time.Millisecond))

	testCLI(t, cl.Kubeconfig)
	t.Logf("the CLI's round at %s", time.Since(start).Round(100*time.Millisecond))

	// Stop and start through spec.running, where the CRD has it (kubedisk);
	// a CRD without it is refused clearly.
	crd, err := os.ReadFile(kapi.CRDPath())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(crd), "running:") {
		if _, err := c.StopVM(ctx, "box"); !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "spec.running") {
			t.Errorf("stop on a CRD without spec.running: %v, want a failed precondition naming it", err)
		}
		_, err := c.CreateVM(ctx, api.CreateVMRequest{Name: "later", Image: "debian", MemoryMiB: 128, NoStart: true}, nil)
		if !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "spec.running") {
			t.Errorf("create --no-start on a CRD without spec.running: %v, want a failed precondition naming it", err)
		}
		waitFor(ctx, t, "later rolled back", func() bool {
			return apierrors.IsNotFound(admin.Get(ctx, crclient.ObjectKey{Namespace: "default", Name: "later"}, &kapi.Sandbox{}))
		})
		t.Log("the CRD has no spec.running: stop and create --no-start refused, start not tried")
	} else {
		r, err := c.StopVM(ctx, "box")
		if err != nil || r.VM.State != api.VMStopped || r.Method != "launcher" {
			t.Fatalf("stop: %+v, %v; want stopped by the launcher", r, err)
		}
		if pods := podCount(ctx, t, admin); pods != 0 {
			t.Errorf("stopped box leaves %d pods", pods)
		}
		var sev events
		v, err := c.StartVM(ctx, "box", sev.add)
		if err != nil || v.State != api.VMRunning {
			t.Fatalf("start: %+v, %v\nprogress:\n%s", v, err, sev.String())
		}
		t.Logf("box stopped and started at %s", time.Since(start).Round(100*time.Millisecond))
		later, err := c.CreateVM(ctx, api.CreateVMRequest{Name: "later", Image: "debian", MemoryMiB: 128, NoStart: true}, nil)
		if err != nil || later.State != api.VMStopped {
			t.Fatalf("create --no-start: %+v, %v; want stopped", later, err)
		}
		if err := c.DeleteVM(ctx, "later", false); err != nil {
			t.Errorf("delete a stopped vm: %v", err)
		}
	}

	// Delete: refused while running without force; with it, returns once
	// the Pod is gone.
	if err := c.DeleteVM(ctx, "box", false); !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "--force") {
		t.Errorf("delete a running vm without force: %v", err)
	}
	if err := c.DeleteVM(ctx, "box", true); err != nil {
		t.Fatal(err)
	}
	t.Logf("box deleted at %s", time.Since(start).Round(100*time.Millisecond))
	if pods := podCount(ctx, t, admin); pods != 0 {
		t.Errorf("after delete: %d pods, want none", pods)
	}
	if vms, err := c.VMs(ctx); err != nil || len(vms) != 0 {
		t.Errorf("after delete: %+v, %v; want no VMs", vms, err)
	}
}

func waitFor(ctx context.Context, t *testing.T, what string, ok func() bool) {
	t.Helper()
	kubetest.Poll(ctx, t, what, func() (bool, error) { return ok(), nil })
}

// quietController keeps the in-process controller's log to warnings.
func quietController() {
	ctrl.SetLogger(logr.FromSlogHandler(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
}

func podCount(ctx context.Context, t *testing.T, c crclient.Client) int {
	t.Helper()
	var pods corev1.PodList
	if err := c.List(ctx, &pods, crclient.InNamespace("default")); err != nil {
		t.Fatal(err)
	}
	return len(pods.Items)
}

// testCLI drives banger's own commands on a cluster context made from
// kubeconfig (admin rights), namespace default.
func testCLI(t *testing.T, kubeconfig string) {
	t.Setenv("BANGER_HOME", t.TempDir())
	t.Setenv("BANGER_CONTEXT", "")
	run := func(args ...string) (int, string, string) {
		f := cli.NewFactory()
		io, out, errOut := cli.TestStreams()
		f.IO = io
		return cli.Run(f, args), out.String(), errOut.String()
	}
	steps := []struct {
		args        []string
		code        int
		out, errOut string
	}{
		{args: []string{"context", "add", "k", "--kubeconfig", kubeconfig, "--namespace", "default"}, out: "added context k: namespace default"},
		{args: []string{"context", "use", "k"}},
		{args: []string{"vm", "create", "--name", "cli", "--image", "debian", "--memory", "128", "--label", "via=cli"}, out: "vm cli running"},
		{args: []string{"vm", "list", "--label", "via=cli"}, out: "cli"},
		{args: []string{"vm", "show", "cli"}, out: kubecluster.NodeName},
		{args: []string{"vm", "logs", "cli"}, out: "GET /v1/vms/cli/logs HTTP/1.1"},
		{args: []string{"vm", "delete", "cli"}, code: cli.ExitFailure, errOut: "delete it with --force"},
		{args: []string{"image", "list"}, code: cli.ExitFailure, errOut: "banger image list is not available on a cluster context (the current context is k"},
		{args: []string{"vm", "create", "--name", "noimage"}, code: cli.ExitFailure, errOut: "--image REF"},
		{args: []string{"vm", "delete", "-f", "cli"}, out: "deleted vm cli"},
		{args: []string{"vm", "show", "cli"}, code: cli.ExitFailure, errOut: "no such vm in namespace default of context k"},
	}
	for _, s := range steps {
		code, out, errOut := run(s.args...)
		if code != s.code || !strings.Contains(out, s.out) || !strings.Contains(errOut, s.errOut) {
			t.Fatalf("banger %s: exit %d\nstdout %q\nstderr %q\nwant exit %d, stdout with %q, stderr with %q", strings.Join(s.args, " "), code, out, errOut, s.code, s.out, s.errOut)
		}
	}
}
