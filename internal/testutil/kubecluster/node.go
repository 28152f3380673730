package kubecluster

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Options change a cluster's settings from Start's; the zero value
// changes nothing.
type Options struct {
	// NodeMonitorGracePeriod is how long kube-controller-manager lets
	// the node go unheard before marking it NotReady (Ready Unknown),
	// tainting it unreachable and its Pods not ready: Kubernetes'
	// default is 50 s. When set, the node is looked at every second and
	// the kubelet renews its lease and posts its status often enough to
	// miss a few beats within it.
	NodeMonitorGracePeriod time.Duration
}

func (o Options) controllerManagerArgs() []string {
	if o.NodeMonitorGracePeriod == 0 {
		return nil
	}
	return []string{"--node-monitor-grace-period=" + o.NodeMonitorGracePeriod.String(), "--node-monitor-period=1s"}
}

// kubeletConfig is added to the kubelet's configuration file: the lease
// renewed every fifth of the grace period (a quarter of its duration),
// the status posted every third.
func (o Options) kubeletConfig() string {
	g := o.NodeMonitorGracePeriod
	if g == 0 {
		return ""
	}
	lease := max(int((g * 4 / 5).Seconds()), 1)
	return fmt.Sprintf("nodeLeaseDurationSeconds: %d\nnodeStatusUpdateFrequency: %s\n", lease, max(g/3, time.Second))
}

// PauseKubelet stops the kubelet with SIGSTOP, as a node cut off from
// the control plane: its Pods' processes run on, nothing reports them.
// ResumeKubelet, or the test's end, continues it.
func (c *Cluster) PauseKubelet(t testing.TB) {
	t.Helper()
	c.signalKubelet(t, unix.SIGSTOP)
	var once sync.Once
	c.resume = func() { once.Do(func() { c.signalKubelet(t, unix.SIGCONT) }) }
	t.Cleanup(c.resume)
}

// ResumeKubelet continues the kubelet PauseKubelet stopped.
func (c *Cluster) ResumeKubelet(t testing.TB) {
	t.Helper()
	if c.resume == nil {
		t.Fatal("ResumeKubelet without PauseKubelet")
	}
	c.resume()
}

func (c *Cluster) signalKubelet(t testing.TB, sig unix.Signal) {
	t.Helper()
	for _, p := range c.procs {
		if p.name == "kubelet" {
			if err := p.cmd.Process.Signal(sig); err != nil {
				t.Errorf("signal the kubelet %v: %v", sig, err)
			}
			return
		}
	}
	t.Fatal("the cluster runs no kubelet")
}
