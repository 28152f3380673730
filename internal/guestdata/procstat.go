package guestdata

import (
	"fmt"
	"io"
	"strconv"
	"strings"
)

// ProcStatLimits are ProcStat's defaults: /proc/stat has a line per CPU
// plus a few dozen; its "intr" line, one counter per interrupt, is the
// longest and is skipped if it does not fit a line.
var ProcStatLimits = Limits{Bytes: 1 << 20, Lines: 1 << 14, Entries: 4096}

// CPU is the guest's CPU time in clock ticks since boot, from the "cpu"
// line of /proc/stat, and its number of CPUs.
type CPU struct {
	Busy, Total uint64
	CPUs        int
}

// BusyCPUs is how many CPUs were busy on average between prev and s; ok
// is false when prev is not an earlier sample of the same boot.
func (s CPU) BusyCPUs(prev CPU) (float64, bool) {
	if prev.Total == 0 || s.Total <= prev.Total || s.Busy < prev.Busy || s.CPUs == 0 {
		return 0, false
	}
	wall := float64(s.Total-prev.Total) / float64(s.CPUs) // ticks of one CPU
	return float64(s.Busy-prev.Busy) / wall, true
}

// ProcStat reads /proc/stat's "cpu user nice system idle iowait irq
// softirq steal ..." line (idle and iowait are not busy; guest time is
// already in user) and counts the cpuN lines. Zero fields of lim take
// ProcStatLimits'; past a limit the error is a *LimitError.
func ProcStat(r io.Reader, lim Limits) (CPU, error) {
	lim = orDefault(lim, ProcStatLimits)
	lr := newLineReader("/proc/stat", r, lim, true)
	var s CPU
	found := false
	for {
		line, ok, err := lr.next()
		if err != nil {
			return CPU{}, err
		}
		if !ok {
			break
		}
		f := strings.Fields(line)
		switch {
		case len(f) > 0 && strings.HasPrefix(f[0], "cpu") && f[0] != "cpu":
			if s.CPUs == lim.Entries {
				return CPU{}, lr.tooMany()
			}
			s.CPUs++
		case len(f) >= 9 && f[0] == "cpu" && !found:
			var total, busy uint64
			for i, v := range f[1:9] {
				n, err := strconv.ParseUint(v, 10, 64)
				if err != nil {
					return CPU{}, fmt.Errorf("/proc/stat: %.80q: %w", line, err)
				}
				if total+n < total {
					return CPU{}, fmt.Errorf("/proc/stat: %.80q: counters overflow", line)
				}
				total += n
				if i != 3 && i != 4 { // idle, iowait
					busy += n
				}
			}
			s.Total, s.Busy, found = total, busy, true
		}
	}
	if !found || s.CPUs == 0 {
		return CPU{}, fmt.Errorf("/proc/stat: no cpu lines")
	}
	return s, nil
}
