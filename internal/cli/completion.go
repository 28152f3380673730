package cli

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/client"
)

// completionTimeout bounds the daemon's answer to a completion: a shell
// waits on it at every tab.
const completionTimeout = 2 * time.Second

// lister lists the names of one kind of thing the daemon holds.
type lister func(ctx context.Context, c *client.Client) ([]string, error)

func listVMs(ctx context.Context, c *client.Client) ([]string, error) {
	return names(c.VMs(ctx))(func(v api.VM) string { return v.Name })
}

func listImages(ctx context.Context, c *client.Client) ([]string, error) {
	return names(c.Images(ctx))(func(i api.Image) string { return i.Name })
}

func listKernels(ctx context.Context, c *client.Client) ([]string, error) {
	return names(c.Kernels(ctx))(func(k api.Kernel) string { return k.Name })
}

// names maps a list call's result to names with name.
func names[T any](items []T, err error) func(name func(T) string) ([]string, error) {
	return func(name func(T) string) ([]string, error) {
		out := make([]string, 0, len(items))
		for _, it := range items {
			out = append(out, name(it))
		}
		return out, err
	}
}

// registerCompletions gives every command that takes VM, image or kernel
// names (by the first word of its Use after the command: VM, VM..., NAME
// or NAME... under image and kernel) and every --image and --kernel flag
// completion of the live names, from a daemon that already runs (a
// completion never starts one, and file names are never offered in their
// place).
func registerCompletions(cmd *cobra.Command, f *Factory) {
	for _, sub := range cmd.Commands() {
		registerCompletions(sub, f)
	}
	if fl := cmd.Flags().Lookup("image"); fl != nil {
		cmd.RegisterFlagCompletionFunc("image", complete(f, listImages, flagValue))
	}
	if fl := cmd.Flags().Lookup("kernel"); fl != nil {
		cmd.RegisterFlagCompletionFunc("kernel", complete(f, listKernels, flagValue))
	}
	if cmd.ValidArgsFunction != nil {
		return
	}
	words := strings.Fields(cmd.Use)
	if len(words) < 2 {
		return
	}
	arg, group := words[1], ""
	if cmd.HasParent() {
		group = cmd.Parent().Name()
	}
	mode := firstArg
	if strings.HasSuffix(arg, "...") {
		mode = everyArg
	}
	switch strings.TrimSuffix(arg, "...") {
	case "VM":
		cmd.ValidArgsFunction = complete(f, listVMs, mode)
	case "NAME":
		switch group {
		case "image":
			cmd.ValidArgsFunction = complete(f, listImages, mode)
		case "kernel":
			cmd.ValidArgsFunction = complete(f, listKernels, mode)
		}
	}
}

// argMode is which words a completion completes.
type argMode int

const (
	firstArg  argMode = iota // the first argument only
	everyArg                 // every argument, names already given left out
	flagValue                // a flag's value
)

// complete completes names from list that start with what is typed, as
// mode says.
func complete(f *Factory, list lister, mode argMode) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		if mode == firstArg && len(args) > 0 {
			// A later argument (exec's command, forward's ports): the
			// shell's own completion.
			return nil, cobra.ShellCompDirectiveDefault
		}
		running := f.Running
		if running == nil {
			running = f.Client
		}
		ctx, cancel := context.WithTimeout(cmd.Context(), completionTimeout)
		defer cancel()
		c, err := running(ctx)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		names, err := list(ctx, c)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var out []string
		for _, n := range names {
			if strings.HasPrefix(n, toComplete) && (mode != everyArg || !slices.Contains(args, n)) {
				out = append(out, n)
			}
		}
		slices.Sort(out)
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}
