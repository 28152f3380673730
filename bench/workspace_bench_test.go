package bench

// Workspace shipping: `banger vm workspace prepare` of a 10,000-file,
// ~100 MB repository against `tar c | banger vm exec VM -- tar x` over the
// same agent exec channel, in the same run. See README.md, "Workspace
// shipping".

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bangervm/banger/internal/testutil"
	"github.com/bangervm/banger/internal/workspace"
)

const (
	wsFiles = 10_000
	wsBytes = 100 * mib
)

func wsRounds(b *testing.B) int {
	n := 3
	if s := os.Getenv("BANGER_BENCH_WS_ROUNDS"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 {
			b.Fatalf("BANGER_BENCH_WS_ROUNDS=%q: want a positive integer", s)
		}
		n = v
	}
	return n
}

// BenchmarkWorkspaceShip times `vm workspace prepare VM REPO --guest-path
// /root/ws-N` against `tar c -C REPO --exclude=.git . | vm exec VM -- sh -c
// 'mkdir -p /root/tar-N && tar x -C /root/tar-N'` (stdin piped through the
// same exec channel), alternating, on one Debian VM.
func BenchmarkWorkspaceShip(b *testing.B) {
	testutil.RequireTool(b, "git", "git")
	testutil.RequireTool(b, "tar", "tar")
	testutil.RequireTool(b, "mmdebstrap", "mmdebstrap")
	testutil.RequireTool(b, "fakechroot", "fakechroot")
	testutil.RequireRoot(b)
	v := sharedVMBench(b)
	rounds := wsRounds(b)

	repo, size := genRepo(b)

	t0 := time.Now()
	v.ok(b, "image", "pull", "debian-bookworm", "--kernel", "debian-cloud")
	fmt.Printf("workspace bench: image pull debian-bookworm %s\n", time.Since(t0).Round(100*time.Millisecond))
	defer v.run("image", "delete", "debian-bookworm")

	const vm = "wsbench"
	t0 = time.Now()
	v.ok(b, "vm", "run", "-d", "--name", vm, "--image", "debian-bookworm", "--memory", "1024", "--disk-size", "4G")
	defer v.run("vm", "delete", "-f", vm)
	fmt.Printf("workspace bench: vm run -d %s\n", time.Since(t0).Round(100*time.Millisecond))
	// Warm-up, not timed: first exec, guest page cache for git and tar.
	v.ok(b, "vm", "exec", "-w", "/", vm, "--", "sh", "-c", "git --version && tar --version | head -1 && nproc && free -m | head -2")

	b.ResetTimer()
	var wsT, tarT []time.Duration
	for i := range rounds {
		ws := func() {
			d, _ := v.timed(b, "vm", "workspace", "prepare", vm, repo, "--guest-path", fmt.Sprintf("/root/ws-%d", i))
			wsT = append(wsT, d)
		}
		tr := func() { tarT = append(tarT, v.tarShip(b, vm, repo, fmt.Sprintf("/root/tar-%d", i))) }
		if i%2 == 0 {
			ws()
			tr()
		} else {
			tr()
			ws()
		}
		fmt.Printf("workspace round %d: prepare %s  tar|exec tar x %s\n", i+1, ms(wsT[i]), ms(tarT[i]))
		// Keep the guest disk from filling: drop this round's copies.
		v.ok(b, "vm", "exec", "-w", "/", vm, "--", "sh", "-c", fmt.Sprintf("rm -rf /root/ws-%d /root/tar-%d && sync", i, i))
	}
	b.StopTimer()

	wm, tm := medianD(wsT), medianD(tarT)
	ratio := wm.Seconds() / tm.Seconds()
	fmt.Printf("workspace prepare (%d files, %s): median %s; tar c | exec tar x: median %s; ratio %.2f (goal <= 1.1: %s)\n",
		wsFiles, mbs(size), ms(wm), ms(tm), ratio, met(ratio <= 1.1))
	wmin, tmin := slices.Min(wsT), slices.Min(tarT)
	fmt.Printf("workspace fastest of %d: prepare %s, tar %s, ratio %.2f\n", rounds, ms(wmin), ms(tmin), wmin.Seconds()/tmin.Seconds())

	v.wsPhases(b, vm, repo)

	b.ReportMetric(0, "ns/op")
	b.ReportMetric(wm.Seconds(), "prepare-s")
	b.ReportMetric(tm.Seconds(), "tar-s")
	b.ReportMetric(ratio, "ratio")
	b.ReportMetric(wmin.Seconds()/tmin.Seconds(), "min-ratio")
}

// tarShip runs tar c on the host with its stdout as banger vm exec's stdin
// and returns the wall time, tar start to both exits.
func (v *vmBench) tarShip(b *testing.B, vm, repo, dest string) time.Duration {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	d, err := v.pipeInto(ctx, exec.CommandContext(ctx, "tar", "c", "-C", repo, "--exclude=.git", "."), vm,
		fmt.Sprintf("mkdir -p %s && tar x -C %s", dest, dest))
	if err != nil {
		b.Fatal(err)
	}
	return d
}

