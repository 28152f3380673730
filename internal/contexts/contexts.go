// Package contexts stores which banger the CLI talks to: the local daemon
// (the built-in context "local") or a Kubernetes cluster, one named context
// per cluster and namespace. The list and the current context live in one
// small JSON file in banger's config directory, replaced atomically on
// every change; BANGER_CONTEXT and the --context flag override the file's
// current context for one command.
package contexts

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/atomicfile"
	"github.com/bangervm/banger/internal/names"
)

// Local is the built-in context: the daemon on this machine.
const Local = "local"

// EnvContext names the context for one command, over the file's current
// one (the --context flag wins over both).
const EnvContext = "BANGER_CONTEXT"

// Context is a place banger runs VMs. Every field but Name is empty for
// Local.
type Context struct {
	Name string `json:"name"`
	// Kubeconfig is the absolute path of the kubeconfig file.
	Kubeconfig string `json:"kubeconfig,omitempty"`
	// KubeContext is the context inside Kubeconfig, resolved when the
	// context was added, so that switching kubectl's current context
	// does not move banger to another cluster.
	KubeContext string `json:"kubeContext,omitempty"`
	// Namespace holds the context's Sandboxes.
	Namespace string `json:"namespace,omitempty"`
	// Image is the OCI reference VMs boot when a command names none (a
	// cluster has no default_image of its own).
	Image string `json:"image,omitempty"`
	// Current marks the current context in List's answer; it is not
	// stored.
	Current bool `json:"current"`
}

// IsLocal reports whether c is the local daemon.
func (c Context) IsLocal() bool { return c.Name == Local }

// Describe is one line saying where c runs VMs.
func (c Context) Describe() string {
	if c.IsLocal() {
		return "the local banger daemon"
	}
	return fmt.Sprintf("namespace %s of kube context %s in %s", c.Namespace, c.KubeContext, c.Kubeconfig)
}

// File is the stored set of contexts.
type File struct {
	// Current is the context commands use; empty means Local.
	Current  string    `json:"current,omitempty"`
	Contexts []Context `json:"contexts"`
}

// Load reads the file at path; a missing file is an empty one (only
// Local, current).
func Load(path string) (File, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return File{}, nil
	}
	if err != nil {
		return File{}, fmt.Errorf("read contexts: %w", err)
	}
	var f File
	if err := json.Unmarshal(b, &f); err != nil {
		return File{}, fmt.Errorf("read contexts %s: %v: fix or remove the file", path, err)
	}
	return f, nil
}

// Save replaces the file at path with f in one step (mode 0600: it names
// the user's kubeconfig files), creating its directory if needed.
func Save(path string, f File) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("save contexts: %w", err)
	}
	for i := range f.Contexts {
		f.Contexts[i].Current = false
	}
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	af, err := atomicfile.Create(path, 0o600)
	if err != nil {
		return err
	}
	defer af.Close()
	if _, err := af.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("save contexts: %w", err)
	}
	return af.Commit()
}

func (f *File) index(name string) int {
	return slices.IndexFunc(f.Contexts, func(c Context) bool { return c.Name == name })
}

// Get returns the context called name; Local always exists.
func (f *File) Get(name string) (Context, error) {
	if name == Local {
		return Context{Name: Local}, nil
	}
	if i := f.index(name); i >= 0 {
		return f.Contexts[i], nil
	}
	return Context{}, fmt.Errorf("context %q: no such context: see banger context list: %w", name, errdefs.ErrNotFound)
}

// Add stores c, which must have a new name; Validate it first.
func (f *File) Add(c Context) error {
	if err := names.Validate("context", c.Name); err != nil {
		return err
	}
	if c.Name == Local || f.index(c.Name) >= 0 {
		return fmt.Errorf("context %q exists: remove it first (banger context rm %s): %w", c.Name, c.Name, errdefs.ErrAlreadyExists)
	}
	c.Current = false
	f.Contexts = append(f.Contexts, c)
	return nil
}

// Use makes name the current context.
func (f *File) Use(name string) error {
	if _, err := f.Get(name); err != nil {
		return err
	}
	f.Current = name
	if name == Local {
		f.Current = ""
	}
	return nil
}

