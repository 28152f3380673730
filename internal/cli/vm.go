package cli

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/internal/config"
	"github.com/bangervm/banger/internal/termtext"
)

func newVMCmd(f *Factory) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "vm",
		Short: "Create, run and manage microVMs",
	}
	cmd.AddCommand(newVMRunCmd(f), newVMCreateCmd(f), newVMListCmd(f, "list"), newVMShowCmd(f),
		newVMLifecycleCmd(f, "start"), newVMLifecycleCmd(f, "stop"), newVMLifecycleCmd(f, "restart"), newVMLifecycleCmd(f, "kill"),
		newVMDeleteCmd(f), newVMPruneCmd(f), newVMSetCmd(f), newVMExecCmd(f), newVMSSHCmd(f), newVMLogsCmd(f), newVMStatsCmd(f), newVMPortsCmd(f), newVMForwardCmd(f), newVMWorkspaceCmd(f), newVMCpCmd(f))
	return cmd
}

// mibFlag is a memory size in MiB: a plain number is MiB (as
// config's vm.memory), a number with a unit is a size as --disk-size
// takes it (512M, 2G, 1.5G), whole MiB.
type mibFlag int

func (m *mibFlag) String() string { return strconv.Itoa(int(*m)) }
func (m *mibFlag) Type() string   { return "size" }

func (m *mibFlag) Set(s string) error {
	if n, err := strconv.Atoi(s); err == nil && n > 0 {
		*m = mibFlag(n)
		return nil
	}
	b, err := config.ParseSize(s)
	if err != nil || b < 1<<20 || b%(1<<20) != 0 || b>>20 > math.MaxInt32 {
		return errors.New("want MiB (512) or a whole number of MiB with a unit (512M, 2G)")
	}
	*m = mibFlag(b >> 20)
	return nil
}

// sizeFlags are the sizing flags shared by vm run and vm create.
type sizeFlags struct {
	Name, Image, Kernel string
	VCPU, Memory        int
	DiskSize            string
	Net                 string
	Engine              string
	Cold                bool
	Labels              []string
	TTL                 time.Duration
}

func (s *sizeFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&s.Name, "name", "", "VM name (default: a generated one like calm-otter)")
	cmd.Flags().StringVar(&s.Image, "image", "", "image to boot (default: config default_image, pulled on first use)")
	cmd.Flags().StringVar(&s.Kernel, "kernel", "", "kernel to boot (default: the image's, else config default_kernel)")
	cmd.Flags().IntVar(&s.VCPU, "vcpu", 0, "virtual CPUs (default: config vm.vcpu)")
	cmd.Flags().Var((*mibFlag)(&s.Memory), "memory", "memory: MiB (512) or a size with a unit (512M, 2G) (default: config vm.memory)")
	cmd.Flags().StringVar(&s.DiskSize, "disk-size", "", "size of the VM's own disk, e.g. 4G (default: config vm.disk_size)")
	cmd.Flags().StringVar(&s.Engine, "engine", "", "qemu or firecracker (default: config engine, else Firecracker when installed with working KVM, else QEMU; see banger engine)")
	cmd.Flags().BoolVar(&s.Cold, "cold", false, "boot the VM fully even when a template of its shape exists (see banger template list)")
	cmd.Flags().StringVar(&s.Net, "net", "", "network: public (NAT out, nothing of the host's networks or other VMs; default), full (plain NAT) or none (no NIC)")
	cmd.Flags().StringArrayVar(&s.Labels, "label", nil, "label the VM, key=value (repeatable); vm list and vm prune filter on labels")
	cmd.Flags().DurationVar(&s.TTL, "ttl", 0, "delete the VM this long after its creation, e.g. 30m or 2h (the daemon deletes it as vm delete --force does)")
}

// labelFlags parses repeated --label key=value flags.
func labelFlags(args []string) (map[string]string, error) {
	sel, err := api.ParseLabels(args)
	if err != nil {
		return nil, flagErrorf("--label: %v", err)
	}
	return sel, nil
}

// ttlSeconds checks --ttl and converts it to whole seconds.
func ttlSeconds(ttl time.Duration) (int64, error) {
	switch {
	case ttl == 0:
		return 0, nil
	case ttl < time.Second || ttl%time.Second != 0:
		return 0, flagErrorf("--ttl %v: want a positive whole number of seconds, e.g. 90s, 30m or 2h", ttl)
	case ttl > api.MaxTTL:
		return 0, flagErrorf("--ttl %v: at most %v", ttl, api.MaxTTL)
	}
	return int64(ttl / time.Second), nil
}

