package kubecluster

import (
	"bufio"
	"context"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/bangervm/banger/internal/hostcmd"
)

var getOpts = metav1.GetOptions{}

// teardown stops the cluster from the pods inward: pods deleted while the
// kubelet still runs (so their sandboxes, network namespaces and mounts
// are released), then the kubelet, what is left of the containers, and
// the control plane; then whatever is still mounted under Dir.
func (c *Cluster) teardown() {
	t := c.t
	if t.Failed() {
		for _, p := range c.procs {
			t.Logf("--- %s (last lines) ---\n%s", p.name, tailFile(p.log, 2000))
		}
	}
	if c.Client != nil && c.running("kubelet") {
		c.deletePods()
	}
	for _, name := range []string{"kubelet"} {
		if p := c.proc(name); p != nil {
			p.stop(20 * time.Second)
		}
	}
	if c.running("containerd") {
		c.killTasks()
	}
	c.killUnder("kubepods")
	c.killShims()
	if c.fwd != nil {
		c.fwd.Close()
	}
	for _, name := range []string{"kube-scheduler", "kube-controller-manager", "containerd", "kube-apiserver", "etcd"} {
		if p := c.proc(name); p != nil {
			p.stop(15 * time.Second)
		}
	}
	c.killShims() // a shim started while containerd stopped
	// Pods the kubelet did not stop in time leave their sandboxes'
	// namespaces, which containerd makes in the machine's /run/netns.
	for name := range cniNetns() {
		if c.netnsBefore[name] {
			continue
		}
		p := filepath.Join("/run/netns", name)
		syscall.Unmount(p, syscall.MNT_DETACH)
		if err := os.Remove(p); err != nil {
			t.Errorf("remove pod network namespace %s: %v", p, err)
		}
	}
	for _, m := range mountsUnder(c.Dir) {
		if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", m, err)
		}
	}
}

func (c *Cluster) proc(name string) *proc {
	for _, p := range c.procs {
		if p.name == name {
			return p
		}
	}
	return nil
}

func (c *Cluster) running(name string) bool {
	p := c.proc(name)
	if p == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// deletePods deletes every pod and waits (bounded) for the kubelet to
// have stopped them.
func (c *Cluster) deletePods() {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	grace := int64(1)
	nss, err := c.Client.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
	if err != nil {
		c.t.Logf("teardown: list namespaces: %v", err)
		return
	}
	for _, ns := range nss.Items {
		c.Client.CoreV1().Pods(ns.Name).DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: &grace}, metav1.ListOptions{})
	}
	for ctx.Err() == nil {
		pods, err := c.Client.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
		if err != nil || len(pods.Items) == 0 {
			return
		}
		time.Sleep(300 * time.Millisecond)
	}
	c.t.Logf("teardown: pods still present after 60 s; killing their containers")
}

// killTasks kills and deletes every containerd task and container left,
// which ends their shims.
func (c *Cluster) killTasks() {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ctr := func(args ...string) string {
		out, _ := hostcmd.Run(ctx, hostcmd.Cmd{Name: "ctr", Package: "containerd",
			Args: append([]string{"--address", c.ContainerdSocket, "-n", "k8s.io"}, args...)})
		return string(out)
	}
	ids := strings.Fields(ctr("containers", "ls", "-q"))
	for _, id := range ids {
		ctr("tasks", "kill", "-s", "SIGKILL", id)
	}
	for _, id := range ids {
		ctr("tasks", "delete", "-f", id)
		ctr("containers", "delete", id)
	}
}

// killShims kills containerd shims started by this cluster's containerd
// (they outlive it by design), found by the socket address on their
// command line.
func (c *Cluster) killShims() {
	if c.ContainerdSocket == "" {
		return
	}
	for _, pid := range pidsWithArg("-address", c.ContainerdSocket) {
		syscall.Kill(pid, syscall.SIGKILL)
	}
}