// Remove deletes the context called name; removing the current one makes
// Local current. Local cannot be removed.
func (f *File) Remove(name string) error {
	if name == Local {
		return fmt.Errorf("context local is built in and cannot be removed: %w", errdefs.ErrInvalidArgument)
	}
	i := f.index(name)
	if i < 0 {
		_, err := f.Get(name)
		return err
	}
	f.Contexts = slices.Delete(f.Contexts, i, i+1)
	if f.Current == name {
		f.Current = ""
	}
	return nil
}

// List returns Local and the stored contexts, sorted by name after Local,
// with the current one marked.
func (f *File) List() []Context {
	cur := f.Current
	if cur == "" || f.index(cur) < 0 {
		cur = Local
	}
	out := []Context{{Name: Local, Current: cur == Local}}
	stored := slices.Clone(f.Contexts)
	slices.SortFunc(stored, func(a, b Context) int { return strings.Compare(a.Name, b.Name) })
	for _, c := range stored {
		c.Current = c.Name == cur
		out = append(out, c)
	}
	return out
}

// Resolve returns the context a command uses: flag (--context) if set,
// else env (BANGER_CONTEXT) if set, else the file's current one, else
// Local. A name that is not a context is an error naming where it came
// from.
func (f *File) Resolve(flag, env string) (Context, error) {
	name, from := f.Current, "the current context"
	switch {
	case flag != "":
		name, from = flag, "--context"
	case env != "":
		name, from = env, EnvContext
	case name == "":
		return Context{Name: Local}, nil
	}
	c, err := f.Get(name)
	if err != nil {
		return Context{}, fmt.Errorf("%s names context %q, which does not exist: see banger context list: %w", from, name, errdefs.ErrNotFound)
	}
	return c, nil
}

// Complete checks that c's kubeconfig loads and holds the kube context it
// names, and fills what was left empty: an absolute kubeconfig path, the
// kubeconfig's current context, that context's namespace (else
// "default").
func Complete(c Context) (Context, error) {
	if c.Kubeconfig == "" {
		return c, fmt.Errorf("context %s: a cluster context needs --kubeconfig: %w", c.Name, errdefs.ErrInvalidArgument)
	}
	abs, err := filepath.Abs(c.Kubeconfig)
	if err != nil {
		return c, err
	}
	c.Kubeconfig = abs
	kc, err := clientcmd.LoadFromFile(abs)
	if err != nil {
		return c, fmt.Errorf("context %s: kubeconfig %s: %w: %w", c.Name, abs, err, errdefs.ErrInvalidArgument)
	}
	if c.KubeContext == "" {
		c.KubeContext = kc.CurrentContext
		if c.KubeContext == "" {
			return c, fmt.Errorf("context %s: kubeconfig %s has no current context: give --kube-context: %w", c.Name, abs, errdefs.ErrInvalidArgument)
		}
	}
	kctx, ok := kc.Contexts[c.KubeContext]
	if !ok {
		have := make([]string, 0, len(kc.Contexts))
		for n := range kc.Contexts {
			have = append(have, n)
		}
		slices.Sort(have)
		return c, fmt.Errorf("context %s: kubeconfig %s has no context %q (it has: %s): %w", c.Name, abs, c.KubeContext, strings.Join(have, ", "), errdefs.ErrInvalidArgument)
	}
	if c.Namespace == "" {
		c.Namespace = kctx.Namespace
	}
	if c.Namespace == "" {
		c.Namespace = "default"
	}
	if err := names.Validate("namespace", c.Namespace); err != nil {
		return c, err
	}
	return c, nil
}

// RESTConfig is the client-go configuration of cluster context c.
func RESTConfig(c Context) (*rest.Config, error) {
	if c.IsLocal() {
		return nil, fmt.Errorf("context local is not a cluster: %w", errdefs.ErrInvalidArgument)
	}
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(
		&clientcmd.ClientConfigLoadingRules{ExplicitPath: c.Kubeconfig},
		&clientcmd.ConfigOverrides{CurrentContext: c.KubeContext})
	cfg, err := cc.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("context %s: kubeconfig %s: %w", c.Name, c.Kubeconfig, err)
	}
	return cfg, nil
}