// pipeInto runs src with its stdout as the stdin of `banger vm exec VM --
// sh -c script` (in /: a prepared workspace would otherwise be the
// default working directory) and returns the wall time until both exited.
func (v *vmBench) pipeInto(ctx context.Context, src *exec.Cmd, vm, script string) (time.Duration, error) {
	dst := v.cmd(ctx, "vm", "exec", "-w", "/", vm, "--", "sh", "-c", script)
	var serr, derr, dout bytes.Buffer
	src.Stderr = &serr
	dst.Stdout, dst.Stderr = &dout, &derr
	pipe, err := src.StdoutPipe()
	if err != nil {
		return 0, err
	}
	dst.Stdin = pipe
	t0 := time.Now()
	if err := src.Start(); err != nil {
		return 0, err
	}
	if err := dst.Start(); err != nil {
		src.Process.Kill()
		src.Wait()
		return 0, err
	}
	// Only the two children hold the pipe now: if exec exits early,
	// tar gets EPIPE instead of blocking.
	pipe.Close()
	derrW := dst.Wait()
	serrW := src.Wait()
	d := time.Since(t0)
	if serrW != nil || derrW != nil {
		return d, fmt.Errorf("%s | vm exec %s: %v / %v\nsrc stderr: %s\nexec stdout: %s\nexec stderr: %s\ndaemon log tail:\n%s",
			strings.Join(src.Args, " "), script, serrW, derrW, serr.String(), dout.String(), derr.String(), tail(v.daemonLog(), 2000))
	}
	return d, nil
}

// wsPhases splits one prepare into its parts (not part of the result):
// host Inspect+Plan, host Pack to a file, the raw stream through the exec
// channel into the guest, and the guest script alone on a local copy.
func (v *vmBench) wsPhases(b *testing.B, vm, repo string) {
	ctx := context.Background()
	t0 := time.Now()
	r, err := workspace.Inspect(ctx, repo)
	if err != nil {
		b.Fatal(err)
	}
	m, err := workspace.Plan(ctx, r, workspace.Options{})
	if err != nil {
		b.Fatal(err)
	}
	plan := time.Since(t0)
	f, err := os.CreateTemp("", "ws-stream-*.tar")
	if err != nil {
		b.Fatal(err)
	}
	defer os.Remove(f.Name())
	t0 = time.Now()
	if err := workspace.Pack(ctx, m, f); err != nil {
		b.Fatal(err)
	}
	pack := time.Since(t0)
	st, _ := f.Stat()
	f.Close()

	// The tar baseline's stream, for its size and the host's share.
	t0 = time.Now()
	out, err := exec.Command("sh", "-c", "tar c -C "+repo+" --exclude=.git . | wc -c").Output()
	if err != nil {
		b.Fatal(err)
	}
	tarHost := time.Since(t0)
	tarSize, _ := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)

	// The channel alone: the workspace stream into a guest file, and
	// the same number of zero bytes into cat >/dev/null.
	cctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	chanWS, err := v.pipeInto(cctx, exec.CommandContext(cctx, "cat", f.Name()), vm, "cat > /root/ws-stream.tar")
	if err != nil {
		b.Fatal(err)
	}
	chanNull, err := v.pipeInto(cctx, exec.CommandContext(cctx, "head", "-c", strconv.FormatInt(tarSize, 10), "/dev/zero"), vm, "cat > /dev/null")
	if err != nil {
		b.Fatal(err)
	}
	// The guest's side alone, from the local copies: the prepare script
	// under bash set -x (PS4 set inside: bash ignores it from the
	// environment as root) with a time stamp per traced command, and tar x of
	// the baseline stream.
	if _, err := v.pipeInto(cctx, exec.CommandContext(cctx, "tar", "c", "-C", repo, "--exclude=.git", "."), vm, "cat > /root/tar-stream.tar"); err != nil {
		b.Fatal(err)
	}
	script := workspace.GuestPrepareScript("/root/ws-local", r.Branch)
	sf := f.Name() + ".sh"
	if err := os.WriteFile(sf, []byte(script), 0o644); err != nil {
		b.Fatal(err)
	}
	defer os.Remove(sf)
	if _, err := v.pipeInto(cctx, exec.CommandContext(cctx, "cat", sf), vm, "cat > /root/prepare.sh"); err != nil {
		b.Fatal(err)
	}
	guestOut := v.ok(b, "vm", "exec", "-w", "/", vm, "--", "sh", "-c", `sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null
a=$(date +%s.%N)
bash -c 'PS4="+T \$(date +%s.%N) "; set -x; . /root/prepare.sh' < /root/ws-stream.tar 2>/root/trace.txt
b=$(date +%s.%N)
sync; mkdir -p /root/tl; c=$(date +%s.%N); tar x -C /root/tl -f /root/tar-stream.tar; sync; d=$(date +%s.%N)
echo "WHOLE $a $b"; echo "TARX $c $d"; echo "END $b"
grep '^+T ' /root/trace.txt
rm -rf /root/ws-local /root/tl /root/ws-stream.tar /root/tar-stream.tar /root/prepare.sh /root/trace.txt`)

	fmt.Printf("workspace phases (one run each, not part of the result):\n")
	fmt.Printf("  host: Inspect+Plan %s; Pack %s -> stream %s; tar c of the tree %s -> %s\n",
		ms(plan), ms(pack), mbs(st.Size()), ms(tarHost), mbs(tarSize))
	fmt.Printf("  channel: workspace stream into a guest file %s (%.0f MiB/s); %s of zeros into cat >/dev/null %s (%.0f MiB/s)\n",
		ms(chanWS), float64(st.Size())/mib/chanWS.Seconds(), mbs(tarSize), ms(chanNull), float64(tarSize)/mib/chanNull.Seconds())
	printGuestTrace(guestOut)
}

