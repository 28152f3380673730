package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/internal/paths"
)

// fakeSamples returns samples one second apart whose counters grow by
// fixed amounts, and an error after n of them (the VM stopped).
func fakeSamples(n int) func(context.Context) (api.VMStats, error) {
	t0 := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	i := 0
	return func(context.Context) (api.VMStats, error) {
		if i == n {
			return api.VMStats{}, errors.New("vm web is not running")
		}
		k := uint64(i)
		s := api.VMStats{SampledAt: t0.Add(time.Duration(i) * time.Second), CPUSeconds: 0.5 * float64(i), HostRSSBytes: 200 << 20,
			Guest: &api.GuestStats{MemTotalBytes: 512 << 20, MemAvailableBytes: 400 << 20,
				DiskReadBytes: k * 2 << 20, DiskWriteBytes: k << 20, NetRxBytes: k * 4096, NetTxBytes: k * 1024}}
		i++
		return s, nil
	}
}

func TestVMStatsFollow(t *testing.T) {
	io, out, errOut := TestStreams()
	f := &Factory{IO: io, Layout: paths.Under(t.TempDir())}
	o := statsOptions{interval: 100 * time.Millisecond}
	if err := runVMStats(context.Background(), f, fakeSamples(3), o, true); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(out.String(), "\n"), "\n")
	if len(lines) != 4 {
		t.Fatalf("want a header and 3 rows:\n%s", out)
	}
	for _, want := range []string{"CPU%", "DISK READ/s", "NET TX/s"} {
		if !strings.Contains(lines[0], want) {
			t.Errorf("header lacks %q: %s", want, lines[0])
		}
	}
	// Each row is printed as it comes, yet every column sits under its
	// header: same line length, values ending where the header does.
	for _, l := range lines[1:] {
		if len(l) != len(lines[0]) {
			t.Errorf("row of %d columns' width, header %d:\n%s\n%s", len(l), len(lines[0]), lines[0], l)
		}
	}
	if end := strings.Index(lines[0], "CPU%") + len("CPU%"); !strings.HasSuffix(lines[2][:end], "50.0") {
		t.Errorf("CPU%% not under its header:\n%s\n%s", lines[0], lines[2])
	}
	if f := strings.Fields(lines[1]); f[1] != "-" {
		t.Errorf("first row has rates: %s", lines[1])
	}
	// 0.5 s of CPU per second; 2 MiB read, 1 MiB written, 4 KiB in and
	// 1 KiB out per second.
	for _, want := range []string{"50.0", "112.0 MiB", "2.0 MiB/s", "1.0 MiB/s", "4.0 KiB/s", "1.0 KiB/s"} {
		if !strings.Contains(lines[2], want) {
			t.Errorf("second row lacks %q: %s", want, lines[2])
		}
	}
	if !strings.Contains(errOut.String(), "not running") {
		t.Errorf("the end is not explained: %q", errOut)
	}
}

func TestVMStatsJSONStreamAndOnce(t *testing.T) {
	io, out, _ := TestStreams()
	f := &Factory{IO: io, Layout: paths.Under(t.TempDir())}
	o := statsOptions{json: true, interval: 100 * time.Millisecond}
	if err := runVMStats(context.Background(), f, fakeSamples(2), o, true); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	n := 0
	for sc.Scan() {
		var s api.VMStats
		if err := json.Unmarshal(sc.Bytes(), &s); err != nil || s.Guest == nil || s.SampledAt.IsZero() {
			t.Errorf("line %d: %v %q", n, err, sc.Text())
		}
		n++
	}
	if n != 2 {
		t.Errorf("%d JSON lines, want 2", n)
	}

	io, out, _ = TestStreams()
	f.IO = io
	if err := runVMStats(context.Background(), f, fakeSamples(5), statsOptions{interval: time.Second}, false); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"engine cpu:", "guest disk i/o:", "guest network:"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("one sample lacks %q:\n%s", want, out)
		}
	}
	if err := runVMStats(context.Background(), f, fakeSamples(0), statsOptions{interval: time.Second}, true); err == nil {
		t.Error("a VM that is not running: no error")
	}
}
