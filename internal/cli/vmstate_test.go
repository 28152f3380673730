package cli

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/client"
	"github.com/bangervm/banger/internal/apiserver"
	"github.com/bangervm/banger/internal/paths"
)

// serveAPI serves the daemon's real API handler over cfg's services on a
// unix socket for the test, and returns the socket.
func serveAPI(t *testing.T, cfg apiserver.Config) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "api.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg.Version = api.VersionInfo{Version: "test", APIVersion: api.Version}
	hs := &http.Server{Handler: apiserver.New(cfg)}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	return sock
}

type stoppedVMs struct{ apiserver.VMs }

func (stoppedVMs) Kill(ctx context.Context, ref string) (api.StopResult, error) {
	return api.StopResult{VM: api.VM{Name: ref}, Method: "already-stopped"}, nil
}

func (stoppedVMs) Stop(ctx context.Context, ref string) (api.StopResult, error) {
	return api.StopResult{VM: api.VM{Name: ref}, Method: "already-stopped"}, nil
}

// vm kill and vm stop of a VM that was not running say so, rather than
// "killed" or "stopped".
func TestStopAlreadyStopped(t *testing.T) {
	c := client.New(serveAPI(t, apiserver.Config{VMs: stoppedVMs{}}))
	for _, action := range []string{"kill", "stop"} {
		streams, out, errOut := TestStreams()
		f := &Factory{IO: streams, Layout: paths.Under(t.TempDir()), Client: func(context.Context) (*client.Client, error) { return c, nil }}
		if code := Run(f, []string{"vm", action, "box"}); code != 0 || out.String() != "vm box was already stopped\n" {
			t.Errorf("vm %s of a stopped VM: exit %d, %q %q", action, code, out.String(), errOut.String())
		}
	}
}

type vmIn struct {
	apiserver.VMs
	state string
}

func (v vmIn) Get(ctx context.Context, ref string) (api.VM, error) {
	return api.VM{Name: ref, State: v.state, IP: "172.30.0.5", Net: api.NetPublic}, nil
}

// ssh box.vm (banger ssh-proxy) to a VM that is not running says so and
// how to start it, instead of a refused connection.
func TestSSHProxyStoppedVM(t *testing.T) {
	c := client.New(serveAPI(t, apiserver.Config{VMs: vmIn{state: api.VMStopped}}))
	streams, _, errOut := TestStreams()
	f := &Factory{IO: streams, Layout: paths.Under(t.TempDir()), Client: func(context.Context) (*client.Client, error) { return c, nil }}
	if code := Run(f, []string{"ssh-proxy", "box.vm", "22"}); code != 1 || !strings.Contains(errOut.String(), "vm box is stopped, not running: start it (banger vm start box)") {
		t.Errorf("ssh-proxy to a stopped VM: exit %d, %q", code, errOut.String())
	}
}

func TestShortID(t *testing.T) {
	for id, want := range map[string]string{
		"0a1b2c3d4e5":                          "0a1b2c3d4e5",
		"d70185c7-4ec9-4c2a-980d-7c0ca5fe2aa1": "d70185c7",
		"ab-cd":                                "ab-cd",
		"":                                     "",
	} {
		if got := shortID(id); got != want {
			t.Errorf("shortID(%q) = %q, want %q", id, got, want)
		}
	}
}
