package launcher

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/bangervm/banger/client"
	"github.com/bangervm/banger/internal/kube/api"
	"github.com/bangervm/banger/internal/kube/controller"
	"github.com/bangervm/banger/internal/testutil"
)

// testLog sends the launcher's log to the test's.
type testLog struct{ t *testing.T }

func (w testLog) Write(p []byte) (int, error) { w.t.Logf("%s", p); return len(p), nil }

// startLauncher runs Run in the background; stop cancels it (SIGTERM)
// and returns Run's result.
func startLauncher(t *testing.T, c Config) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, c) }()
	var once bool
	var res error
	stop = func() error {
		if !once {
			once = true
			cancel()
			res = <-done
		}
		return res
	}
	t.Cleanup(func() { stop() })
	return stop
}

func waitReady(t *testing.T, socket, name string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Minute)
	var err error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err = Ready(ctx, socket, name)
		cancel()
		if err == nil {
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatalf("launcher never ready: %v", err)
}

// The launcher, as a plain process here, boots the VM from an image it
// pulls, answers exec through API, stops the VM with its data flushed when
// told to end, and a second launcher on the same state starts the same VM
// with its disk (a new Pod on the Sandbox's volume).
func TestRunBootsVM(t *testing.T) {
	f := newFixture(t)
	t.Setenv("BANGER_AGENT", f.path("banger-agent"))
	reg := testutil.NewRegistry(t)
	ref := reg.Push(t, testutil.BusyboxImage(t), "test/busybox:1")
	runtimeDir, err := os.MkdirTemp("", "bl-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(runtimeDir) })
	cfg := Config{
		Name: "box", Spec: api.SandboxSpec{Image: ref, VCPUs: 1, MemoryMiB: 256, DiskSize: "256M", Net: api.NetNone},
		Home: t.TempDir(), Runtime: filepath.Join(runtimeDir, "run"), KernelDir: f.kernelDir,
		Log: slog.New(slog.NewTextHandler(testLog{t}, nil)),
	}
	socket := filepath.Join(cfg.Runtime, "api.sock")
	stop := startLauncher(t, cfg)
	waitReady(t, socket, "box")
	c := client.NewWithDial("launcher", pipeDial(socket))
	ctx := t.Context()
	checkExec(t, ctx, c, "box")
	if _, code := execIn(t, ctx, c, "box", "sh", "-c", "echo kept > /root/f"); code != 0 {
		t.Fatalf("write: exit %d", code)
	}
	if err := stop(); err != nil {
		t.Fatalf("launcher on SIGTERM: %v", err)
	}
	if err := Ready(ctx, socket, "box"); err == nil {
		t.Fatal("ready after the launcher ended")
	}

	stop = startLauncher(t, cfg)
	waitReady(t, socket, "box")
	if out, code := execIn(t, ctx, c, "box", "cat", "/root/f"); out != "kept\n" || code != 0 {
		t.Errorf("after a new launcher on the same state: %q, exit %d", out, code)
	}
	if err := stop(); err != nil {
		t.Fatalf("second launcher on SIGTERM: %v", err)
	}
}

// The controller writes what the launcher reads: same variables, and the
// state volume where the launcher keeps its state.
func TestControllerAgrees(t *testing.T) {
	if EnvSpec != controller.EnvSpec || EnvName != controller.EnvName || Home != controller.StatePath {
		t.Errorf("launcher reads %s, %s and keeps state in %s; the controller sets %s, %s and mounts %s",
			EnvSpec, EnvName, Home, controller.EnvSpec, controller.EnvName, controller.StatePath)
	}
}