func (s *sizeFlags) request() (api.CreateVMRequest, error) {
	req := api.CreateVMRequest{Name: s.Name, Image: s.Image, Kernel: s.Kernel, VCPU: s.VCPU, MemoryMiB: s.Memory, Net: s.Net, Engine: s.Engine, Cold: s.Cold}
	var err error
	if req.Labels, err = labelFlags(s.Labels); err != nil {
		return req, err
	}
	if req.TTLSeconds, err = ttlSeconds(s.TTL); err != nil {
		return req, err
	}
	switch s.Net {
	case "", api.NetNone, api.NetPublic, api.NetFull:
	default:
		return req, flagErrorf("--net %q: want none, public or full", s.Net)
	}
	if s.DiskSize != "" {
		n, err := config.ParseSize(s.DiskSize)
		if err != nil {
			return req, &FlagError{Err: err}
		}
		req.DiskBytes = n
	}
	if s.VCPU < 0 || s.Memory < 0 {
		return req, flagErrorf("--vcpu and --memory must be positive")
	}
	return req, nil
}

func newVMCreateCmd(f *Factory) *cobra.Command {
	var s sizeFlags
	var noStart, asJSON bool
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Create a VM (and start it unless --no-start)",
		Example: `  banger vm create --name b2 --image dev --vcpu 2 --memory 512 --disk-size 4G
  banger vm create --name later --no-start`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			req, err := s.request()
			if err != nil {
				return err
			}
			req.NoStart = noStart
			c, err := f.Client(cmd.Context())
			if err != nil {
				return err
			}
			p := newProgress(f.IO)
			v, err := c.CreateVM(cmd.Context(), req, p.event)
			p.done()
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(f, v)
			}
			fmt.Fprintf(f.IO.Out, "vm %s %s\n", v.Name, v.State)
			return nil
		},
	}
	s.add(cmd)
	cmd.Flags().BoolVar(&noStart, "no-start", false, "create without booting")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}

