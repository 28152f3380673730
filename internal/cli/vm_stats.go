package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/bangervm/banger/api"
)

type statsOptions struct {
	json, stream, noStream bool
	interval               time.Duration
}

func newVMStatsCmd(f *Factory) *cobra.Command {
	var o statsOptions
	cmd := &cobra.Command{
		Use:   "stats VM",
		Short: "Show a running VM's CPU, memory, disk and network use",
		Long: `Show a running VM's resource use: the engine process's CPU time and memory
on the host, and from the guest agent its memory, load, root file system,
and bytes read from and written to its disks and received and sent on its
network.

On a terminal, stats follows the VM: one line every --interval with the
rates since the line before, until Ctrl-C or the VM stops. Otherwise (or
with --no-stream) it prints one sample; --stream follows in a pipe too.
With --json each sample is one JSON object per line, with cumulative
counters and the time it was taken (sampledAt): a rate is the difference
of two samples over the difference of their times.`,
		Example: `  banger vm stats web
  banger vm stats web --no-stream --json | jq .guest.memAvailableBytes
  banger vm stats web --stream --json --interval 5s >> web-stats.ndjson`,
		Args: exactArgs(1, "one VM"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.stream && o.noStream {
				return flagErrorf("vm stats: --stream and --no-stream cannot be combined")
			}
			if o.interval < 100*time.Millisecond {
				return flagErrorf("vm stats: --interval %s is too short: at least 100ms", o.interval)
			}
			c, err := f.Client(cmd.Context())
			if err != nil {
				return err
			}
			follow := o.stream || (f.IO.OutTTY && !o.noStream)
			return runVMStats(cmd.Context(), f, func(ctx context.Context) (api.VMStats, error) { return c.VMStats(ctx, args[0]) }, o, follow)
		},
	}
	cmd.Flags().BoolVar(&o.json, "json", false, "print each sample as one JSON object per line")
	cmd.Flags().BoolVar(&o.stream, "stream", false, "follow the VM even when output is not a terminal")
	cmd.Flags().BoolVar(&o.noStream, "no-stream", false, "print one sample and exit")
	cmd.Flags().DurationVar(&o.interval, "interval", time.Second, "time between samples when following")
	return cmd
}

// runVMStats prints one sample, or with follow one per interval until ctx
// is done or a sample fails (the VM stopped): that error ends the command
// unless at least one sample was printed.
func runVMStats(ctx context.Context, f *Factory, sample func(context.Context) (api.VMStats, error), o statsOptions, follow bool) error {
	s, err := sample(ctx)
	if err != nil {
		return err
	}
	if !follow {
		if o.json {
			return printJSON(f, s)
		}
		return printStats(f, s)
	}
	enc := json.NewEncoder(f.IO.Out)
	if !o.json {
		fmt.Fprintln(f.IO.Out, statsLine(statsHeader))
	}
	var prev *api.VMStats
	t := time.NewTicker(o.interval)
	defer t.Stop()
	for {
		if o.json {
			if err := enc.Encode(s); err != nil {
				return err
			}
		} else {
			fmt.Fprintln(f.IO.Out, statsLine(statsRow(prev, s)))
		}
		last := s // s is overwritten by the next sample
		prev = &last
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if s, err = sample(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			printError(f.IO.ErrOut, fmt.Errorf("vm stats: %w", err))
			return nil
		}
	}
}

// statsHeader names the followed columns; statsWidths are their widths,
// fixed (each row is printed as it comes, so a table writer could align
// a row only with itself): wide enough for the header and for values up
// to "1023.9 MiB/s".
var (
	statsHeader = []string{"TIME", "CPU%", "MEM USED", "HOST RSS", "DISK READ/s", "DISK WRITE/s", "NET RX/s", "NET TX/s"}
	statsWidths = []int{8, 6, 10, 10, 12, 12, 12, 12}
)

// statsLine right-aligns cols in statsWidths, two spaces apart.
func statsLine(cols []string) string {
	var b strings.Builder
	for i, c := range cols {
		if i > 0 {
			b.WriteString("  ")
		}
		fmt.Fprintf(&b, "%*s", statsWidths[i], c)
	}
	return b.String()
}

// statsRow is one line of followed stats: rates since prev, or "-" for
// the first sample.
func statsRow(prev *api.VMStats, s api.VMStats) []string {
	mem := "-"
	g := s.Guest
	if g != nil {
		mem = humanBytes(int64(g.MemTotalBytes - g.MemAvailableBytes))
	}
	cpu, dr, dw, rx, tx := "-", "-", "-", "-", "-"
	if prev != nil {
		dt := s.SampledAt.Sub(prev.SampledAt).Seconds()
		if dt > 0 {
			cpu = fmt.Sprintf("%.1f", 100*(s.CPUSeconds-prev.CPUSeconds)/dt)
			if pg := prev.Guest; g != nil && pg != nil {
				rate := func(now, before uint64) string {
					if now < before {
						return "-" // the guest rebooted: counters restarted
					}
					return humanBytes(int64(float64(now-before)/dt)) + "/s"
				}
				dr, dw = rate(g.DiskReadBytes, pg.DiskReadBytes), rate(g.DiskWriteBytes, pg.DiskWriteBytes)
				rx, tx = rate(g.NetRxBytes, pg.NetRxBytes), rate(g.NetTxBytes, pg.NetTxBytes)
			}
		}
	}
	return []string{s.SampledAt.Local().Format("15:04:05"), cpu, mem, humanBytes(int64(s.HostRSSBytes)), dr, dw, rx, tx}
}

// printStats prints one sample as a list.
func printStats(f *Factory, s api.VMStats) error {
	tw := tabwriter.NewWriter(f.IO.Out, 0, 4, 1, ' ', 0)
	fmt.Fprintf(tw, "engine cpu:\t%.2fs\nengine rss:\t%s\n", s.CPUSeconds, humanBytes(int64(s.HostRSSBytes)))
	if g := s.Guest; g != nil {
		fmt.Fprintf(tw, "guest memory:\t%s used of %s\nguest load:\t%.2f %.2f %.2f\nguest disk /:\t%s used of %s\nguest uptime:\t%.0fs\n",
			humanBytes(int64(g.MemTotalBytes-g.MemAvailableBytes)), humanBytes(int64(g.MemTotalBytes)), g.Load1, g.Load5, g.Load15,
			humanBytes(int64(g.RootUsedBytes)), humanBytes(int64(g.RootTotalBytes)), g.UptimeSeconds)
		fmt.Fprintf(tw, "guest disk i/o:\t%s read, %s written\nguest network:\t%s received, %s sent\n",
			humanBytes(int64(g.DiskReadBytes)), humanBytes(int64(g.DiskWriteBytes)), humanBytes(int64(g.NetRxBytes)), humanBytes(int64(g.NetTxBytes)))
	}
	return tw.Flush()
}
