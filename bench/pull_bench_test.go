// Package bench holds end-to-end benchmarks that are too slow for the
// normal test run. They run only with -bench; see README.md.
package bench

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/crane"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/internal/image"
	"github.com/bangervm/banger/internal/paths"
	"github.com/bangervm/banger/internal/store"
	"github.com/bangervm/banger/internal/testutil"
)

const (
	mib = 1 << 20
	gib = 1 << 30
)

// BenchmarkPullConvert pulls a generated ~200 MB, 5-layer image from a
// local registry and turns it into an ext4 image, once with banger's
// streaming pipeline (image.Store.Pull, cold blob cache) and once with the
// naive one (flatten to a tar, extract it, mke2fs -d), interleaved over
// several rounds. It reports median wall times, their ratio and peak
// memory of each path; then it pulls an image with the same content in a
// single 5x bigger layer to show banger's memory does not follow layer size.
//
// Environment: BANGER_BENCH_ROUNDS sets the number of rounds (default 3);
// BANGER_BENCH_SETTLE the pause after each run's cleanup and sync (default
// 6s); BANGER_BENCH_ONLY runs one path alone, for profiling; TMPDIR picks
// the file system both paths work on.
func BenchmarkPullConvert(b *testing.B) {
	testutil.RequireTool(b, "mke2fs", "e2fsprogs")
	testutil.RequireTool(b, "debugfs", "e2fsprogs")
	rounds := 3
	if s := os.Getenv("BANGER_BENCH_ROUNDS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			b.Fatalf("BANGER_BENCH_ROUNDS=%q: want a positive integer", s)
		}
		rounds = n
	}

	base := b.TempDir() // one file system for the registry and both paths
	addr := startRegistry(b, filepath.Join(base, "registry"))

	// Generation and push are not timed.
	genStart := time.Now()
	multi := genImage(b, 1, multiLayerPlan())
	refMulti := push(b, multi, addr+"/bench/multi:1")
	single := genImage(b, 2, singleLayerPlan())
	refSingle := push(b, single, addr+"/bench/single:1")
	describe(b, "multi-layer", multi)
	describe(b, "single-layer", single)
	fmt.Printf("generated and pushed both images in %s\n", time.Since(genStart).Round(100*time.Millisecond))
	// Drop the generated layers (held in memory) so that the Go heap
	// measured below is the pipelines' own, and flush the registry's blobs.
	multi.img, single.img = nil, nil
	runtime.GC()
	debug.FreeOSMemory()
	syscall.Sync()

	run := 0
	runBanger := func(ref string) result {
		run++
		dir := filepath.Join(base, fmt.Sprintf("banger-%d", run))
		var ph phases
		r := measure(b, func() { bangerPull(b, dir, ref, &ph) }, func() { os.RemoveAll(dir) })
		r.phases = ph.String(r)
		return r
	}
	runNaive := func(ref string) result {
		run++
		dir := filepath.Join(base, fmt.Sprintf("naive-%d", run))
		var ph phases
		r := measure(b, func() { naivePull(b, dir, ref, &ph) }, func() { os.RemoveAll(dir) })
		r.phases = ph.String(r)
		return r
	}
	if only := os.Getenv("BANGER_BENCH_ONLY"); only != "" {
		// For profiling one path: go test -bench=. -cpuprofile=... with
		// BANGER_BENCH_ONLY=banger (or naive, banger1, naive1 for the
		// single-layer image).
		for i := 0; i < rounds; i++ {
			var r result
			switch only {
			case "banger":
				r = runBanger(refMulti)
			case "naive":
				r = runNaive(refMulti)
			case "banger1":
				r = runBanger(refSingle)
			case "naive1":
				r = runNaive(refSingle)
			default:
				b.Fatalf("BANGER_BENCH_ONLY=%q: want banger, naive, banger1 or naive1", only)
			}
			fmt.Printf("%s: %s\n", only, r)
		}
		return
	}
	b.ResetTimer()
	var bang, naive []result
	for i := 0; i < rounds; i++ {
		// Alternate which path goes first so neither always follows the
		// other's writeback.
		if i%2 == 0 {
			bang = append(bang, runBanger(refMulti))
			naive = append(naive, runNaive(refMulti))
		} else {
			naive = append(naive, runNaive(refMulti))
			bang = append(bang, runBanger(refMulti))
		}
		fmt.Printf("round %d: banger %s\n         naive  %s\n", i+1, bang[i], naive[i])
	}
	singleRes := runBanger(refSingle)
	singleNaive := runNaive(refSingle)
	b.StopTimer()

	bm, nm := median(bang), median(naive)
	ratio := bm.Seconds() / nm.Seconds()
	bc, nc := medianCPU(bang), medianCPU(naive)
	bp, np := peaks(bang), peaks(naive)
	fmt.Printf("pull+convert: banger %.2fs naive %.2fs ratio %.2f (medians of %d)\n", bm.Seconds(), nm.Seconds(), ratio, rounds)
	fmt.Printf("cpu time: banger %.2fs naive %.2fs ratio %.2f (medians; this process plus children)\n", bc.Seconds(), nc.Seconds(), bc.Seconds()/nc.Seconds())
	fmt.Printf("peak memory, banger: %s\n", bp.mem())
	fmt.Printf("peak memory, naive:  %s\n", np.mem())
	fmt.Printf("layer size, banger 5x%s layers: %s\n", mb(multi.maxLayer), bp.mem())
	fmt.Printf("layer size, banger 1x%s layer:  %s\n", mb(single.maxLayer), singleRes)
	fmt.Printf("layer size, naive  1x%s layer:  %s\n", mb(single.maxLayer), singleNaive)
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru) == nil {
		fmt.Printf("getrusage(RUSAGE_CHILDREN).Maxrss over the whole run: %s\n", mb(ru.Maxrss*1024))
	}

	b.ReportMetric(0, "ns/op")
	b.ReportMetric(bm.Seconds(), "banger-s")
	b.ReportMetric(nm.Seconds(), "naive-s")
	b.ReportMetric(ratio, "ratio")
	b.ReportMetric(bc.Seconds()/nc.Seconds(), "cpu-ratio")
	b.ReportMetric(float64(bp.heap)/mib, "banger-heap-MB")
	b.ReportMetric(float64(np.heap)/mib, "naive-heap-MB")
	b.ReportMetric(float64(bp.child)/mib, "banger-child-MB")
	b.ReportMetric(float64(np.child)/mib, "naive-child-MB")
	b.ReportMetric(float64(singleRes.heap)/mib, "banger-1layer-heap-MB")
}

