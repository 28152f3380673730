package qemu

import (
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/bangervm/banger/internal/testutil"
)

// TestHostTSCKHz compares the RDTSC measurement with /proc/cpuinfo's
// "cpu MHz", which is the TSC rate on VM hosts with tsc_known_freq.
func TestHostTSCKHz(t *testing.T) {
	if !slices.Contains(cpuFlags(), "constant_tsc") {
		testutil.NotApplicable(t, "the host TSC is not constant")
	}
	khz, err := HostTSCKHz()
	if err != nil {
		t.Fatal(err)
	}
	again, _ := HostTSCKHz()
	if again != khz {
		t.Errorf("not cached: %d then %d", khz, again)
	}
	t.Logf("TSC %d kHz", khz)
	if !slices.Contains(cpuFlags(), "tsc_known_freq") {
		testutil.NotApplicable(t, "cpu MHz is not the TSC rate on this host (no tsc_known_freq)")
	}
	mhz := cpuMHz(t)
	if diff := math.Abs(float64(khz)/1000-mhz) / mhz; diff > 0.10 {
		t.Errorf("TSC %d kHz is %.1f%% off cpu MHz %.3f", khz, diff*100, mhz)
	}
}

func cpuMHz(t *testing.T) float64 {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "cpu MHz" {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err == nil {
				return f
			}
		}
	}
	testutil.NotApplicable(t, "/proc/cpuinfo has no cpu MHz")
	return 0
}
