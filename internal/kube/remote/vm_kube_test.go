//go:build kube

package remote_test

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/client"
	"github.com/bangervm/banger/internal/engine/enginetest"
	"github.com/bangervm/banger/internal/kernel"
	kapi "github.com/bangervm/banger/internal/kube/api"
	"github.com/bangervm/banger/internal/kube/controller"
	"github.com/bangervm/banger/internal/kube/images"
	"github.com/bangervm/banger/internal/testutil"
	"github.com/bangervm/banger/internal/testutil/kubecluster"
)

// launcherImage builds banger.dev/launcher:dev from this tree (static
// banger-launcher and banger-agent, Debian's cloud kernel) as a
// docker-save tar.
func launcherImage(t *testing.T) string {
	t.Helper()
	testutil.RequireTool(t, "qemu-system-x86_64", "qemu-system-x86")
	testutil.RequireTool(t, "mke2fs", "e2fsprogs")
	deb := enginetest.DebianCloudDeb(t)
	bin, kdir := t.TempDir(), t.TempDir()
	_, self, _, _ := runtime.Caller(0)
	cmd := exec.Command("go", "build", "-trimpath", "-o", bin+"/", "./cmd/banger-launcher", "./cmd/banger-agent")
	cmd.Dir = filepath.Join(filepath.Dir(self), "..", "..", "..")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	if _, err := kernel.ImportDeb(t.Context(), kdir, deb); err != nil {
		t.Fatal(err)
	}
	img, err := images.LauncherImage(t.Context(), images.LauncherConfig{
		Launcher: filepath.Join(bin, "banger-launcher"), Agent: filepath.Join(bin, "banger-agent"),
		Kernel: filepath.Join(kdir, "vmlinux"), Initrd: filepath.Join(kdir, "initrd.img"),
	})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "images.tar")
	if err := images.WriteTar(path, map[string]v1.Image{images.Launcher: img}); err != nil {
		t.Fatal(err)
	}
	return path
}

// With the real launcher: banger's client on a cluster context creates a
// VM (a busybox guest under TCG) whose Pod turns Ready, runs commands in
// it with their output and exit status, copies a file in and out, reads
// its console log (the boot is quiet: some lines), stops and starts it
// with the file kept on its disk, and deletes it, leaving no Pod.
func TestClusterContextVM(t *testing.T) {
	start := time.Now()
	tarPath := launcherImage(t)
	t.Logf("launcher image built at %s", time.Since(start).Round(100*time.Millisecond))
	cl := kubecluster.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if err := cl.ImportImages(ctx, tarPath); err != nil {
		t.Fatal(err)
	}
	reg := testutil.NewRegistry(t)
	reg.Push(t, testutil.BusyboxImage(t), "test/busybox:1")
	ln, err := cl.Listen(0)
	if err != nil {
		t.Fatal(err)
	}
	ref := reg.Serve(t, ln) + "/test/busybox:1"
	crd, err := kapi.LoadCRD(kapi.CRDPath())
	if err == nil {
		err = cl.CreateCRD(ctx, crd)
	}
	if err != nil {
		t.Fatal(err)
	}
	l := controller.DefaultLauncher(images.Launcher)
	l.PullPolicy = corev1.PullNever
	startController(t, cl.Config, l)

	c := contextClient(t, cl.Config)

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
}