// ---- the two pipelines ----

// bangerPull pulls ref into a fresh store under dir: nothing cached.
func bangerPull(b *testing.B, dir, ref string, ph *phases) {
	l := paths.Under(dir)
	if err := l.Ensure(); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	db, err := store.Open(ctx, l.DB())
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	s, err := image.New(image.Config{Layout: l, DB: db, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	ph.start()
	progress := func(e api.Event) {
		switch e.Phase {
		case "layer":
			ph.mark("resolve")
		case "ext4":
			ph.mark("layers")
		}
	}
	if _, err := s.Pull(ctx, api.PullImageRequest{Ref: ref, Name: "x"}, progress); err != nil {
		b.Fatal(err)
	}
	ph.mark("ext4+publish")
}

// naivePull is the obvious pipeline: flatten every layer to one tar file
// (mutate.Extract applies whiteouts), extract it, mke2fs -d.
func naivePull(b *testing.B, dir, ref string, ph *phases) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	ph.start()
	r, err := name.ParseReference(ref)
	if err != nil {
		b.Fatal(err)
	}
	img, err := remote.Image(r)
	if err != nil {
		b.Fatal(err)
	}
	tarPath := filepath.Join(dir, "flat.tar")
	f, err := os.Create(tarPath)
	if err != nil {
		b.Fatal(err)
	}
	rc := mutate.Extract(img)
	if _, err := io.Copy(f, rc); err != nil {
		b.Fatal(err)
	}
	rc.Close()
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
	ph.mark("flatten-to-tar")
	root := filepath.Join(dir, "root")
	content, err := extract(tarPath, root)
	if err != nil {
		b.Fatal(err)
	}
	ph.mark("untar")
	size := content + content/2
	if size < gib {
		size = gib
	}
	size = (size + mib - 1) / mib * mib
	out := filepath.Join(dir, "rootfs.ext4")
	cmd := exec.Command("mke2fs", "-t", "ext4", "-d", root, "-F", "-q", out, strconv.FormatInt(size/1024, 10)+"k")
	if o, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("mke2fs: %v: %s", err, o)
	}
	ph.mark("mke2fs")
	// Remove the intermediates, as banger's Pull removes its staging tree.
	if err := errors.Join(os.Remove(tarPath), os.RemoveAll(root)); err != nil {
		b.Fatal(err)
	}
	ph.mark("cleanup")
}

