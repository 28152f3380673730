package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/client"
	"github.com/bangervm/banger/internal/atomicfile"
	"github.com/bangervm/banger/internal/workspace"
)

// wsOptions are the flags that choose what of a repository is shipped.
type wsOptions struct {
	IncludeUntracked bool
	FullHistory      bool
	Branch           string
	GuestPath        string
}

func (o *wsOptions) add(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&o.IncludeUntracked, "include-untracked", false, "also ship untracked files that are not ignored (ignored files never are)")
	cmd.Flags().BoolVar(&o.FullHistory, "full-history", false, "ship all of HEAD's history, not only HEAD")
	cmd.Flags().StringVar(&o.Branch, "branch", "", "check out a new guest-only branch of this name at HEAD")
}

// planWorkspace reads the repository at path (never writing to it) and
// returns what would be shipped.
func planWorkspace(ctx context.Context, path string, o wsOptions) (workspace.Manifest, error) {
	repo, err := workspace.Inspect(ctx, path)
	if err != nil {
		return workspace.Manifest{}, err
	}
	if o.Branch != "" {
		if err := workspace.ValidateBranch(ctx, o.Branch); err != nil {
			return workspace.Manifest{}, err
		}
	}
	return workspace.Plan(ctx, repo, workspace.Options{IncludeUntracked: o.IncludeUntracked, FullHistory: o.FullHistory})
}

func printPlan(f *Factory, m workspace.Manifest) {
	for _, file := range m.Files {
		fmt.Fprintln(f.IO.Out, file.Path)
	}
	for _, d := range m.Deleted {
		fmt.Fprintf(f.IO.Out, "%s (deleted)\n", d)
	}
	fmt.Fprintf(f.IO.ErrOut, "%d files at %s, %d changed from HEAD\n", len(m.Files), shortHash(m.Repo.Head), len(m.Changed()))
}

func shortHash(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}

// ship streams the planned repository into the VM over the agent channel
// and records the workspace, so vm exec runs there.
func ship(ctx context.Context, f *Factory, c *client.Client, ref string, m workspace.Manifest, o wsOptions) error {
	guest := o.GuestPath
	if guest == "" {
		guest = workspace.DefaultGuestPath
	}
	branch := o.Branch
	if branch == "" {
		branch = m.Repo.Branch
	}
	p := newProgress(f.IO)
	defer p.done()
	err := workspace.Ship(ctx, c, ref, m, guest, branch, func(n int64) {
		p.event(api.Event{Phase: "ship", Message: fmt.Sprintf("shipping workspace: %s sent", humanBytes(n))})
	})
	var ge *workspace.GuestError
	if errors.As(err, &ge) && len(ge.Missing) > 0 {
		image := "its image"
		if v, err := c.VM(ctx, ref); err == nil {
			image = "image " + v.Image
		}
		return fmt.Errorf("%w: %s lacks them; use an image that has them, such as debian-bookworm", err, image)
	}
	if err != nil {
		return err
	}
	if _, err := c.SetVMWorkspace(ctx, ref, guest); err != nil {
		return err
	}
	fmt.Fprintf(f.IO.ErrOut, "shipped %s (%d files) to %s:%s\n", m.Repo.Root, len(m.Files), ref, guest)
	return nil
}

