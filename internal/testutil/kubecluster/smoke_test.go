//go:build kube

package kubecluster

import (
	"bytes"
	"context"
	"errors"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/remotecommand"
	utilexec "k8s.io/client-go/util/exec"
)

// The cluster runs a Pod to completion, execs into a running one through
// client-go and binds a claim of the default class to a hostPath volume,
// and once the test is over nothing of it is left: no process, mount,
// cgroup, network namespace or volume directory (the claim is left for
// teardown), and the kubelet's sysctls are back. make test-kube runs it (it needs kube/cluster/build's programs).
func TestClusterSmoke(t *testing.T) {
	// The state to compare with is the machine's with no cluster on it.
	Require(t)
	Lock(t)
	sysctls := readSysctls(t)
	netnsBefore := netnsNames(t)
	var missing []string
	for _, p := range MachinePaths {
		if _, err := os.Lstat(p); os.IsNotExist(err) {
			missing = append(missing, p)
		}
	}
	var dir, netns, volume string
	t.Run("cluster", func(t *testing.T) {
		start := time.Now()
		c := Start(t)
		dir, netns = c.Dir, c.NetNS
		t.Logf("cluster up (node Ready) in %s", time.Since(start).Round(100*time.Millisecond))
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()

		done := busyboxPod("done", "echo hello-from-pod")
		if _, err := c.Client.CoreV1().Pods("default").Create(ctx, done, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		waitPhase(ctx, t, c, "done", corev1.PodSucceeded)
		t.Logf("first pod Succeeded %s after start", time.Since(start).Round(100*time.Millisecond))
		logs, err := c.Client.CoreV1().Pods("default").GetLogs("done", &corev1.PodLogOptions{}).DoRaw(ctx)
		if err != nil || string(logs) != "hello-from-pod\n" {
			t.Errorf("logs of the completed pod: %q, %v", logs, err)
		}

		if _, err := c.Client.CoreV1().Pods("default").Create(ctx, busyboxPod("sleeper", "sleep 3600"), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		waitPhase(ctx, t, c, "sleeper", corev1.PodRunning)
		req := c.Client.CoreV1().RESTClient().Post().Resource("pods").Namespace("default").Name("sleeper").
			SubResource("exec").VersionedParams(&corev1.PodExecOptions{
			Command: []string{"sh", "-c", "cat; echo out-$((6*7)); echo err >&2; exit 3"},
			Stdin:   true, Stdout: true, Stderr: true,
		}, scheme.ParameterCodec)
		ws, err := remotecommand.NewWebSocketExecutor(c.Config, "POST", req.URL().String())
		if err != nil {
			t.Fatal(err)
		}
		spdy, err := remotecommand.NewSPDYExecutor(c.Config, "POST", req.URL())
		if err != nil {
			t.Fatal(err)
		}
		exec, err := remotecommand.NewFallbackExecutor(ws, spdy, httpstream.IsUpgradeFailure)
		if err != nil {
			t.Fatal(err)
		}
		var stdout, stderr bytes.Buffer
		err = exec.StreamWithContext(ctx, remotecommand.StreamOptions{Stdin: strings.NewReader("in\n"), Stdout: &stdout, Stderr: &stderr})
		var ee utilexec.ExitError
		if !errors.As(err, &ee) || ee.ExitStatus() != 3 {
			t.Errorf("exec: %v, want exit status 3", err)
		}
		if stdout.String() != "in\nout-42\n" || stderr.String() != "err\n" {
			t.Errorf("exec: stdout %q, stderr %q", stdout.String(), stderr.String())
		}

		claim := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: "left"},
			Spec: corev1.PersistentVolumeClaimSpec{
				AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
				Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Mi")}},
			}}
		if _, err := c.Client.CoreV1().PersistentVolumeClaims("default").Create(ctx, claim, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		for claim.Status.Phase != corev1.ClaimBound {
			if ctx.Err() != nil {
				t.Fatalf("claim not bound: %+v", claim.Status)
			}
			time.Sleep(200 * time.Millisecond)
			if claim, err = c.Client.CoreV1().PersistentVolumeClaims("default").Get(ctx, "left", metav1.GetOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		pv, err := c.Client.CoreV1().PersistentVolumes().Get(ctx, claim.Spec.VolumeName, metav1.GetOptions{})
		if err != nil || pv.Spec.HostPath == nil || *claim.Spec.StorageClassName != StorageClass {
			t.Fatalf("claim's volume %+v (%v), class %v: want a hostPath volume of class %s", pv, err, claim.Spec.StorageClassName, StorageClass)
		}
		volume = pv.Spec.HostPath.Path
		if _, err := os.Stat(volume); err != nil {
			t.Errorf("volume directory: %v", err)
		}

		var rss int
		for name, pid := range c.Pids() {
			kb := rssKB(pid)
			rss += kb
			t.Logf("%s: %d MiB resident", name, kb/1024)
		}
		t.Logf("cluster: %d MiB resident in all", rss/1024)
	})
	if dir == "" {
		return
	}
	if pids := PidsUsing(dir); len(pids) > 0 {
		t.Errorf("processes left running: %v", pids)
	}
	if ms := MountsUnder(dir); len(ms) > 0 {
		t.Errorf("mounts left: %v", ms)
	}
	if cg := CgroupDirs(); len(cg) > 0 {
		t.Errorf("cgroups left: %v", cg)
	}
	if _, err := os.Stat(netns); !os.IsNotExist(err) {
		t.Errorf("network namespace %s left: %v", netns, err)
	}
	if left := newPodNetns(netnsBefore, netnsNames(t)); len(left) > 0 {
		t.Errorf("pod network namespaces left: %v", left)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("%s left: %v", dir, err)
	}
	if _, err := os.Stat(volume); volume != "" && !os.IsNotExist(err) {
		t.Errorf("volume directory %s left: %v", volume, err)
	}
	for _, p := range missing {
		if _, err := os.Lstat(p); !os.IsNotExist(err) {
			t.Errorf("%s left on the machine: %v", p, err)
		}
	}
	if after := readSysctls(t); after != sysctls {
		t.Errorf("sysctls before:\n%s\nafter:\n%s", sysctls, after)
	}
}

func busyboxPod(name, script string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{
			RestartPolicy:                 corev1.RestartPolicyNever,
			TerminationGracePeriodSeconds: new(int64),
			Containers: []corev1.Container{{
				Name: "main", Image: BusyboxImage, ImagePullPolicy: corev1.PullNever,
				Command: []string{"sh", "-c", script},
			}},
		},
	}
}

func waitPhase(ctx context.Context, t *testing.T, c *Cluster, name string, want corev1.PodPhase) {
	t.Helper()
	c.poll(ctx, t, "pod "+name+" "+string(want), func() error {
		p, err := c.Client.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if p.Status.Phase == corev1.PodFailed {
			t.Fatalf("pod %s failed: %+v", name, p.Status)
		}
		if p.Status.Phase != want {
			return errors.New("phase " + string(p.Status.Phase) + ": " + podWhy(p))
		}
		return nil
	})
}

func podWhy(p *corev1.Pod) string {
	var why []string
	for _, s := range p.Status.ContainerStatuses {
		if s.State.Waiting != nil {
			why = append(why, s.State.Waiting.Reason+" "+s.State.Waiting.Message)
		}
	}
	for _, cond := range p.Status.Conditions {
		if cond.Status != corev1.ConditionTrue && cond.Message != "" {
			why = append(why, cond.Message)
		}
	}
	return strings.Join(why, "; ")
}

func readSysctls(t *testing.T) string {
	var b strings.Builder
	for _, k := range kubeletSysctls {
		v, err := os.ReadFile("/proc/sys/" + k)
		if err != nil {
			t.Fatal(err)
		}
		b.WriteString(k + "=" + string(v))
	}
	return b.String()
}

func netnsNames(t *testing.T) []string {
	ents, err := os.ReadDir("/run/netns")
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// newPodNetns lists containerd's pod namespaces (cni-*) in after and not
// in before (other tests on the machine make namespaces of their own).
func newPodNetns(before, after []string) []string {
	var left []string
	for _, n := range after {
		if strings.HasPrefix(n, "cni-") && !slices.Contains(before, n) {
			left = append(left, n)
		}
	}
	return left
}

func rssKB(pid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	return 0
}