// phases records when each step of a path ended.
type phases struct {
	t0, last time.Time
	names    []string
	durs     []time.Duration
}

func (p *phases) start() { p.t0 = time.Now(); p.last = p.t0 }

// mark ends the step called name (only its first mark counts).
func (p *phases) mark(name string) {
	if slices.Contains(p.names, name) {
		return
	}
	now := time.Now()
	p.names = append(p.names, name)
	p.durs = append(p.durs, now.Sub(p.last))
	p.last = now
}

func (p *phases) String(r result) string {
	var parts []string
	for i, n := range p.names {
		parts = append(parts, fmt.Sprintf("%s %.2fs", n, p.durs[i].Seconds()))
	}
	for _, c := range r.childTimes {
		parts = append(parts, c)
	}
	return strings.Join(parts, ", ")
}

// extract unpacks a flat tar into root and returns the content size (file
// data in 4 KiB blocks plus a block per directory).
func extract(tarPath, root string) (int64, error) {
	f, err := os.Open(tarPath)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	if err := os.MkdirAll(root, 0o755); err != nil {
		return 0, err
	}
	var content int64
	type dirTime struct {
		path string
		t    time.Time
	}
	var dirs []dirTime
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return 0, err
		}
		p := filepath.Join(root, filepath.Clean("/"+hdr.Name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return 0, err
		}
		mode := os.FileMode(hdr.Mode & 0o7777)
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := os.Mkdir(p, mode); err != nil && !os.IsExist(err) {
				return 0, err
			}
			os.Chmod(p, mode)
			dirs = append(dirs, dirTime{p, hdr.ModTime})
			content += 4096
		case tar.TypeReg:
			os.Remove(p)
			w, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_EXCL, mode)
			if err != nil {
				return 0, err
			}
			if _, err := io.Copy(w, tr); err != nil {
				w.Close()
				return 0, err
			}
			if err := w.Close(); err != nil {
				return 0, err
			}
			content += (hdr.Size + 4095) / 4096 * 4096
		case tar.TypeSymlink:
			os.Remove(p)
			if err := os.Symlink(hdr.Linkname, p); err != nil {
				return 0, err
			}
		case tar.TypeLink:
			os.Remove(p)
			if err := os.Link(filepath.Join(root, filepath.Clean("/"+hdr.Linkname)), p); err != nil {
				return 0, err
			}
			continue
		default:
			continue
		}
		os.Lchown(p, hdr.Uid, hdr.Gid)
		if hdr.Typeflag != tar.TypeSymlink {
			os.Chmod(p, mode) // after chown, which clears setuid bits
			os.Chtimes(p, hdr.ModTime, hdr.ModTime)
		}
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		os.Chtimes(dirs[i].path, dirs[i].t, dirs[i].t)
	}
	return content, nil
}

// ---- measurement ----

