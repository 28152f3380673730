package guestdata

import (
	"fmt"
	"math"
	"unicode/utf8"

	"github.com/bangervm/banger/internal/agentproto"
)

// Bounds of a stats answer: banger gives a guest two or three disks and
// one NIC; a guest with its own bridges or tunnels has more interfaces,
// never hundreds.
const (
	maxStatsDevices = 256
	maxDeviceName   = 64
)

// CheckStats validates the agent's stats answer before the host reports
// it: a bounded number of devices with short printable names, no
// counter sums that overflow, nothing used beyond its total, loads that
// are numbers. (The frame it came in is already bounded by
// agentproto.MaxFrame.)
func CheckStats(s agentproto.Stats) error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("guest stats: "+format+" (the guest agent is misbehaving)", a...)
	}
	if s.MemAvailable > s.MemTotal {
		return bad("%d bytes of memory available out of %d", s.MemAvailable, s.MemTotal)
	}
	for _, l := range []float64{s.Load1, s.Load5, s.Load15} {
		if math.IsNaN(l) || math.IsInf(l, 0) || l < 0 || l > 1e6 {
			return bad("load %v", l)
		}
	}
	if s.Uptime < 0 {
		return bad("uptime %v", s.Uptime)
	}
	for _, d := range append([]*agentproto.DiskUsage{&s.Root}, s.Disk) {
		if d != nil && (d.Used > d.Total || d.Free > d.Total) {
			return bad("disk %.64q: %d used, %d free of %d bytes", d.Path, d.Used, d.Free, d.Total)
		}
	}
	for _, set := range []struct {
		what string
		cs   []agentproto.IOCounter
	}{{"block", s.Block}, {"net", s.Net}} {
		if len(set.cs) > maxStatsDevices {
			return &LimitError{What: "guest stats: " + set.what + " devices", Limit: "entries", Max: maxStatsDevices}
		}
		var in, out uint64
		for _, c := range set.cs {
			if len(c.Name) > maxDeviceName || !printable(c.Name) {
				return bad("%s device name %.64q", set.what, c.Name)
			}
			if in+c.In < in || out+c.Out < out {
				return bad("%s counters overflow", set.what)
			}
			in, out = in+c.In, out+c.Out
		}
	}
	return nil
}

func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return false
		}
	}
	return true
}
