package bench

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"
)

// waitTemplate waits until the daemon has made a template (the first cold
// boot of a shape makes one in the background).
func (v *vmBench) waitTemplate(b *testing.B) string {
	deadline := time.Now().Add(5 * time.Minute)
	for time.Now().Before(deadline) {
		var ts []struct{ ID string }
		json.Unmarshal([]byte(v.ok(b, "template", "list", "--json")), &ts)
		if len(ts) > 0 {
			return ts[0].ID
		}
		time.Sleep(500 * time.Millisecond)
	}
	b.Fatalf("no template made\n%s", v.daemonLog())
	return ""
}

// BenchmarkVMTemplateVsCold: warm `vm run --rm -- true` from a template
// against the same with --cold and against a raw QEMU boot of the same
// kernel, interleaved, in one run; then the RSS of an idle clone against
// an idle cold-booted VM.
func BenchmarkVMTemplateVsCold(b *testing.B) {
	v := sharedVMBench(b)
	rounds := vmRounds(b)
	var k struct{ Vmlinux, Initrd string }
	if err := json.Unmarshal([]byte(v.ok(b, "kernel", "show", "debian-cloud", "--json")), &k); err != nil || k.Vmlinux == "" {
		b.Fatalf("kernel show: %v %+v", err, k)
	}
	raw, _ := newRawBoot(b, v, k.Vmlinux, k.Initrd)

	// Not timed: the first run makes the template; wait for it.
	v.ok(b, "vm", "run", "--rm", "--image", "bb", "--", "true")
	id := v.waitTemplate(b)
	raw.boot(b)

	b.ResetTimer()
	var cloneT, coldT, rawT []time.Duration
	for i := range rounds {
		steps := []func(){
			func() {
				d, _ := v.timed(b, "vm", "run", "--rm", "--image", "bb", "--", "true")
				cloneT = append(cloneT, d)
			},
			func() {
				d, _ := v.timed(b, "vm", "run", "--rm", "--cold", "--image", "bb", "--", "true")
				coldT = append(coldT, d)
			},
			func() { rawT = append(rawT, raw.boot(b)) },
		}
		// Rotate which goes first.
		for j := range steps {
			steps[(i+j)%len(steps)]()
		}
		fmt.Printf("T1 round %d: from template %s  --cold %s  raw boot %s\n", i+1, ms(cloneT[i]), ms(coldT[i]), ms(rawT[i]))
	}
	b.StopTimer()
	cm, km, rm := medianD(cloneT), medianD(coldT), medianD(rawT)
	fmt.Printf("T1 template %s: vm run --rm -- true from it: median %s; --cold: median %s; raw boot: median %s\n", id, ms(cm), ms(km), ms(rm))
	fmt.Printf("T1 ratios (medians): template / raw boot %.2f (goal <= 0.5: %s); cold / raw boot %.2f; template / cold %.2f\n",
		cm.Seconds()/rm.Seconds(), met(cm.Seconds()/rm.Seconds() <= 0.5), km.Seconds()/rm.Seconds(), cm.Seconds()/km.Seconds())
	fmt.Printf("T1 fastest: template %s, cold %s, raw %s\n", ms(slices.Min(cloneT)), ms(slices.Min(coldT)), ms(slices.Min(rawT)))

	// Memory of idle VMs of the same shape.
	defer v.run("vm", "delete", "-f", "t-clone", "t-cold")
	v.ok(b, "vm", "run", "-d", "--name", "t-clone", "--image", "bb")
	v.ok(b, "vm", "run", "-d", "--cold", "--name", "t-cold", "--image", "bb")
	time.Sleep(3 * time.Second) // idle
	rssOf := func(name string) int64 {
		var st struct{ HostRssBytes int64 }
		json.Unmarshal([]byte(v.ok(b, "vm", "stats", name, "--json")), &st)
		return st.HostRssBytes
	}
	clone, cold := rssOf("t-clone"), rssOf("t-cold")
	mr := float64(clone) / float64(cold)
	fmt.Printf("T2 idle QEMU RSS: clone %s, cold-booted %s, ratio %.2f (goal <= 0.5: %s)\n", mbs(clone), mbs(cold), mr, met(mr <= 0.5))

	b.ReportMetric(0, "ns/op")
	b.ReportMetric(cm.Seconds()/rm.Seconds(), "template/raw")
	b.ReportMetric(km.Seconds()/rm.Seconds(), "cold/raw")
	b.ReportMetric(mr, "rss-clone/cold")
}