type result struct {
	wall     time.Duration
	heap     uint64 // peak heap in use (objects, live and not yet swept) above the baseline
	live     uint64 // peak live heap after a GC, above the baseline
	child    uint64 // peak RSS of any child process (mke2fs, debugfs)
	childWho string
	rss      uint64        // peak RSS of the test process (VmHWM) above its RSS before
	cpu      time.Duration // user+system CPU of this process and of the children it waited for
	// childTimes says how long each child program was seen running.
	childTimes []string
	phases     string
}

func (r result) String() string {
	return fmt.Sprintf("%.2fs, cpu %.2fs [%s] (%s)", r.wall.Seconds(), r.cpu.Seconds(), r.phases, r.mem())
}

func (r result) mem() string {
	return fmt.Sprintf("Go heap in use +%s (live +%s), process RSS +%s, child RSS %s (%s)",
		mb(int64(r.heap)), mb(int64(r.live)), mb(int64(r.rss)), mb(int64(r.child)), r.childWho)
}

func mb(n int64) string { return fmt.Sprintf("%.0f MB", float64(n)/mib) }

// measure runs fn with a sampler of the Go heap and of child processes'
// peak RSS, then cleanup and a sync, neither timed, so that every run
// starts with no dirty pages of the previous one.
func measure(b *testing.B, fn, cleanup func()) result {
	runtime.GC()
	runtime.GC()
	samples := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/gc/heap/live:bytes"}}
	metrics.Read(samples)
	heap0, live0 := samples[0].Value.Uint64(), samples[1].Value.Uint64()
	rss0 := procStatus("self", "VmRSS")
	// Writing 5 resets the process's peak RSS (VmHWM).
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		b.Logf("cannot reset VmHWM: %v", err)
	}

	var (
		mu       sync.Mutex
		r        result
		stop     = make(chan struct{})
		done     = make(chan struct{})
		children = map[string]uint64{}
		seen     = map[string][2]time.Time{} // pid:comm -> first, last seen
	)
	self, _ := os.ReadFile("/proc/self/comm")
	selfComm := strings.TrimSpace(string(self))
	ticks := 0
	sample := func() {
		metrics.Read(samples)
		mu.Lock()
		defer mu.Unlock()
		if h := samples[0].Value.Uint64(); h > heap0 && h-heap0 > r.heap {
			r.heap = h - heap0
		}
		if l := samples[1].Value.Uint64(); l > live0 && l-live0 > r.live {
			r.live = l - live0
		}
		// /proc is scanned every other tick: it costs more than the heap.
		ticks++
		if ticks%2 == 1 {
			return
		}
		for _, pid := range childPIDs() {
			comm, _ := os.ReadFile("/proc/" + pid + "/comm")
			c := strings.TrimSpace(string(comm))
			if c == selfComm || c == "" {
				continue // forked, not yet exec'd: its RSS is ours
			}
			hwm := procStatus(pid, "VmHWM")
			if hwm > children[c] {
				children[c] = hwm
			}
			k := pid + ":" + c
			now := time.Now()
			s, ok := seen[k]
			if !ok {
				s[0] = now
			}
			s[1] = now
			seen[k] = s
		}
	}
	go func() {
		defer close(done)
		t := time.NewTicker(3 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				sample()
			}
		}
	}()
	cpu0 := cpuTime()
	start := time.Now()
	fn()
	r.wall = time.Since(start)
	r.cpu = cpuTime() - cpu0
	close(stop)
	<-done
	ticks = 1
	sample()
	if hwm := procStatus("self", "VmHWM"); hwm > rss0 {
		r.rss = hwm - rss0
	}
	var who []string
	for c, v := range children {
		who = append(who, c+" "+mb(int64(v)))
		r.child = max(r.child, v)
	}
	slices.Sort(who)
	r.childWho = strings.Join(who, ", ")
	byComm := map[string]time.Duration{}
	for k, s := range seen {
		byComm[k[strings.Index(k, ":")+1:]] += s[1].Sub(s[0])
	}
	for c, d := range byComm {
		if c != "sh" {
			r.childTimes = append(r.childTimes, fmt.Sprintf("(%s ran ~%.2fs)", c, d.Seconds()))
		}
	}
	slices.Sort(r.childTimes)
	cleanup()
	syscall.Sync()
	// ext4 without a journal (as on this machine's disk) will not reuse an
	// inode freed in the last 5 s (60 s while its table block is dirty),
	// and scans past every such inode on each create: without a pause the
	// next run would pay for this run's deletions.
	time.Sleep(settle)
	return r
}

