//go:build kube

package remote_test

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	crclient "sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/client"
	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/cli"
	"github.com/bangervm/banger/internal/hostcmd"
	kapi "github.com/bangervm/banger/internal/kube/api"
	"github.com/bangervm/banger/internal/kube/kubetest"
	"github.com/bangervm/banger/internal/testutil"
	"github.com/bangervm/banger/internal/testutil/kubecluster"
)

// With the real launcher: banger's client on a cluster context, as a user
// holding only the README's RBAC, creates a VM (a busybox guest under
// TCG) whose Pod turns Ready, runs commands in it with their output and
// exit status, copies a file in and out, reads its console log (the boot
// is quiet: some lines) and follows it until cancelled, stops and starts
// it with the file kept on its disk, and deletes it, leaving no Pod.
func TestClusterContextVM(t *testing.T) {
	start := time.Now()
	tarPath := kubetest.LauncherImage(t)
	t.Logf("launcher image built at %s", time.Since(start).Round(100*time.Millisecond))
	cl := kubecluster.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	l := kubetest.ImportLauncher(ctx, t, cl, tarPath)
	reg := testutil.NewRegistry(t)
	reg.Push(t, testutil.BusyboxImage(t), "test/busybox:1")
	reg.Push(t, gitImage(t), "test/git:1")
	host := kubetest.ServeRegistry(t, cl, reg)
	ref := host + "/test/busybox:1"
	kubetest.InstallCRD(ctx, t, cl)
	quietController()
	kubetest.StartController(t, cl.Config, l)

	admin := kubetest.Client(t, cl.Config)
	c := contextClient(t, restrictedUser(ctx, t, cl, admin))

	var ev events
	v, err := c.CreateVM(ctx, api.CreateVMRequest{Name: "box", Image: ref, MemoryMiB: 256, DiskBytes: 512 << 20}, ev.add)
	if err != nil {
		t.Fatalf("create: %v\nprogress:\n%s", err, ev.String())
	}
	t.Logf("vm ready at %s; progress:\n%s", time.Since(start).Round(100*time.Millisecond), ev.String())

	var out, errb bytes.Buffer
	st, err := c.Exec(ctx, v.ID, api.ExecRequest{Argv: []string{"sh", "-c", "echo hello; exit 3"}}, client.ExecIO{Stdout: &out, Stderr: &errb})
	if err != nil || st.Code != 3 || out.String() != "hello\n" {
		t.Errorf("exec: %+v, %q (stderr %q), %v; want hello and exit 3", st, out.String(), errb.String(), err)
	}

	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	tw.WriteHeader(&tar.Header{Name: "note.txt", Mode: 0o644, Size: 5, Typeflag: tar.TypeReg})
	tw.Write([]byte("hi vm"))
	tw.Close()
	if err := c.CopyToVM(ctx, "box", "/root", &tb); err != nil {
		t.Fatalf("copy in: %v", err)
	}
	copyOut := func(what string) {
		t.Helper()
		rc, err := c.CopyFromVM(ctx, "box", "/root/note.txt")
		if err != nil {
			t.Fatalf("copy out %s: %v", what, err)
		}
		defer rc.Close()
		tr := tar.NewReader(rc)
		hdr, err := tr.Next()
		var got []byte
		if err == nil {
			got, err = io.ReadAll(tr)
		}
		if err != nil || hdr.Name != "note.txt" || string(got) != "hi vm" {
			t.Errorf("copy out %s: %v %v %q; want note.txt with hi vm", what, hdr, err, got)
		}
	}
	copyOut("")
	var logs bytes.Buffer
	if err := c.VMLogs(ctx, "box", false, &logs); err != nil || logs.Len() == 0 {
		t.Errorf("console log: %v, %d bytes; want the guest's console", err, logs.Len())
	}
	// Following: the console so far, then it ends when the caller gives
	// up.
	followed := &testutil.LockedBuffer{}
	lctx, lcancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() { errc <- c.VMLogs(lctx, "box", true, followed) }()
	waitFor(ctx, t, "vm logs -f to print the console", func() bool { return followed.Len() >= logs.Len() })
	lcancel()
	if err := <-errc; err != nil && !errdefs.IsCanceled(err) && !errors.Is(err, context.Canceled) {
		t.Errorf("vm logs -f cancelled: %v, want it to end cancelled", err)
	}
	t.Logf("commands and copies at %s", time.Since(start).Round(100*time.Millisecond))

	// Stop (the launcher syncs the guest when its Pod goes) and start (a
	// new Pod on the same disk): the file is still there.
	if r, err := c.StopVM(ctx, "box"); err != nil || r.VM.State != api.VMStopped {
		t.Fatalf("stop: %+v, %v", r, err)
	}
	if v, err := c.StartVM(ctx, "box", nil); err != nil || v.State != api.VMRunning {
		t.Fatalf("start: %+v, %v", v, err)
	}
	copyOut("after stop and start")
	t.Logf("stopped and started at %s", time.Since(start).Round(100*time.Millisecond))

	if err := c.DeleteVM(ctx, "box", true); err != nil {
		t.Fatal(err)
	}
	if vms, err := c.VMs(ctx); err != nil || len(vms) != 0 {
		t.Errorf("after delete: %+v, %v", vms, err)
	}
	t.Logf("deleted at %s", time.Since(start).Round(100*time.Millisecond))

	testCLIVM(ctx, t, cl, admin, ref, host+"/test/git:1")
	t.Logf("the CLI's round at %s", time.Since(start).Round(100*time.Millisecond))
}