func newVMWorkspaceCmd(f *Factory) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "workspace",
		Short: "Ship a git repository into a VM and bring its changes back",
	}
	var o wsOptions
	var dryRun bool
	prepare := &cobra.Command{
		Use:   "prepare VM PATH",
		Short: "Ship the repository at PATH into the VM as a checkout at the same HEAD with your uncommitted changes",
		Args:  exactArgs(2, "a VM and a repository path"),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := planWorkspace(cmd.Context(), args[1], o)
			if err != nil {
				return err
			}
			if dryRun {
				printPlan(f, m)
				return nil
			}
			c, err := f.Client(cmd.Context())
			if err != nil {
				return err
			}
			return ship(cmd.Context(), f, c, args[0], m, o)
		},
	}
	o.add(prepare)
	prepare.Flags().StringVar(&o.GuestPath, "guest-path", workspace.DefaultGuestPath, "where the checkout goes in the guest")
	prepare.Flags().BoolVar(&dryRun, "dry-run", false, "list what would be shipped, ship nothing")

	var eo exportOptions
	export := &cobra.Command{
		Use:   "export VM",
		Short: "Print a binary patch of everything changed in the guest since it was shipped (committed or not)",
		Long: `Print a binary patch of everything changed in the guest's workspace since it
was shipped, committed or not, untracked files included: ` + "`git apply`" + ` on the
checkout it was shipped from, still holding the uncommitted changes that were
shipped, reproduces the guest's tree. --base-commit gives the full diff from a
commit instead, for a clean checkout of it.

The patch comes from the guest: it is checked (at most 1 GiB, git diff syntax
only, every path inside the repository and outside .git) before anything is
printed or written.`,
		Example: `  banger vm workspace export box | git apply
  banger vm workspace export box --output changes.patch
  banger vm workspace export box --base-commit HEAD~3 | git apply`,
		Args: exactArgs(1, "one VM"),
		RunE: func(cmd *cobra.Command, args []string) error {
			eo.VM = args[0]
			return runWorkspaceExport(cmd.Context(), f, eo)
		},
	}
	export.Flags().StringVar(&eo.BaseCommit, "base-commit", "", "diff against this guest commit (default: the tree as shipped, HEAD with your uncommitted changes)")
	export.Flags().StringVarP(&eo.Output, "output", "o", "", "write the patch to this file (replaced in one step, never written through a symlink) instead of stdout")

	status := &cobra.Command{
		Use:   "status VM",
		Short: "Show what changed in the guest's workspace, like git status",
		Args:  exactArgs(1, "one VM"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, v, err := vmWorkspace(cmd.Context(), f, args[0])
			if err != nil {
				return err
			}
			return runInVM(cmd.Context(), f, c, v.ID, []string{"git", "-C", v.Workspace, "status"}, execOptions{})
		},
	}
	cmd.AddCommand(prepare, export, status)
	return cmd
}

// exportOptions are vm workspace export's arguments.
type exportOptions struct {
	VM         string
	BaseCommit string // "" for the tree as shipped
	Output     string // "" for standard output
}

func runWorkspaceExport(ctx context.Context, f *Factory, o exportOptions) error {
	c, v, err := vmWorkspace(ctx, f, o.VM)
	if err != nil {
		return err
	}
	return exportPatch(ctx, c, v, o, f.IO.Out)
}

// exportPatch fetches the patch of v's workspace from the guest into a
// file (the replacement for --output, or a temporary one), at most
// workspace.MaxPatchSize bytes, checks it with workspace.CheckPatch, and
// only then commits the --output file or copies the patch to stdout:
// nothing the check refuses reaches the user's files or a pipe into git
// apply.
func exportPatch(ctx context.Context, c *client.Client, v api.VM, o exportOptions, stdout io.Writer) error {
	var patch *os.File
	var publish func() error
	if o.Output != "" {
		af, err := atomicfile.Create(o.Output, 0o666)
		if err != nil {
			return err
		}
		defer af.Close()
		patch, publish = af.File, af.Commit
	} else {
		tmp, err := os.CreateTemp("", "banger-export-*.patch")
		if err != nil {
			return fmt.Errorf("export from vm %s: %w", v.Name, err)
		}
		defer os.Remove(tmp.Name())
		defer tmp.Close()
		patch = tmp
		publish = func() error {
			_, err := io.Copy(stdout, tmp)
			return err
		}
	}

	tree, err := workspace.FetchPatch(ctx, c, v.ID, v.Workspace, o.BaseCommit, patch)
	if err != nil {
		return err
	}
	if _, err := patch.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("export from vm %s: %w", v.Name, err)
	}
	if err := workspace.CheckPatch(patch); err != nil {
		return fmt.Errorf("export from vm %s: refusing the guest's patch: %w", v.Name, err)
	}
	if _, err := patch.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("export from vm %s: %w", v.Name, err)
	}
	if err := publish(); err != nil {
		return err
	}
	if o.BaseCommit == "" {
		// The host has these changes now: vm run need not keep the VM
		// for them.
		workspace.MarkExported(ctx, c, v.ID, v.Workspace, tree)
	}
	return nil
}

// unexportedChanges reports whether v's workspace has changes that were
// neither shipped nor exported (see workspace.UnexportedChanges).
func unexportedChanges(ctx context.Context, c *client.Client, v api.VM) bool {
	return workspace.UnexportedChanges(ctx, c, v.ID, v.Workspace)
}

// vmWorkspace returns a client and the VM ref names, which must have a
// workspace.
func vmWorkspace(ctx context.Context, f *Factory, ref string) (*client.Client, api.VM, error) {
	c, err := f.Client(ctx)
	if err != nil {
		return nil, api.VM{}, err
	}
	v, err := c.VM(ctx, ref)
	if err != nil {
		return nil, api.VM{}, err
	}
	if v.Workspace == "" {
		return nil, api.VM{}, fmt.Errorf("vm %s has no workspace: ship one with banger vm workspace prepare %s PATH", v.Name, v.Name)
	}
	return c, v, nil
}
