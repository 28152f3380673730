package cli

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bangervm/banger/client"
	"github.com/bangervm/banger/internal/contexts"
	"github.com/bangervm/banger/internal/paths"
)

// contextFactory is a factory whose daemon must not be contacted, with a
// kubeconfig holding kube context "ci" (namespace sandboxes).
func contextFactory(t *testing.T) (f *Factory, kubeconfig string) {
	t.Helper()
	t.Setenv(contexts.EnvContext, "")
	kubeconfig = filepath.Join(t.TempDir(), "kubeconfig")
	const cfg = `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "http://127.0.0.1:1"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: ci, context: {cluster: c, user: u, namespace: sandboxes}}]
current-context: ci
`
	if err := os.WriteFile(kubeconfig, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	io, _, _ := TestStreams()
	f = &Factory{IO: io, Layout: paths.Under(t.TempDir())}
	f.Client = f.contextClient(func(context.Context) (*client.Client, error) {
		t.Error("contacted the daemon")
		return nil, errors.New("unreachable")
	})
	return f, kubeconfig
}

// run runs args with fresh output buffers and returns the exit status,
// stdout and stderr.
func (f *Factory) run(args ...string) (int, string, string) {
	io, out, errOut := TestStreams()
	f.IO = io
	f.ContextFlag = ""
	code := Run(f, args)
	return code, out.String(), errOut.String()
}

func TestContextCommands(t *testing.T) {
	f, kc := contextFactory(t)
	steps := []struct {
		args    []string
		env     string
		code    int
		out     string // contained in stdout
		errOut  string // contained in stderr
		current string // the current context after the step, per list --json
	}{
		{args: []string{"context", "list"}, out: "*        local", current: "local"},
		{args: []string{"context", "add", "team"}, code: ExitUsage, errOut: "--kubeconfig is required"},
		{args: []string{"context", "add", "team", "--kubeconfig", filepath.Join(t.TempDir(), "none")}, code: ExitFailure, errOut: "no such file"},
		{args: []string{"context", "add", "team", "--kubeconfig", kc, "--kube-context", "prod"}, code: ExitFailure, errOut: `has no context "prod" (it has: ci)`},
		{args: []string{"context", "add", "team", "--kubeconfig", kc}, out: "added context team: namespace sandboxes of kube context ci", current: "local"},
		{args: []string{"context", "add", "team", "--kubeconfig", kc}, code: ExitFailure, errOut: "context \"team\" exists"},
		{args: []string{"context", "add", "other", "--kubeconfig", kc, "--namespace", "mine"}, current: "local"},
		{args: []string{"context", "use", "ghost"}, code: ExitFailure, errOut: "banger context list"},
		{args: []string{"context", "use", "team"}, out: "current context: team", current: "team"},
		{args: []string{"context", "list"}, out: "*        team   sandboxes  ci", current: "team"},
		// BANGER_CONTEXT and --context win over the stored current one.
		{args: []string{"context", "list"}, env: "other", out: "*        other  mine", current: "team"},
		{args: []string{"--context", "local", "context", "list"}, env: "other", out: "*        local", current: "team"},
		{args: []string{"--context", "ghost", "vm", "list"}, code: ExitFailure, errOut: `--context names context "ghost", which does not exist: see banger context list`},
		{args: []string{"vm", "list"}, env: "ghost", code: ExitFailure, errOut: `BANGER_CONTEXT names context "ghost"`},
		// What manages this machine says so on a cluster context.
		{args: []string{"image", "list"}, code: ExitFailure, errOut: "banger image list is not available on a cluster context (the current context is team"},
		{args: []string{"system", "status"}, code: ExitFailure, errOut: "banger --context local"},
		{args: []string{"context", "rm", "local"}, code: ExitFailure, errOut: "built in"},
		{args: []string{"context", "rm", "team"}, out: "removed context team", current: "local"},
		{args: []string{"context", "rm", "team"}, code: ExitFailure, errOut: "no such context"},
	}
	for _, s := range steps {
		t.Setenv(contexts.EnvContext, s.env)
		code, out, errOut := f.run(s.args...)
		if code != s.code || !strings.Contains(out, s.out) || !strings.Contains(errOut, s.errOut) {
			t.Fatalf("%v (BANGER_CONTEXT=%q): exit %d\nstdout %q\nstderr %q\nwant exit %d, stdout with %q, stderr with %q", s.args, s.env, code, out, errOut, s.code, s.out, s.errOut)
		}
		if s.current == "" {
			continue
		}
		t.Setenv(contexts.EnvContext, "")
		code, out, errOut = f.run("context", "list", "--json")
		var list []contexts.Context
		if err := json.Unmarshal([]byte(out), &list); err != nil || code != 0 {
			t.Fatalf("context list --json: exit %d, %v: %s %s", code, err, out, errOut)
		}
		var cur []string
		for _, c := range list {
			if c.Current {
				cur = append(cur, c.Name)
			}
		}
		if len(cur) != 1 || cur[0] != s.current {
			t.Fatalf("after %v: current %v, want %s", s.args, cur, s.current)
		}
	}
}

// The context decides who answers: the daemon for local, the cluster
// (here one that refuses connections) for a cluster context.
func TestContextSelectsClient(t *testing.T) {
	f, kc := contextFactory(t)
	local := 0
	f.Client = f.contextClient(func(context.Context) (*client.Client, error) {
		local++
		return nil, errors.New("the local daemon")
	})
	if code, _, errOut := f.run("context", "add", "team", "--kubeconfig", kc); code != 0 {
		t.Fatal(errOut)
	}
	if code, _, errOut := f.run("context", "use", "team"); code != 0 {
		t.Fatal(errOut)
	}
	code, _, errOut := f.run("vm", "list")
	if code != ExitFailure || !strings.Contains(errOut, "list sandboxes in namespace sandboxes") || local != 0 {
		t.Errorf("vm list on context team: exit %d, %q, local daemon asked %d times; want the cluster's failure", code, errOut, local)
	}
	code, _, errOut = f.run("--context", "local", "vm", "list")
	if code != ExitFailure || !strings.Contains(errOut, "the local daemon") || local != 1 {
		t.Errorf("--context local vm list: exit %d, %q; want the local daemon asked", code, errOut)
	}
	// On a cluster, images are OCI references: banger says so, unless
	// the context names one.
	code, _, errOut = f.run("vm", "create", "--name", "b")
	if code != ExitFailure || !strings.Contains(errOut, "--image REF") {
		t.Errorf("vm create without --image on a cluster: exit %d, %q", code, errOut)
	}
	if code, _, errOut := f.run("context", "add", "imaged", "--kubeconfig", kc, "--image", "reg.example:5000/dev:1"); code != 0 {
		t.Fatal(errOut)
	}
	code, _, errOut = f.run("--context", "imaged", "vm", "create", "--name", "b")
	if code != ExitFailure || !strings.Contains(errOut, "create sandbox b in namespace sandboxes") {
		t.Errorf("vm create on a context with an image: exit %d, %q; want the (unreachable) cluster asked", code, errOut)
	}
}
