package cli

import (
	"context"
	"fmt"
	"os"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/bangervm/banger/client"
	"github.com/bangervm/banger/internal/contexts"
)

// currentContext is the context this command runs against: --context,
// else BANGER_CONTEXT, else the stored current one, else local.
func (f *Factory) currentContext() (contexts.Context, error) {
	file, err := contexts.Load(f.contextsFile())
	if err != nil {
		return contexts.Context{}, err
	}
	return file.Resolve(f.ContextFlag, os.Getenv(contexts.EnvContext))
}

func (f *Factory) contextsFile() string {
	if f.ContextsFile != "" {
		return f.ContextsFile
	}
	return f.Layout.Contexts()
}

// contextClient returns a Factory.Client that resolves the current
// context for each command and returns local's client (which may start
// the daemon) for the local context, a cluster's otherwise.
func (f *Factory) contextClient(local func(ctx context.Context) (*client.Client, error)) func(ctx context.Context) (*client.Client, error) {
	return func(ctx context.Context) (*client.Client, error) {
		cur, err := f.currentContext()
		if err != nil {
			return nil, err
		}
		if cur.IsLocal() {
			return local(ctx)
		}
		if f.Cluster != nil {
			return f.Cluster(ctx, cur)
		}
		return remoteClient(ctx, cur)
	}
}

// localOnly makes cmd and its subcommands refuse to run on a cluster
// context: they manage this machine's daemon, images or kernels.
func localOnly(f *Factory, cmd *cobra.Command) *cobra.Command {
	cmd.PersistentPreRunE = func(c *cobra.Command, args []string) error {
		cur, err := f.currentContext()
		if err != nil {
			return err
		}
		if !cur.IsLocal() {
			return fmt.Errorf("%s is not available on a cluster context (the current context is %s: %s): run it with banger --context local, or switch with banger context use local", c.CommandPath(), cur.Name, cur.Describe())
		}
		return nil
	}
	return cmd
}

// updateContexts loads the contexts file, applies change and saves it.
func updateContexts(f *Factory, change func(*contexts.File) error) error {
	path := f.contextsFile()
	file, err := contexts.Load(path)
	if err != nil {
		return err
	}
	if err := change(&file); err != nil {
		return err
	}
	return contexts.Save(path, file)
}

func newContextCmd(f *Factory) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "context",
		Short: "Choose where VMs run: the local daemon or a Kubernetes cluster",
		Long: `A context names where banger's commands act: the built-in context local (the
daemon on this machine) or a namespace of a Kubernetes cluster running banger's
controller. Commands use the current context (banger context use), unless
BANGER_CONTEXT or --context names another for one command.`,
		Example: `  banger context add team --kubeconfig ~/.kube/config --namespace sandboxes
  banger context use team
  banger vm list                     # VMs in namespace sandboxes of the cluster
  banger --context local vm list     # the local daemon, for one command`,
	}

	var add contexts.Context
	addCmd := &cobra.Command{
		Use:   "add NAME --kubeconfig PATH [--namespace NS] [--kube-context C]",
		Short: "Add a cluster context (the kubeconfig is checked, not copied)",
		Example: `  banger context add team --kubeconfig ~/.kube/config
  banger context add ci --kubeconfig ./ci.kubeconfig --kube-context ci-admin --namespace sandboxes
  banger context add team --kubeconfig ~/.kube/config --image registry.example:5000/dev:1`,
		Args: exactArgs(1, "one context name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if add.Kubeconfig == "" {
				return flagErrorf("banger context add: --kubeconfig is required")
			}
			add.Name = args[0]
			c, err := contexts.Complete(add)
			if err != nil {
				return err
			}
			if err := updateContexts(f, func(file *contexts.File) error { return file.Add(c) }); err != nil {
				return err
			}
			fmt.Fprintf(f.IO.Out, "added context %s: %s\n", c.Name, c.Describe())
			return nil
		},
	}
	addCmd.Flags().StringVar(&add.Kubeconfig, "kubeconfig", "", "kubeconfig file of the cluster (required)")
	addCmd.Flags().StringVar(&add.Namespace, "namespace", "", "namespace of the VMs (default: the kube context's, else default)")
	addCmd.Flags().StringVar(&add.KubeContext, "kube-context", "", "context in the kubeconfig (default: its current context, recorded now)")
	addCmd.Flags().StringVar(&add.Image, "image", "", "OCI reference of the image VMs boot when --image is not given (the cluster's nodes must be able to pull it)")

	useCmd := &cobra.Command{
		Use:     "use NAME",
		Short:   "Make NAME the current context",
		Example: "  banger context use team\n  banger context use local",
		Args:    exactArgs(1, "one context name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := updateContexts(f, func(file *contexts.File) error { return file.Use(args[0]) }); err != nil {
				return err
			}
			fmt.Fprintf(f.IO.Out, "current context: %s\n", args[0])
			return nil
		},
	}

	var listJSON bool
	listCmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List contexts; * marks the current one",
		Args:    exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			file, err := contexts.Load(f.contextsFile())
			if err != nil {
				return err
			}
			// What commands use now: BANGER_CONTEXT and --context
			// count, as they do for every other command.
			cur, err := file.Resolve(f.ContextFlag, os.Getenv(contexts.EnvContext))
			if err != nil {
				return err
			}
			list := file.List()
			for i := range list {
				list[i].Current = list[i].Name == cur.Name
			}
			if listJSON {
				return printJSON(f, list)
			}
			tw := tabwriter.NewWriter(f.IO.Out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "CURRENT\tNAME\tNAMESPACE\tKUBE CONTEXT\tKUBECONFIG")
			for _, c := range list {
				mark := ""
				if c.Current {
					mark = "*"
				}
				if c.IsLocal() {
					fmt.Fprintf(tw, "%s\t%s\t-\t-\t(the local daemon)\n", mark, c.Name)
					continue
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", mark, c.Name, c.Namespace, c.KubeContext, c.Kubeconfig)
			}
			return tw.Flush()
		},
	}
	listCmd.Flags().BoolVar(&listJSON, "json", false, "print as JSON")

	rmCmd := &cobra.Command{
		Use:     "rm NAME",
		Aliases: []string{"remove"},
		Short:   "Remove a context (its VMs stay on the cluster); removing the current one makes local current",
		Args:    exactArgs(1, "one context name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := updateContexts(f, func(file *contexts.File) error { return file.Remove(args[0]) }); err != nil {
				return err
			}
			fmt.Fprintf(f.IO.Out, "removed context %s\n", args[0])
			return nil
		},
	}
	cmd.AddCommand(addCmd, useCmd, listCmd, rmCmd)
	return cmd
}