var settle = func() time.Duration {
	if s := os.Getenv("BANGER_BENCH_SETTLE"); s != "" {
		if d, err := time.ParseDuration(s); err == nil {
			return d
		}
	}
	return 6 * time.Second
}()

// cpuTime returns the CPU time used so far by this process and its
// waited-for children.
func cpuTime() time.Duration {
	var d time.Duration
	for _, who := range []int{syscall.RUSAGE_SELF, syscall.RUSAGE_CHILDREN} {
		var ru syscall.Rusage
		if syscall.Getrusage(who, &ru) == nil {
			d += time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		}
	}
	return d
}

// childPIDs lists the children of every thread of this process.
func childPIDs() []string {
	tasks, _ := os.ReadDir("/proc/self/task")
	var out []string
	for _, t := range tasks {
		b, err := os.ReadFile("/proc/self/task/" + t.Name() + "/children")
		if err != nil {
			continue
		}
		out = append(out, strings.Fields(string(b))...)
	}
	return out
}

// procStatus returns a "kB" field of /proc/PID/status in bytes.
func procStatus(pid, field string) uint64 {
	b, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				n, _ := strconv.ParseUint(f[0], 10, 64)
				return n * 1024
			}
		}
	}
	return 0
}

func median(rs []result) time.Duration {
	ds := make([]time.Duration, len(rs))
	for i, r := range rs {
		ds[i] = r.wall
	}
	slices.Sort(ds)
	return ds[len(ds)/2]
}

func medianCPU(rs []result) time.Duration {
	ds := make([]time.Duration, len(rs))
	for i, r := range rs {
		ds[i] = r.cpu
	}
	slices.Sort(ds)
	return ds[len(ds)/2]
}

// peaks returns the highest of each memory figure over rs.
func peaks(rs []result) result {
	var p result
	for _, r := range rs {
		p.heap, p.live, p.rss = max(p.heap, r.heap), max(p.live, r.live), max(p.rss, r.rss)
		if r.child >= p.child {
			p.child, p.childWho = r.child, r.childWho
		}
	}
	return p
}

// ---- registry ----

// startRegistry runs go-containerregistry's registry (the same one as
// testutil.NewRegistry) but with blobs on disk: the in-memory handler
// would keep every blob on this process's Go heap and make its GC pacing,
// hence the heap peaks, depend on the registry rather than the pull.
func startRegistry(b *testing.B, dir string) string {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: registry.New(
		registry.Logger(log.New(io.Discard, "", 0)),
		registry.WithBlobHandler(registry.NewDiskBlobHandler(dir)),
	)}
	go srv.Serve(ln)
	b.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

func push(b *testing.B, g genImg, ref string) string {
	if err := crane.Push(g.img, ref); err != nil {
		b.Fatalf("push %s: %v", ref, err)
	}
	return ref
}

// ---- image generation ----

// layerPlan describes one generated layer.
type layerPlan struct {
	small     int   // small files, 64 B to 64 KiB, mostly a few KiB
	big       []int // sizes of large files, bytes
	overwrite int   // files of earlier layers rewritten
	whiteout  int   // files of earlier layers deleted
	opaque    bool  // make one earlier directory opaque
}