// gitImage is the busybox test image with the host's git (and the
// libraries ldd lists for it) added: the workspace's guest scripts need
// git, and every command they run is built into git's own binary.
func gitImage(t *testing.T) v1.Image {
	t.Helper()
	testutil.RequireTool(t, "git", "git")
	git, err := exec.LookPath("git")
	if err != nil {
		t.Fatal(err)
	}
	libs, err := hostcmd.Ldd(t.Context(), git)
	if err != nil {
		t.Fatal(err)
	}
	entries := []testutil.TarEntry{}
	dirs := map[string]bool{}
	add := func(name, src string) {
		for d := filepath.Dir(name); d != "."; d = filepath.Dir(d) {
			if !dirs[d] && d != "bin" {
				dirs[d] = true
				entries = append(entries, testutil.TarEntry{Name: d + "/", Type: tar.TypeDir})
			}
		}
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		entries = append(entries, testutil.TarEntry{Name: name, Body: string(b), Mode: 0o755})
	}
	add("bin/git", git)
	for _, l := range libs {
		add(strings.TrimPrefix(l, "/"), l)
	}
	// Parents before children.
	sort.SliceStable(entries, func(i, j int) bool {
		return entries[i].Type == tar.TypeDir && entries[j].Type != tar.TypeDir
	})
	layer := testutil.Tar(t, entries...)
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(layer)), nil }, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(testutil.BusyboxImage(t), l)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// testCLIVM drives banger's own commands on a cluster context whose user
// holds only the README's RBAC (alice, impersonated by the admin
// kubeconfig): vm run --rm with a command (its output, its exit status,
// and nothing left behind: no Sandbox, Pod or claim), and a workspace
// round trip: a repository made here shipped by vm run -d, changed in the
// guest by vm exec, and vm workspace export's patch applied here by git;
// then, on that VM, vm exec -t (a terminal, the status passed through),
// vm ports (a server started in the guest), vm stats, and vm logs -f,
// which ends when vm stop stops the VM.
func testCLIVM(ctx context.Context, t *testing.T, cl *kubecluster.Cluster, admin crclient.Client, ref, gitRef string) {
	run, must := cliAs(t, cl)
	begin := time.Now()
	size := []string{"--memory", "256", "--disk-size", "512M"}

	args := append(append([]string{"vm", "run", "--rm", "--image", ref}, size...), "--", "sh", "-c", "echo out; exit 3")
	code, out, errOut := run(args...)
	if code != 3 || out != "out\n" {
		t.Errorf("banger %s: exit %d, stdout %q (stderr %q); want out and exit 3", strings.Join(args, " "), code, out, errOut)
	}
	var sbs kapi.SandboxList
	if err := admin.List(ctx, &sbs, crclient.InNamespace("default")); err != nil || len(sbs.Items) != 0 {
		t.Errorf("after vm run --rm: %d sandboxes, %v; want none", len(sbs.Items), err)
	}
	if pods := podCount(ctx, t, admin); pods != 0 {
		t.Errorf("after vm run --rm: %d pods, want none", pods)
	}
	// The claim goes by garbage collection, after its Sandbox.
	waitFor(ctx, t, "the claim of vm run --rm's VM gone", func() bool {
		var pvcs corev1.PersistentVolumeClaimList
		if err := admin.List(ctx, &pvcs, crclient.InNamespace("default")); err != nil {
			t.Fatal(err)
		}
		return len(pvcs.Items) == 0
	})

	t.Logf("vm run --rm done in %s", time.Since(begin).Round(100*time.Millisecond))

	repo := t.TempDir()
	gitc := func(stdin string, args ...string) string {
		t.Helper()
		cmd := exec.Command("git", append([]string{"-C", repo, "-c", "user.name=t", "-c", "user.email=t@example.com"}, args...)...)
		cmd.Stdin = strings.NewReader(stdin)
		b, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, b)
		}
		return string(b)
	}
	gitc("", "init", "-q")
	if err := os.WriteFile(filepath.Join(repo, "a.txt"), []byte("one\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	gitc("", "add", "a.txt")
	gitc("", "commit", "-q", "-m", "one")
	// Uncommitted on the host: shipped, and the base of the export.
	if err := os.WriteFile(filepath.Join(repo, "a.txt"), []byte("one\ntwo\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	must(append(append([]string{"vm", "run", "-d", "--name", "ws", "--image", gitRef}, size...), repo)...)
	if out := must("vm", "exec", "ws", "--", "sh", "-c", "cat a.txt; echo three >> a.txt; echo new > b.txt"); out != "one\ntwo\n" {
		t.Errorf("a.txt in the guest's workspace: %q, want the host's uncommitted tree", out)
	}
	patch := must("vm", "workspace", "export", "ws")
	gitc(patch, "apply", "-")
	for name, want := range map[string]string{"a.txt": "one\ntwo\nthree\n", "b.txt": "new\n"} {
		if b, err := os.ReadFile(filepath.Join(repo, name)); err != nil || string(b) != want {
			t.Errorf("%s after git apply of the export: %q, %v; want %q\npatch:\n%s", name, b, err, want, patch)
		}
	}
	t.Logf("workspace round trip done in %s", time.Since(begin).Round(100*time.Millisecond))

	// A terminal in the guest (vm exec -t), with the command's status.
	code, out, errOut = run("vm", "exec", "-t", "ws", "--", "sh", "-c", "tty; echo TERM=$TERM; exit 4")
	if code != 4 || !strings.Contains(out, "/dev/pts/") || !strings.Contains(out, "TERM=") {
		t.Errorf("vm exec -t: exit %d, stdout %q (stderr %q); want a pts, TERM and exit 4", code, out, errOut)
	}
	// vm ssh (a shell through the agent, no network needed): a command's
	// output and status.
	code, out, errOut = run("vm", "ssh", "ws", "--", "sh", "-c", "echo via-ssh; exit 6")
	if code != 6 || out != "via-ssh\n" {
		t.Errorf("vm ssh: exit %d, stdout %q (stderr %q); want via-ssh and exit 6", code, out, errOut)
	}
	// A listening port (busybox httpd in its own session, so that it
	// outlives the exec) in vm ports.
	must("vm", "exec", "ws", "--", "sh", "-c", "setsid httpd -f -p 8080 -h / </dev/null >/dev/null 2>&1 &")
	waitFor(ctx, t, "port 8080 in vm ports", func() bool {
		var ports []api.Port
		code, out, _ := run("vm", "ports", "ws", "--json")
		return code == 0 && json.Unmarshal([]byte(out), &ports) == nil && slices.ContainsFunc(ports, func(p api.Port) bool { return p.Port == 8080 })
	})
	if out := must("vm", "ports", "ws"); !strings.Contains(out, "8080") {
		t.Errorf("vm ports:\n%s\nwant 8080", out)
	}
	// One sample of the launcher's QEMU and the guest.
	var st api.VMStats
	if err := json.Unmarshal([]byte(must("vm", "stats", "ws", "--no-stream", "--json")), &st); err != nil || st.HostRSSBytes == 0 || st.Guest == nil ||
		st.Guest.MemTotalBytes == 0 || st.Guest.MemTotalBytes > 256<<20 || st.Guest.UptimeSeconds <= 0 {
		t.Errorf("vm stats --json: %+v (guest %+v), %v; want QEMU's memory and the 256 MiB guest's", st, st.Guest, err)
	}
	if out := must("vm", "stats", "ws", "--no-stream"); !strings.Contains(out, "guest memory:") {
		t.Errorf("vm stats:\n%s\nwant the guest's memory", out)
	}
	// vm logs -f follows the console until the VM stops.
	followed, errOut2 := &testutil.LockedBuffer{}, &testutil.LockedBuffer{}
	logsDone := make(chan int, 1)
	go func() {
		f := cli.NewFactory()
		f.IO = &cli.IOStreams{In: &bytes.Buffer{}, Out: followed, ErrOut: errOut2}
		logsDone <- cli.Run(f, []string{"vm", "logs", "-f", "ws"})
	}()
	waitFor(ctx, t, "vm logs -f to print the console", func() bool { return followed.Len() > 0 })
	must("vm", "stop", "ws")
	select {
	case code := <-logsDone:
		if code != 0 {
			t.Errorf("vm logs -f ended by vm stop: exit %d (stderr %q); want 0", code, errOut2.String())
		}
	case <-ctx.Done():
		t.Fatal("vm logs -f went on after vm stop")
	}
	must("vm", "delete", "-f", "ws")
	t.Logf("exec -t, ports, stats and logs -f done in %s", time.Since(begin).Round(100*time.Millisecond))
}

// cliAs runs banger's own commands, in this process, on a cluster
// context k (namespace default of cl) as alice (impersonated by the admin
// kubeconfig; restrictedUser gives her the README's RBAC). must fails the
// test unless the command exits 0, and returns its stdout.
func cliAs(t *testing.T, cl *kubecluster.Cluster) (run func(args ...string) (int, string, string), must func(args ...string) string) {
	t.Helper()
	kc, err := clientcmd.LoadFromFile(cl.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range kc.AuthInfos {
		a.Impersonate = "alice"
	}
	aliceKC := filepath.Join(t.TempDir(), "alice.kubeconfig")
	if err := clientcmd.WriteToFile(*kc, aliceKC); err != nil {
		t.Fatal(err)
	}
	t.Setenv("BANGER_HOME", t.TempDir())
	t.Setenv("BANGER_CONTEXT", "")
	run = func(args ...string) (int, string, string) {
		t.Helper()
		f := cli.NewFactory()
		io, out, errOut := cli.TestStreams()
		f.IO = io
		return cli.Run(f, args), out.String(), errOut.String()
	}
	must = func(args ...string) string {
		t.Helper()
		code, out, errOut := run(args...)
		if code != 0 {
			t.Fatalf("banger %s: exit %d\nstdout %q\nstderr %q", strings.Join(args, " "), code, out, errOut)
		}
		return out
	}
	must("context", "add", "k", "--kubeconfig", aliceKC, "--namespace", "default")
	must("context", "use", "k")
	return run, must
}

// restrictedUser gives alice the README's RBAC in namespace default and
// returns a config of cl's that acts as her.
func restrictedUser(ctx context.Context, t *testing.T, cl *kubecluster.Cluster, admin crclient.Client) *rest.Config {
	t.Helper()
	grantUser(ctx, t, admin, "alice")
	alice := rest.CopyConfig(cl.Config)
	alice.Impersonate = rest.ImpersonationConfig{UserName: "alice"}
	return alice
}