// pidsWithArg lists the processes whose command line has flag followed by
// value.
func pidsWithArg(flag, value string) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		for i := 0; i+1 < len(args); i++ {
			if args[i] == flag && args[i+1] == value {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}

// PidsUsing lists the processes whose command line mentions path: what a
// cluster rooted at path left running (the smoke test checks there are
// none).
func PidsUsing(path string) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(b), path) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// killUnder kills every process in the cgroup subtree NAME of the pids
// hierarchy (containers whose shim is already gone) and waits for them.
func (c *Cluster) killUnder(name string) {
	root := filepath.Join(cgroupRoot(), "pids", name)
	for i := 0; i < 50; i++ {
		var pids []int
		filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() || d.Name() != "cgroup.procs" {
				return nil
			}
			b, _ := os.ReadFile(p)
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil {
					pids = append(pids, pid)
				}
			}
			return nil
		})
		if len(pids) == 0 {
			return
		}
		for _, pid := range pids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.t.Errorf("teardown: processes left in cgroup %s", root)
}

// cniNetns lists the pod network namespaces containerd made in /run/netns.
func cniNetns() map[string]bool {
	m := map[string]bool{}
	ents, _ := os.ReadDir("/run/netns")
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "cni-") {
			m[e.Name()] = true
		}
	}
	return m
}

func cgroupRoot() string { return "/sys/fs/cgroup" }

// mountsUnder lists the mount points at or below dir, deepest first.
func mountsUnder(dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var ms []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		m := unescapeMount(fields[4])
		if m == dir || strings.HasPrefix(m, dir+"/") {
			ms = append(ms, m)
		}
	}
	sort.Slice(ms, func(i, j int) bool { return len(ms[i]) > len(ms[j]) })
	return ms
}

// MountsUnder lists what is still mounted at or below dir (the smoke test
// checks a torn-down cluster left nothing).
func MountsUnder(dir string) []string { return mountsUnder(dir) }

func unescapeMount(s string) string {
	r := strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`)
	return r.Replace(s)
}

// cgroupSnapshot is which of the cgroups the kubelet and containerd make
// (kubepods, k8s.io, in every hierarchy) existed before the cluster.
type cgroupSnapshot map[string]bool

var clusterCgroups = []string{"kubepods", "k8s.io"}

// CgroupDirs lists the kubepods and k8s.io cgroup directories on the
// machine.
func CgroupDirs() []string {
	var dirs []string
	hier, _ := os.ReadDir(cgroupRoot())
	for _, h := range hier {
		for _, n := range clusterCgroups {
			d := filepath.Join(cgroupRoot(), h.Name(), n)
			if st, err := os.Stat(d); err == nil && st.IsDir() {
				dirs = append(dirs, d)
			}
		}
	}
	return dirs
}

func snapshotCgroups(t testing.TB) cgroupSnapshot {
	s := cgroupSnapshot{}
	for _, d := range CgroupDirs() {
		s[d] = true
	}
	if len(s) > 0 {
		t.Fatalf("cgroups %v exist already: another Kubernetes runs on this machine (a test cluster left over, or a real kubelet); stop it first", CgroupDirs())
	}
	return s
}

// removeNew removes the cluster cgroups that did not exist before, deepest
// directories first (a cgroup directory is removed with rmdir, and only
// once it has no children).
func (s cgroupSnapshot) removeNew(t testing.TB) {
	for _, top := range CgroupDirs() {
		if s[top] {
			continue
		}
		var dirs []string
		filepath.WalkDir(top, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
		for _, d := range dirs {
			var err error
			for i := 0; i < 50; i++ {
				if err = syscall.Rmdir(d); err == nil || err == syscall.ENOENT {
					err = nil
					break
				}
				time.Sleep(100 * time.Millisecond) // EBUSY while the last task exits
			}
			if err != nil {
				t.Errorf("remove cgroup %s: %v", d, err)
			}
		}
	}
}