// printGuestTrace prints the guest script's total, the baseline's tar x,
// and every traced command of the script that took 100 ms or more (until
// the next traced command).
func printGuestTrace(out string) {
	type ev struct {
		t   float64
		cmd string
	}
	var evs []ev
	var end float64
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		switch {
		case len(f) == 3 && (f[0] == "WHOLE" || f[0] == "TARX"):
			a, _ := strconv.ParseFloat(f[1], 64)
			z, _ := strconv.ParseFloat(f[2], 64)
			name := map[string]string{"WHOLE": "prepare script from a local file", "TARX": "tar x of the baseline stream from a local file (+sync)"}[f[0]]
			fmt.Printf("  guest: %s %.0f ms\n", name, (z-a)*1000)
		case len(f) == 2 && f[0] == "END":
			end, _ = strconv.ParseFloat(f[1], 64)
		case len(f) >= 2 && strings.TrimLeft(f[0], "+") == "T":
			// PS4 is "+T <time> "; bash repeats the + per nesting level.
			t, err := strconv.ParseFloat(f[1], 64)
			if err == nil {
				evs = append(evs, ev{t, strings.Join(f[2:], " ")})
			}
		}
	}
	for i, e := range evs {
		next := end
		if i+1 < len(evs) {
			next = evs[i+1].t
		}
		if d := next - e.t; d >= 0.1 {
			fmt.Printf("  guest step %6.0f ms  %s\n", d*1000, tail(e.cmd, 120))
		}
	}
}

// genRepo writes a git repository of wsFiles files and about wsBytes bytes
// in nested directories, commits it all, then leaves some uncommitted
// changes: 20 modified files, 3 deleted, 2 new files staged. It returns
// the path and the working tree's size.
func genRepo(b *testing.B) (string, int64) {
	b.Helper()
	t0 := time.Now()
	dir, err := os.MkdirTemp("", "ws-repo-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	c := newContent(0x5eed)
	exts := []string{".go", ".md", ".txt", ".json", ".c", ".h", ".py", ".bin"}
	var paths []string
	var total int64
	write := func(p string, n int) {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			b.Fatal(err)
		}
		buf := make([]byte, n)
		c.fill(buf)
		if err := os.WriteFile(full, buf, 0o644); err != nil {
			b.Fatal(err)
		}
		total += int64(n)
	}
	const large = 10
	for i := range wsFiles - large {
		p := fmt.Sprintf("pkg%02d/sub%d/f%05d%s", i%50, (i/50)%8, i, exts[i%len(exts)])
		paths = append(paths, p)
		write(p, c.smallSize())
	}
	// A few large files (assets, vendored archives) make up the rest.
	rest := max(int64(wsBytes)-total, large*mib)
	for i := range large {
		p := fmt.Sprintf("assets/blob%02d.dat", i)
		paths = append(paths, p)
		write(p, int(rest/large))
	}
	git := func(args ...string) {
		cmd := exec.Command("git", append([]string{"-c", "user.name=bench", "-c", "user.email=bench@example.com", "-c", "init.defaultBranch=main"}, args...)...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	git("init", "-q", ".")
	git("add", "-A")
	git("commit", "-q", "-m", "generated")
	// Uncommitted changes.
	for i := 0; i < 20; i++ {
		p := filepath.Join(dir, paths[i*37])
		fh, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			b.Fatal(err)
		}
		fmt.Fprintf(fh, "\nlocal change %d\n", i)
		fh.Close()
	}
	for i := 0; i < 3; i++ {
		os.Remove(filepath.Join(dir, paths[1000+i*11]))
	}
	write("pkg00/new1.go", 3000)
	write("pkg01/new2.md", 500)
	git("add", "pkg00/new1.go", "pkg01/new2.md")
	fmt.Printf("workspace bench: generated repo %s: %d files, %s, in %s\n", dir, wsFiles-3+2, mbs(total), time.Since(t0).Round(100*time.Millisecond))
	return dir, total
}