func newVMListCmd(f *Factory, use string) *cobra.Command {
	var asJSON, all bool
	var labels []string
	cmd := &cobra.Command{
		Use:     use,
		Aliases: []string{"ls"},
		Short:   "List VMs",
		Args:    exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			sel, err := labelFlags(labels)
			if err != nil {
				return err
			}
			c, err := f.Client(cmd.Context())
			if err != nil {
				return err
			}
			vms, err := c.VMsLabeled(cmd.Context(), sel)
			if err != nil {
				return err
			}
			if use == "ps" && !all {
				var running []api.VM
				for _, v := range vms {
					if v.State == api.VMRunning || v.State == api.VMPaused {
						running = append(running, v)
					}
				}
				vms = running
			}
			if asJSON {
				if vms == nil {
					vms = []api.VM{}
				}
				return printJSON(f, vms)
			}
			tw := tabwriter.NewWriter(f.IO.Out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tID\tSTATE\tIMAGE\tIP\tVCPU\tMEMORY\tAGE")
			for _, v := range vms {
				ip := v.IP
				if ip == "" {
					ip = "-"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%dM\t%s\n", v.Name, shortID(v.ID), v.State, v.Image, ip, v.VCPU, v.MemoryMiB, strings.TrimSuffix(ago(v.CreatedAt), " ago"))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			// A paused VM needs the user, and one on a lost node (on a
			// cluster) may be gone: say why under the table.
			for _, v := range vms {
				if v.State == api.VMPaused || v.State == api.VMUnknown {
					fmt.Fprintf(f.IO.Out, "vm %s is %s: %s\n", v.Name, v.State, termtext.Escape(v.Reason))
				}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	cmd.Flags().StringArrayVar(&labels, "label", nil, "only VMs with this label, key=value (repeatable: all must match)")
	if use == "ps" {
		cmd.Short = "List running VMs (-a: all)"
		cmd.Flags().BoolVarP(&all, "all", "a", false, "include VMs that are not running")
	}
	return cmd
}

// shortID is the id vm list shows: a local VM's whole (11 hex digits), a
// cluster VM's Sandbox UID up to its first dash (8), which finds it as a
// prefix as the whole UID does; vm show and --json give it whole.
func shortID(id string) string {
	if first, _, ok := strings.Cut(id, "-"); ok && len(first) >= 8 {
		return first
	}
	return id
}

func newVMShowCmd(f *Factory) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "show VM",
		Short: "Show one VM (by name, id or unique id prefix)",
		Args:  exactArgs(1, "one VM"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := f.Client(cmd.Context())
			if err != nil {
				return err
			}
			v, err := c.VM(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(f, v)
			}
			tw := tabwriter.NewWriter(f.IO.Out, 0, 4, 1, ' ', 0)
			fmt.Fprintf(tw, "name:\t%s\nid:\t%s\nstate:\t%s\n", v.Name, v.ID, v.State)
			if v.Reason != "" {
				// A failed boot's reason quotes the guest's console.
				fmt.Fprintf(tw, "reason:\t%s\n", termtext.Escape(v.Reason))
			}
			fmt.Fprintf(tw, "net:\t%s %s\n", v.Net, v.IP)
			fmt.Fprintf(tw, "image:\t%s\nkernel:\t%s\nengine:\t%s (%s)\nvcpu:\t%d\nmemory:\t%d MiB\ndisk:\t%s\ndir:\t%s\ncreated:\t%s\n",
				v.Image, v.Kernel, v.Engine, v.Accel, v.VCPU, v.MemoryMiB, humanBytes(v.DiskBytes), v.Dir, v.CreatedAt.Local().Format(time.RFC3339))
			if v.PID != 0 {
				fmt.Fprintf(tw, "pid:\t%d\n", v.PID)
			}
			if v.Node != "" {
				fmt.Fprintf(tw, "node:\t%s\n", v.Node)
			}
			if v.StartedFrom != "" {
				fmt.Fprintf(tw, "started from:\t%s\n", v.StartedFrom)
			}
			if len(v.Labels) > 0 {
				fmt.Fprintf(tw, "labels:\t%s\n", api.FormatLabels(v.Labels))
			}
			if v.ExpiresAt != nil {
				fmt.Fprintf(tw, "expires:\t%s (in %s)\n", v.ExpiresAt.Local().Format(time.RFC3339), max(time.Until(*v.ExpiresAt), 0).Round(time.Second))
			}
			for _, x := range v.Forwards {
				fmt.Fprintf(tw, "forward:\t%s:%d -> %d (active %v)\n", x.HostAddr, x.HostPort, x.GuestPort, x.Active)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}

// forEach runs op on every ref concurrently and reports each outcome in
// order; it fails if any failed.
func forEach(f *Factory, refs []string, op func(ref string) (string, error)) error {
	type res struct {
		msg string
		err error
	}
	out := make([]chan res, len(refs))
	for i, ref := range refs {
		out[i] = make(chan res, 1)
		go func(ch chan res, ref string) {
			msg, err := op(ref)
			ch <- res{msg, err}
		}(out[i], ref)
	}
	var failed []string
	for i, ch := range out {
		r := <-ch
		if r.err != nil {
			r.msg = ""
			printError(f.IO.ErrOut, r.err)
			failed = append(failed, refs[i])
			continue
		}
		if r.msg != "" {
			fmt.Fprintln(f.IO.Out, r.msg)
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("failed for %s", strings.Join(failed, ", "))
	}
	return nil
}

func minArgs(what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) == 0 {
			return flagErrorf("%s: want at least one %s", cmd.CommandPath(), what)
		}
		return nil
	}
}

func newVMLifecycleCmd(f *Factory, action string) *cobra.Command {
	short := map[string]string{
		"start":   "Boot stopped VMs",
		"stop":    "Stop VMs gracefully: the guest flushes its disks before it powers off",
		"restart": "Stop and start VMs",
		"kill":    "Stop VMs at once, without flushing the guest's data",
	}[action]
	var asJSON bool
	cmd := &cobra.Command{
		Use:   action + " VM...",
		Short: short,
		Args:  minArgs("VM"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := f.Client(cmd.Context())
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			var mu sync.Mutex
			var results []any
			err = forEach(f, args, func(ref string) (string, error) {
				var v any
				var msg string
				switch action {
				case "start":
					vm, err := c.StartVM(ctx, ref, nil)
					if err != nil {
						return "", err
					}
					v, msg = vm, fmt.Sprintf("vm %s running", vm.Name)
				case "restart":
					vm, err := c.RestartVM(ctx, ref, nil)
					if err != nil {
						return "", err
					}
					v, msg = vm, fmt.Sprintf("vm %s restarted", vm.Name)
				case "stop":
					r, err := c.StopVM(ctx, ref)
					if err != nil {
						return "", err
					}
					v, msg = r, fmt.Sprintf("vm %s stopped (%s)", r.VM.Name, stopMethod(r.Method))
					if r.Method == "already-stopped" {
						msg = fmt.Sprintf("vm %s was already stopped", r.VM.Name)
					}
				case "kill":
					r, err := c.KillVM(ctx, ref)
					if err != nil {
						return "", err
					}
					v, msg = r, fmt.Sprintf("vm %s killed", r.VM.Name)
					if r.Method == "already-stopped" {
						msg = fmt.Sprintf("vm %s was already stopped", r.VM.Name)
					}
				}
				mu.Lock()
				results = append(results, v)
				mu.Unlock()
				if asJSON {
					return "", nil
				}
				return msg, nil
			})
			if asJSON {
				printJSON(f, results)
			}
			return err
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print results as JSON")
	return cmd
}

func stopMethod(m string) string {
	switch m {
	case "agent":
		return "guest synced and powered off"
	case "engine":
		return "the guest agent did not answer: the guest powered off on the engine's power button"
	case "killed":
		return "killed: the guest did not stop in time, recent writes may be lost"
	case "launcher":
		return "its launcher Pod was deleted, and the launcher synced and powered off the guest"
	case "killed-paused":
		return "killed: the guest was paused by its engine and could not sync, recent writes may be lost"
	}
	return m
}

func newVMDeleteCmd(f *Factory) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:     "delete VM...",
		Aliases: []string{"rm"},
		Short:   "Delete VMs and their disks",
		Args:    minArgs("VM"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := f.Client(cmd.Context())
			if err != nil {
				return err
			}
			return forEach(f, args, func(ref string) (string, error) {
				return "deleted vm " + ref, c.DeleteVM(cmd.Context(), ref, force)
			})
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "kill running VMs first")
	return cmd
}

func newVMPruneCmd(f *Factory) *cobra.Command {
	var yes bool
	var labels []string
	cmd := &cobra.Command{
		Use:   "prune",
		Short: "Delete every VM that is not running (--label: only those labelled so)",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			sel, err := labelFlags(labels)
			if err != nil {
				return err
			}
			c, err := f.Client(cmd.Context())
			if err != nil {
				return err
			}
			if !yes {
				vms, err := c.VMsLabeled(cmd.Context(), sel)
				if err != nil {
					return err
				}
				var doomed []string
				for _, v := range vms {
					// What the daemon prunes: VMs not running and not
					// in the middle of a create, start or stop.
					switch v.State {
					case api.VMStopped, api.VMCreated, api.VMError:
						doomed = append(doomed, v.Name)
					}
				}
				if len(doomed) == 0 {
					fmt.Fprintln(f.IO.Out, "nothing to prune")
					return nil
				}
				fmt.Fprintf(f.IO.Out, "would delete: %s\nrun again with -f to delete them\n", strings.Join(doomed, ", "))
				return nil
			}
			res, err := c.PruneVMs(cmd.Context(), sel)
			for _, n := range res.Deleted {
				fmt.Fprintf(f.IO.Out, "deleted vm %s\n", n)
			}
			return err
		},
	}
	cmd.Flags().BoolVarP(&yes, "force", "f", false, "delete without asking")
	cmd.Flags().StringArrayVar(&labels, "label", nil, "only VMs with this label, key=value (repeatable: all must match)")
	return cmd
}

func newVMSetCmd(f *Factory) *cobra.Command {
	var req api.UpdateVMRequest
	cmd := &cobra.Command{
		Use:     "set VM [--vcpu N] [--memory MiB]",
		Short:   "Change a stopped VM's vCPUs or memory",
		Example: `  banger vm set b2 --memory 1024`,
		Args:    exactArgs(1, "one VM"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if req.VCPU == 0 && req.MemoryMiB == 0 {
				return flagErrorf("vm set: give --vcpu or --memory")
			}
			c, err := f.Client(cmd.Context())
			if err != nil {
				return err
			}
			v, err := c.UpdateVM(cmd.Context(), args[0], req)
			if err != nil {
				return err
			}
			fmt.Fprintf(f.IO.Out, "vm %s: %d vCPU, %d MiB\n", v.Name, v.VCPU, v.MemoryMiB)
			return nil
		},
	}
	cmd.Flags().IntVar(&req.VCPU, "vcpu", 0, "virtual CPUs")
	cmd.Flags().Var((*mibFlag)(&req.MemoryMiB), "memory", "memory: MiB (512) or a size with a unit (512M, 2G)")
	return cmd
}