// multiLayerPlan is ~200 MB in 5 layers of ~40 MB: a base system with
// thousands of small files, package layers with libraries, an application
// layer with a couple of big files, and a top layer of edits.
func multiLayerPlan() []layerPlan {
	return []layerPlan{
		{small: 4000, big: sizes(2, 1, 3, 2, 1, 2, 1)},
		{small: 2500, big: sizes(3, 4, 2, 3, 2, 1, 1), overwrite: 100, whiteout: 40},
		{small: 1500, big: sizes(16, 8, 2, 1, 1)},
		{small: 1500, big: sizes(8, 6, 4, 3, 2, 1, 1), overwrite: 300, whiteout: 100, opaque: true},
		{small: 800, big: sizes(10, 6, 4, 2, 2), overwrite: 200, whiteout: 60},
	}
}

// singleLayerPlan has about the same content as multiLayerPlan in one layer.
func singleLayerPlan() []layerPlan {
	var one layerPlan
	for _, l := range multiLayerPlan() {
		one.small += l.small
		one.big = append(one.big, l.big...)
	}
	return []layerPlan{one}
}

func sizes(mbs ...int) []int {
	out := make([]int, len(mbs))
	for i, m := range mbs {
		out[i] = m * mib
	}
	return out
}

type genImg struct {
	img          v1.Image
	uncompressed int64
	compressed   int64
	maxLayer     int64 // largest uncompressed layer
	files        int
}

// content makes file bodies that compress roughly like software: about a
// quarter incompressible (code, compressed assets) and the rest text-like.
type content struct {
	rng  *rand.Rand
	text []byte
}

func newContent(seed uint64) *content {
	rng := rand.New(rand.NewPCG(seed, 0xbe11))
	words := strings.Fields(`the of and to in is that for it as with was on be by this are from at or an
		int func return if else struct type var const package import error nil string uint64 byte len
		config system user file path dir mount device kernel module driver init start stop service
		usr lib bin share doc locale include python3 perl libc so debian amd64 x86_64 gnu linux version
		copyright license permission software warranty without merchantability fitness purpose`)
	var t bytes.Buffer
	for t.Len() < 4*mib {
		t.WriteString(words[rng.IntN(len(words))])
		if rng.IntN(10) == 0 {
			t.WriteByte('\n')
		} else {
			t.WriteByte(' ')
		}
		if rng.IntN(50) == 0 {
			fmt.Fprintf(&t, "%x ", rng.Uint32())
		}
	}
	return &content{rng: rng, text: t.Bytes()}
}

func (c *content) fill(p []byte) {
	for len(p) > 0 {
		n := min(len(p), 4096)
		if c.rng.IntN(100) < 18 {
			for i := 0; i < n; i += 8 {
				v := c.rng.Uint64()
				for j := 0; j < 8 && i+j < n; j++ {
					p[i+j] = byte(v >> (8 * j))
				}
			}
		} else {
			off := c.rng.IntN(len(c.text) - n)
			copy(p[:n], c.text[off:off+n])
		}
		p = p[n:]
	}
}

func (c *content) smallSize() int {
	// Log-uniform between 64 B and 64 KiB: median ~2 KiB, mean ~9 KiB.
	return int(64 * pow2(c.rng.Float64()*10))
}

func pow2(x float64) float64 {
	r := 1.0
	for x >= 1 {
		r *= 2
		x--
	}
	return r * (1 + x*0.6931 + x*x*0.2402) // 2^x for x in [0,1)
}

