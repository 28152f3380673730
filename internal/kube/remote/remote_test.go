package remote

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"k8s.io/client-go/rest"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/client"
	"github.com/bangervm/banger/errdefs"
)

// inProcessClient is a client of h served in this process, as the CLI
// serves a cluster context.
func inProcessClient(t *testing.T, h http.Handler) *client.Client {
	t.Helper()
	dial, stop := InProcess(h)
	t.Cleanup(stop)
	return client.NewWithDial("test", dial)
}

// What has no meaning on a cluster answers a clear error, without asking
// the cluster (its address here refuses connections).
func TestRoutesNotOnACluster(t *testing.T) {
	h, err := New(Config{REST: &rest.Config{Host: "http://127.0.0.1:1"}, Namespace: "ns", Context: "team"})
	if err != nil {
		t.Fatal(err)
	}
	c := inProcessClient(t, h)
	ctx := context.Background()
	if v, err := c.Version(ctx); err != nil || v.APIVersion != api.Version {
		t.Errorf("Version = %+v, %v", v, err)
	}
	calls := map[string]func() error{
		"images":     func() error { _, err := c.Images(ctx); return err },
		"image pull": func() error { _, err := c.PullImage(ctx, api.PullImageRequest{Ref: "x"}, nil); return err },
		"kernels":    func() error { _, err := c.Kernels(ctx); return err },
		"templates":  func() error { _, err := c.Templates(ctx); return err },
		"engine":     func() error { _, err := c.Engine(ctx); return err },
		"vm set":     func() error { _, err := c.UpdateVM(ctx, "box", api.UpdateVMRequest{VCPU: 2}); return err },
		"shutdown":   func() error { return c.Shutdown(ctx) },
		"forward": func() error {
			_, err := c.AddVMForward(ctx, "box", api.Forward{HostPort: 8080, GuestPort: 80})
			return err
		},
		"forwards": func() error { _, err := c.VMForwards(ctx, "box"); return err },
	}
	for name, call := range calls {
		err := call()
		if !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "not available on a cluster context (context team)") {
			t.Errorf("%s: %v, want failed precondition: not available on a cluster context", name, err)
		}
	}
	// The cluster is asked for the rest, and its failure has a class.
	if _, err := c.VMs(ctx); !errdefs.IsUnavailable(err) || !strings.Contains(err.Error(), "list sandboxes in namespace ns") {
		t.Errorf("VMs with no cluster: %v, want unavailable", err)
	}
}

// launcherStandIn serves what a launcher's API would for VM "box": an
// exec that echoes stdin and exits 3, and the request URI of any other
// request, so the test sees the path and query the proxy sent.
func launcherStandIn(t *testing.T) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/vms/box/exec" {
			fmt.Fprintf(w, "%s %s", r.Method, r.URL.RequestURI())
			return
		}
		if r.Header.Get("Upgrade") != api.ExecUpgrade || r.Header.Get(api.HeaderVersion) != api.Version {
			http.Error(w, "not upgraded", http.StatusBadRequest)
			return
		}
		if _, err := io.ReadAll(r.Body); err != nil { // the ExecRequest
			t.Error(err)
			return
		}
		conn, brw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: %s\r\nConnection: Upgrade\r\n\r\n", api.ExecUpgrade)
		brw.Flush()
		for {
			typ, p, err := api.ReadFrame(brw.Reader)
			if err != nil || typ == api.FrameStdinEOF {
				break
			}
			if typ == api.FrameStdin {
				api.WriteFrame(conn, api.FrameStdout, bytes.ToUpper(p))
			}
		}
		api.WriteFrame(conn, api.FrameExit, []byte(`{"code":3}`))
	})
}

// The proxy sends a VM's routes to its launcher's API with the path
// rewritten to the launcher's name for the VM, the query kept, and an
// exec upgrade carried both ways.
func TestProxyToLauncher(t *testing.T) {
	launcherDial, stop := InProcess(launcherStandIn(t))
	t.Cleanup(stop)
	var dialed []target
	s := &server{c: Config{Namespace: "ns"}, dial: func(ctx context.Context, tg target) (net.Conn, error) {
		dialed = append(dialed, tg)
		return launcherDial(ctx)
	}}
	target := target{Namespace: "ns", Pod: "box-vm", Container: "launcher"}
	mux := http.NewServeMux()
	mux.HandleFunc(api.PathVM+"{ref}/{rest...}", func(w http.ResponseWriter, r *http.Request) {
		s.reverseProxy(target, launcherPath("box", r.PathValue("rest")), "box").ServeHTTP(w, r)
	})
	c := inProcessClient(t, mux)
	ctx := context.Background()

	var out bytes.Buffer
	st, err := c.Exec(ctx, "0a1b2c3d", api.ExecRequest{Argv: []string{"cat"}}, client.ExecIO{Stdin: strings.NewReader("hello"), Stdout: &out})
	if err != nil || st.Code != 3 || out.String() != "HELLO" {
		t.Errorf("exec through the proxy: status %+v, stdout %q, %v; want 3 and HELLO", st, out.String(), err)
	}
	rc, err := c.CopyFromVM(ctx, "0a1b2c3d", "/etc/os-release")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(bufio.NewReader(rc))
	rc.Close()
	if want := "GET /v1/vms/box/archive?path=%2Fetc%2Fos-release"; string(b) != want {
		t.Errorf("archive request reached the launcher as %q, want %q", b, want)
	}
	if len(dialed) != 2 || dialed[0] != target {
		t.Errorf("dialed %v, want %v twice (one exec per request)", dialed, target)
	}
}
