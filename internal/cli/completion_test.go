package cli

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/client"
	"github.com/bangervm/banger/internal/apiserver"
	"github.com/bangervm/banger/internal/paths"
)

type namedVMs struct{ apiserver.VMs }

func (namedVMs) List(context.Context, map[string]string) ([]api.VM, error) {
	return []api.VM{{Name: "web"}, {Name: "db"}, {Name: "worker"}}, nil
}

type namedImages struct{ apiserver.Images }

func (namedImages) List(context.Context) ([]api.Image, error) {
	return []api.Image{{Name: "dev"}, {Name: "debian-bookworm"}}, nil
}

type namedKernels struct{ apiserver.Kernels }

func (namedKernels) List(context.Context) ([]api.Kernel, error) {
	return []api.Kernel{{Name: "debian-cloud"}}, nil
}

// completeWith runs `banger __complete args...` against a daemon API
// serving three VMs, two images and a kernel, and returns the offered
// words and the directive line.
func completeWith(t *testing.T, running bool, args ...string) ([]string, string) {
	t.Helper()
	sock := serveAPI(t, apiserver.Config{VMs: namedVMs{}, Images: namedImages{}, Kernels: namedKernels{}})
	streams, out, _ := TestStreams()
	f := &Factory{IO: streams, Layout: paths.Under(t.TempDir()),
		Client: func(context.Context) (*client.Client, error) {
			t.Error("completion started (or asked for) a daemon")
			return nil, errors.New("no")
		},
		Running: func(ctx context.Context) (*client.Client, error) {
			if !running {
				return nil, errors.New("no daemon answers")
			}
			return client.New(sock), nil
		},
	}
	Run(f, append([]string{"__complete"}, args...))
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	return lines[:len(lines)-1], lines[len(lines)-1]
}

// Shell completion offers the live VM, image and kernel names where
// commands take them, never file names instead, and never starts a
// daemon.
func TestCompletionLiveNames(t *testing.T) {
	const noFiles = ":4" // cobra.ShellCompDirectiveNoFileComp
	for _, tc := range []struct {
		args      []string
		want      string
		directive string
	}{
		{[]string{"vm", "stop", ""}, "db web worker", noFiles},
		{[]string{"vm", "stop", "w"}, "web worker", noFiles},
		{[]string{"vm", "stop", "web", ""}, "db worker", noFiles}, // VM...: those not given yet
		{[]string{"vm", "show", ""}, "db web worker", noFiles},
		{[]string{"vm", "exec", ""}, "db web worker", noFiles},
		{[]string{"vm", "exec", "web", ""}, "", ":0"}, // the command: the shell's own completion
		{[]string{"vm", "workspace", "export", ""}, "db web worker", noFiles},
		{[]string{"vm", "create", "--image", ""}, "debian-bookworm dev", noFiles},
		{[]string{"vm", "run", ".", "--image", "de"}, "debian-bookworm dev", noFiles},
		{[]string{"vm", "create", "--kernel", ""}, "debian-cloud", noFiles},
		{[]string{"image", "show", ""}, "debian-bookworm dev", noFiles},
		{[]string{"image", "delete", "dev", ""}, "debian-bookworm", noFiles},
		{[]string{"kernel", "rm", ""}, "debian-cloud", noFiles},
	} {
		got, dir := completeWith(t, true, tc.args...)
		if strings.Join(got, " ") != tc.want || dir != tc.directive {
			t.Errorf("__complete %q: %q %s, want %q %s", tc.args, got, dir, tc.want, tc.directive)
		}
	}
	// No daemon running: nothing offered, no file names, none started.
	if got, dir := completeWith(t, false, "vm", "stop", ""); len(got) != 0 || dir != noFiles {
		t.Errorf("with no daemon: %q %s", got, dir)
	}
}
