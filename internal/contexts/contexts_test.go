package contexts

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bangervm/banger/errdefs"
)

// kubeconfig writes a kubeconfig with contexts "a" (namespace team) and
// "b" (no namespace), "a" current.
func kubeconfig(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "kubeconfig")
	const cfg = `apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: "https://127.0.0.1:6443"}
users:
- name: u
  user: {token: secret}
contexts:
- name: a
  context: {cluster: c, user: u, namespace: team}
- name: b
  context: {cluster: c, user: u}
current-context: a
`
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestComplete(t *testing.T) {
	kc := kubeconfig(t)
	tests := []struct {
		in      Context
		kctx    string
		ns      string
		wantErr string
	}{
		{in: Context{Name: "x", Kubeconfig: kc}, kctx: "a", ns: "team"},
		{in: Context{Name: "x", Kubeconfig: kc, KubeContext: "b"}, kctx: "b", ns: "default"},
		{in: Context{Name: "x", Kubeconfig: kc, KubeContext: "b", Namespace: "sbx"}, kctx: "b", ns: "sbx"},
		{in: Context{Name: "x", Kubeconfig: kc, KubeContext: "nope"}, wantErr: `has no context "nope" (it has: a, b)`},
		{in: Context{Name: "x", Kubeconfig: filepath.Join(t.TempDir(), "missing")}, wantErr: "no such file"},
		{in: Context{Name: "x"}, wantErr: "needs --kubeconfig"},
	}
	for _, tt := range tests {
		got, err := Complete(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errdefs.IsInvalidArgument(err) {
				t.Errorf("Complete(%+v) = %v, want an invalid-argument error with %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got.KubeContext != tt.kctx || got.Namespace != tt.ns || got.Kubeconfig != kc {
			t.Errorf("Complete(%+v) = %+v, %v; want kube context %s, namespace %s", tt.in, got, err, tt.kctx, tt.ns)
		}
		if _, err := RESTConfig(got); err != nil {
			t.Errorf("RESTConfig(%+v): %v", got, err)
		}
	}
}

func TestFileRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config", "contexts.json")
	f, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if l := f.List(); len(l) != 1 || !l[0].IsLocal() || !l[0].Current {
		t.Fatalf("empty file lists %+v, want local, current", l)
	}
	for _, n := range []string{"team", "alpha"} {
		if err := f.Add(Context{Name: n, Kubeconfig: "/k", KubeContext: "a", Namespace: "ns"}); err != nil {
			t.Fatal(err)
		}
	}
	for _, bad := range []string{"team", "local", "Bad Name"} {
		if err := f.Add(Context{Name: bad}); err == nil {
			t.Errorf("Add(%q) accepted", bad)
		}
	}
	if err := f.Use("team"); err != nil {
		t.Fatal(err)
	}
	if err := f.Use("nope"); !errdefs.IsNotFound(err) || !strings.Contains(err.Error(), "banger context list") {
		t.Errorf("Use(nope) = %v, want not found naming banger context list", err)
	}
	if err := Save(path, f); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("saved file: %v, %v; want mode 0600", fi, err)
	}
	g, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range g.List() {
		s := c.Name
		if c.Current {
			s += "*"
		}
		got = append(got, s)
	}
	if strings.Join(got, " ") != "local alpha team*" {
		t.Errorf("listed %v, want local alpha team*", got)
	}

	if err := g.Remove("local"); !errdefs.IsInvalidArgument(err) {
		t.Errorf("Remove(local) = %v, want refused", err)
	}
	if err := g.Remove("ghost"); !errdefs.IsNotFound(err) {
		t.Errorf("Remove(ghost) = %v, want not found", err)
	}
	// Removing the current context falls back to local.
	if err := g.Remove("team"); err != nil {
		t.Fatal(err)
	}
	if c, err := g.Resolve("", ""); err != nil || !c.IsLocal() {
		t.Errorf("after removing the current context: %+v, %v; want local", c, err)
	}
}

func TestResolve(t *testing.T) {
	f := File{Current: "team", Contexts: []Context{{Name: "team"}, {Name: "other"}}}
	tests := []struct {
		flag, env string
		want      string
		wantErr   string
	}{
		{want: "team"},
		{env: "other", want: "other"},
		{flag: "local", env: "other", want: "local"},
		{env: "local", want: "local"},
		{flag: "ghost", wantErr: `--context names context "ghost"`},
		{env: "ghost", wantErr: `BANGER_CONTEXT names context "ghost"`},
	}
	for _, tt := range tests {
		c, err := f.Resolve(tt.flag, tt.env)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "banger context list") {
				t.Errorf("Resolve(%q, %q) = %v, want error %q naming banger context list", tt.flag, tt.env, err, tt.wantErr)
			}
			continue
		}
		if err != nil || c.Name != tt.want {
			t.Errorf("Resolve(%q, %q) = %+v, %v; want %s", tt.flag, tt.env, c, err, tt.want)
		}
	}
	// A current context removed by hand from the file is an error, not
	// a silent switch to local.
	f = File{Current: "gone"}
	if _, err := f.Resolve("", ""); !errdefs.IsNotFound(err) {
		t.Errorf("Resolve with a dangling current context = %v, want not found", err)
	}
}
