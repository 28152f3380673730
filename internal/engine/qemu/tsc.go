package qemu

import (
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"time"
)

// hostTSC caches the measured host TSC rate for the life of the process:
// the rate is fixed on hosts where it is usable (constant_tsc).
var hostTSC = sync.OnceValues(measureTSC)

// HostTSCKHz returns the host's TSC rate in kHz, measured once per process
// with RDTSC against the monotonic clock (median of 5 samples of 50 ms;
// about 250 ms on first call). Under TCG the guest's TSC ticks at the host's
// rate, and the guest kernel needs that rate (tsc_early_khz) because its own
// calibration against the emulated PIT fails whenever the host is busy, after
// which the guest hangs for good.
//
// /proc/cpuinfo "cpu MHz" is not used: it equals the TSC rate only on VM
// hosts with tsc_known_freq.
func HostTSCKHz() (int64, error) { return hostTSC() }

func measureTSC() (int64, error) {
	if !haveRDTSC {
		return 0, errors.New("no RDTSC on " + runtime.GOARCH)
	}
	flags := cpuFlags()
	if !slices.Contains(flags, "constant_tsc") {
		return 0, errors.New("host TSC rate is not constant (no constant_tsc flag)")
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var est []float64
	for range 5 {
		t0, c0 := time.Now(), rdtsc()
		time.Sleep(50 * time.Millisecond)
		t1, c1 := time.Now(), rdtsc()
		ns := t1.Sub(t0).Nanoseconds()
		if c1 <= c0 || ns <= 0 {
			return 0, errors.New("TSC did not advance")
		}
		est = append(est, float64(c1-c0)/float64(ns)*1e6)
	}
	slices.Sort(est)
	khz := est[len(est)/2]
	// The middle three samples must agree: a wild spread means the
	// counter is not usable as a clock here.
	if spread := (est[3] - est[1]) / khz; spread > 0.01 {
		return 0, fmt.Errorf("TSC samples disagree by %.1f%%", spread*100)
	}
	if khz < 100_000 || khz > 10_000_000 {
		return 0, fmt.Errorf("implausible TSC rate %.0f kHz", khz)
	}
	return int64(khz), nil
}
