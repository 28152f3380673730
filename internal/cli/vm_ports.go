package cli

import (
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/bangervm/banger/api"
)

func newVMPortsCmd(f *Factory) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "ports VM",
		Short: "List the TCP ports listening in a running VM, with name.vm:port URLs",
		Args:  exactArgs(1, "one VM"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := f.Client(cmd.Context())
			if err != nil {
				return err
			}
			ports, err := c.VMPorts(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(f, ports)
			}
			tw := tabwriter.NewWriter(f.IO.Out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "PROTO\tADDRESS\tPORT\tURL")
			for _, p := range ports {
				url := p.URL
				if url == "" {
					url = "-"
				}
				fmt.Fprintf(tw, "%s\t%s\t%d\t%s\n", p.Proto, p.Address, p.Port, url)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}

// parseForward reads HOST[:GUEST], HOSTADDR:HOST:GUEST.
func parseForward(s string) (api.Forward, error) {
	parts := strings.Split(s, ":")
	var f api.Forward
	var err error
	num := func(p string) int {
		n, e := strconv.Atoi(p)
		if e != nil || n < 1 || n > 65535 {
			err = fmt.Errorf("forward %q: %q is not a port (1-65535): use HOSTPORT[:GUESTPORT] or ADDR:HOSTPORT:GUESTPORT", s, p)
		}
		return n
	}
	switch len(parts) {
	case 1:
		f.HostPort = num(parts[0])
		f.GuestPort = f.HostPort
	case 2:
		f.HostPort, f.GuestPort = num(parts[0]), num(parts[1])
	case 3:
		f.HostAddr, f.HostPort, f.GuestPort = parts[0], num(parts[1]), num(parts[2])
	default:
		err = fmt.Errorf("forward %q: use HOSTPORT[:GUESTPORT] or ADDR:HOSTPORT:GUESTPORT", s)
	}
	return f, err
}

func newVMForwardCmd(f *Factory) *cobra.Command {
	var list, asJSON bool
	var remove int
	cmd := &cobra.Command{
		Use:   "forward VM [HOSTPORT[:GUESTPORT] | ADDR:HOSTPORT:GUESTPORT]",
		Short: "Forward a host port (127.0.0.1 by default) to a VM's port",
		Long: `Forward a host port to a port of a VM. The host side binds 127.0.0.1 unless
an address is given. Forwards are kept with the VM, active while it runs,
listed in vm show, and removed with the VM.`,
		Example: `  banger vm forward web 8080:80
  banger vm forward web --list
  banger vm forward web --remove 8080`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 1 || len(args) > 2 {
				return flagErrorf("vm forward: want a VM and a forward, or --list / --remove")
			}
			if (len(args) == 2) == (list || remove != 0) || (list && remove != 0) {
				return flagErrorf("vm forward: give one of HOSTPORT[:GUESTPORT], --list or --remove HOSTPORT")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			var fw api.Forward
			if len(args) == 2 {
				var err error
				if fw, err = parseForward(args[1]); err != nil {
					return &FlagError{Err: err}
				}
			}
			c, err := f.Client(cmd.Context())
			if err != nil {
				return err
			}
			switch {
			case remove != 0:
				if err := c.RemoveVMForward(cmd.Context(), args[0], remove); err != nil {
					return err
				}
				fmt.Fprintf(f.IO.Out, "removed forward of host port %d\n", remove)
				return nil
			case list:
				fs, err := c.VMForwards(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				if asJSON {
					return printJSON(f, fs)
				}
				tw := tabwriter.NewWriter(f.IO.Out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "HOST\tGUEST PORT\tACTIVE")
				for _, x := range fs {
					fmt.Fprintf(tw, "%s:%d\t%d\t%v\n", x.HostAddr, x.HostPort, x.GuestPort, x.Active)
				}
				return tw.Flush()
			}
			got, err := c.AddVMForward(cmd.Context(), args[0], fw)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(f, got)
			}
			fmt.Fprintf(f.IO.Out, "%s:%d -> %s:%d\n", got.HostAddr, got.HostPort, args[0], got.GuestPort)
			return nil
		},
	}
	cmd.Flags().BoolVar(&list, "list", false, "list the VM's forwards")
	cmd.Flags().IntVar(&remove, "remove", 0, "remove the forward of this host port")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}