// genImage builds the layers, gzipped in memory, and the image.
func genImage(b *testing.B, seed uint64, plan []layerPlan) genImg {
	c := newContent(seed)
	var g genImg
	var files []string // regular files so far, for overwrites and whiteouts
	deleted := map[string]bool{}
	topDirs := []string{"usr/lib", "usr/share/doc", "usr/bin", "etc", "opt/app", "var/lib"}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	now := time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)
	for li, lp := range plan {
		var raw countWriter
		var gz bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&gz, gzip.DefaultCompression)
		tw := tar.NewWriter(io.MultiWriter(zw, &raw))
		madeDirs := map[string]bool{}
		mkdirs := func(p string) {
			var parts []string
			for d := filepath.Dir(p); d != "."; d = filepath.Dir(d) {
				parts = append(parts, d)
			}
			for i := len(parts) - 1; i >= 0; i-- {
				if !madeDirs[parts[i]] {
					madeDirs[parts[i]] = true
					must(b, tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: parts[i] + "/", Mode: 0o755, ModTime: now}))
				}
			}
		}
		buf := make([]byte, 0, 32*mib)
		writeFile := func(p string, size int, mode int64) {
			mkdirs(p)
			buf = buf[:size]
			c.fill(buf)
			must(b, tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: p, Size: int64(size), Mode: mode, ModTime: now}))
			_, err := tw.Write(buf)
			must(b, err)
			g.files++
		}
		prev := slices.Clone(files)
		// Edits of earlier layers first, as a package upgrade would.
		for i := 0; i < lp.overwrite && len(prev) > 0; i++ {
			p := prev[c.rng.IntN(len(prev))]
			if deleted[p] {
				continue
			}
			writeFile(p, c.smallSize(), 0o644)
		}
		for i := 0; i < lp.whiteout && len(prev) > 0; i++ {
			p := prev[c.rng.IntN(len(prev))]
			if deleted[p] {
				continue
			}
			deleted[p] = true
			mkdirs(p)
			must(b, tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: filepath.Join(filepath.Dir(p), ".wh."+filepath.Base(p)), ModTime: now}))
		}
		if lp.opaque {
			d := fmt.Sprintf("usr/share/doc/l%d-d0", li-1)
			mkdirs(d + "/x")
			must(b, tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: d + "/.wh..wh..opq", ModTime: now}))
			for _, p := range prev {
				if strings.HasPrefix(p, d+"/") {
					deleted[p] = true
				}
			}
		}
		for i := 0; i < lp.small; i++ {
			p := fmt.Sprintf("%s/l%d-d%d/f%d.txt", topDirs[i%len(topDirs)], li, i/200, i)
			mode := int64(0o644)
			if i%17 == 0 {
				mode = 0o755
			}
			writeFile(p, c.smallSize(), mode)
			// Hard-linked files stay put: mutate.Extract (the naive path)
			// cannot flatten a link whose target a later layer removed.
			if i%211 != 0 {
				files = append(files, p)
			}
			if i%97 == 0 {
				must(b, tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: p + ".link", Linkname: filepath.Base(p), ModTime: now}))
			}
			if i%211 == 0 {
				must(b, tw.WriteHeader(&tar.Header{Typeflag: tar.TypeLink, Name: p + ".hard", Linkname: p, ModTime: now}))
			}
		}
		for i, size := range lp.big {
			p := fmt.Sprintf("usr/lib/x86_64-linux-gnu/l%d/lib%d.so.%d", li, i, size/mib)
			writeFile(p, size, 0o755)
			files = append(files, p)
		}
		must(b, tw.Close())
		must(b, zw.Close())
		data := gz.Bytes()
		layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(data)), nil
		}, tarball.WithMediaType(types.OCILayer))
		must(b, err)
		img, err = mutate.AppendLayers(img, layer)
		must(b, err)
		g.uncompressed += raw.n
		g.compressed += int64(len(data))
		g.maxLayer = max(g.maxLayer, raw.n)
	}
	cf, err := img.ConfigFile()
	must(b, err)
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Config.Cmd = []string{"/bin/sh"}
	img, err = mutate.ConfigFile(img, cf)
	must(b, err)
	g.img = img
	return g
}

func describe(b *testing.B, what string, g genImg) {
	layers, err := g.img.Layers()
	must(b, err)
	fmt.Printf("%s image: %d layers, %d files, %s uncompressed (largest layer %s), %s gzipped (%.1fx)\n",
		what, len(layers), g.files, mb(g.uncompressed), mb(g.maxLayer), mb(g.compressed), float64(g.uncompressed)/float64(g.compressed))
}

type countWriter struct{ n int64 }

func (w *countWriter) Write(p []byte) (int, error) { w.n += int64(len(p)); return len(p), nil }

func must(b *testing.B, err error) {
	b.Helper()
	if err != nil {
		b.Fatal(err)
	}
}
