// Package kubecluster brings up a real single-node Kubernetes for a test:
// etcd, kube-apiserver, kube-controller-manager, kube-scheduler, containerd
// and kubelet, all inside a network namespace the test creates, with
// certificates made in Go and two images (a pause image and busybox) made
// from Debian's static busybox and imported into containerd. Everything it
// starts is stopped, unmounted and removed when the test ends, and the host
// sysctls the kubelet sets are put back. Pods reach the API through the
// kubernetes Service's address. Claims get volumes from the
// controller-manager's hostPath provisioner through a default
// StorageClass.
//
// The Kubernetes programs come from kube/cluster/build (cached per
// version); etcd, containerd, runc and the CNI plugins from Debian
// (.ci/install-deps with BANGER_CI_KUBE=1). One cluster at a time per
// machine: the kubelet's kubepods cgroups are machine-wide, so Start waits
// for a machine-wide lock that another test process's cluster may hold.
package kubecluster

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/bangervm/banger/internal/hostcmd"
	"github.com/bangervm/banger/internal/network/nettest"
	"github.com/bangervm/banger/internal/testutil"
)

// Version is the Kubernetes release the cluster runs (kube/cluster/build's
// default): the last whose kubelet runs on cgroup v1 and containerd 1.6
// without complaint, as Debian 12 machines have.
const Version = "v1.34.4"

// NodeName is the name of the cluster's only node.
const NodeName = "banger-node"

// Cluster is a running test cluster.
type Cluster struct {
	// Kubeconfig is an admin kubeconfig (system:masters) for the
	// apiserver through a forwarder on the host's loopback, valid while
	// the test runs.
	Kubeconfig string
	// Config and Client are the same admin credentials for client-go.
	Config *rest.Config
	Client kubernetes.Interface
	// NetNS is the network namespace everything runs in
	// (/run/netns/NAME).
	NetNS string
	// Dir holds the certificates, configurations, state and logs.
	Dir string
	// ContainerdSocket is the cluster's containerd; use it with
	// ctr --address SOCKET -n k8s.io to import images.
	ContainerdSocket string

	t           testing.TB
	bin         string
	procs       []*proc
	netnsBefore map[string]bool
	fwd         *forwarder
	sysctls     map[string]string
	resume      func() // continues a paused kubelet
	// containerdDir holds containerd's configuration and state.
	containerdDir string
}

// BinDir is where kube/cluster/build put the Kubernetes programs:
// BANGER_KUBE_BIN, else BANGER_KUBE_CACHE/VERSION/bin, else
// /var/cache/banger-ci/kube/VERSION/bin.
func BinDir() string {
	if d := os.Getenv("BANGER_KUBE_BIN"); d != "" {
		return d
	}
	cache := os.Getenv("BANGER_KUBE_CACHE")
	if cache == "" {
		cache = "/var/cache/banger-ci/kube"
	}
	return filepath.Join(cache, Version, "bin")
}

// The sysctls the kubelet sets on the machine at start
// (setupKernelTunables): read before, written back after.
var kubeletSysctls = []string{
	"vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
	"kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes",
}

// HostPathDir is where kube-controller-manager's hostPath provisioner
// (--enable-hostpath-provisioner, for single-node test clusters) makes a
// directory per volume: /tmp/hostpath_pv/UUID, fixed in its source
// (k8s.io/kubernetes/pkg/volume/hostpath). It removes a volume's
// directory when the volume is deleted; Start's cleanup removes those it
// made and did not delete.
const HostPathDir = "/tmp/hostpath_pv"

// StorageClass is the cluster's default StorageClass: the hostPath
// provisioner's, reclaim policy Delete.
const StorageClass = "standard"

// MachinePaths are the paths outside Dir that the cluster's programs
// create on the machine.
var MachinePaths = []string{"/run/containerd", "/var/lib/cni", "/var/lib/kubelet", HostPathDir}

// Require skips (fails under CI=true) unless everything a cluster needs is
// on the machine.
func Require(t testing.TB) {
	t.Helper()
	nettest.Require(t)
	testutil.RequireTool(t, "etcd", "etcd-server")
	testutil.RequireTool(t, "containerd", "containerd")
	testutil.RequireTool(t, "ctr", "containerd")
	testutil.RequireTool(t, "runc", "runc")
	testutil.RequireTool(t, "nsenter", "util-linux")
	if _, err := os.Stat("/usr/lib/cni/bridge"); err != nil {
		testutil.Missing(t, "CNI plugins: apt-get install containernetworking-plugins")
	}
	if _, err := os.Stat("/bin/busybox"); err != nil {
		testutil.Missing(t, "/bin/busybox: apt-get install busybox-static")
	}
	for _, p := range []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet"} {
		if _, err := os.Stat(filepath.Join(BinDir(), p)); err != nil {
			testutil.Missing(t, "%s in %s: build them with kube/cluster/build %s", p, BinDir(), Version)
		}
	}
}

// lockPath serialises clusters across test processes (go test runs
// packages in parallel, and several checkouts may test at once).
const lockPath = "/run/banger-kubecluster.lock"

// lockHeld is whether this process holds lockPath (a second flock of it
// from the same process would wait for itself).
var lockHeld atomic.Bool

// Lock waits up to 30 minutes for the machine's one cluster slot and
// holds it until the test's other cleanups (registered after this one,
// so run before it) have taken the cluster down. Start takes it; a test
// that reads machine state before its cluster starts (as the smoke test
// does, to check teardown put it back) takes it first, so that another
// process's cluster is not running meanwhile. Held already: nothing to do.
func Lock(t testing.TB) {
	t.Helper()
	if lockHeld.Load() {
		return
	}
	f, err := os.OpenFile(lockPath, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatalf("cluster lock: %v", err)
	}
	t.Cleanup(func() {
		lockHeld.Store(false)
		f.Close()
	})
	deadline := time.Now().Add(30 * time.Minute)
	for logged := false; ; {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			lockHeld.Store(true)
			return
		}
		if err != unix.EWOULDBLOCK {
			t.Fatalf("cluster lock %s: %v", lockPath, err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("cluster lock %s: another test's cluster held it for 30 minutes", lockPath)
		}
		if !logged {
			t.Logf("waiting for another test's cluster to end (lock %s)", lockPath)
			logged = true
		}
		time.Sleep(time.Second)
	}
}

// Start brings a cluster up and returns when its node is Ready and the
// default service account exists; the test's cleanup takes it down.
func Start(t testing.TB) *Cluster {
	t.Helper()
	return StartWith(t, Options{})
}

// StartWith is Start with o's changes to the cluster's settings.
func StartWith(t testing.TB, o Options) *Cluster {
	t.Helper()
	Require(t)
	Lock(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	c := &Cluster{t: t, bin: BinDir(), sysctls: map[string]string{}}
	for _, k := range kubeletSysctls {
		b, err := os.ReadFile("/proc/sys/" + k)
		if err != nil {
			t.Fatalf("read sysctl %s: %v", k, err)
		}
		c.sysctls[k] = string(b)
	}
	t.Cleanup(c.restoreSysctls)
	// Paths containerd, libcni and the kubelet use on the machine whatever
	// they are configured with (the shims' sockets and runc's state, the
	// CNI result cache, the device plugin socket): removed at the end if
	// the cluster made them.
	for _, p := range MachinePaths {
		if _, err := os.Lstat(p); os.IsNotExist(err) {
			t.Cleanup(func() {
				if err := os.RemoveAll(p); err != nil {
					t.Errorf("remove %s: %v", p, err)
				}
			})
		}
	}
	volumesBefore := hostPathVolumes()
	t.Cleanup(func() {
		for v := range hostPathVolumes() {
			if volumesBefore[v] {
				continue
			}
			if err := os.RemoveAll(filepath.Join(HostPathDir, v)); err != nil {
				t.Errorf("remove hostPath volume: %v", err)
			}
		}
	})
	cg := snapshotCgroups(t)
	c.netnsBefore = cniNetns()
	t.Cleanup(func() { cg.removeNew(t) })

	// Not t.TempDir: the sockets' paths must stay under the kernel's
	// 108-byte limit, and a long test name would pass it.
	dir, err := os.MkdirTemp("", "banger-kube-")
	if err != nil {
		t.Fatal(err)
	}
	c.Dir = dir
	t.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("remove %s: %v", dir, err)
		}
	})

	ns := nettest.NewNS(t)
	c.NetNS = "/run/netns/" + ns
	// This kernel may have no dummy links: the node's address sits on a
	// veth pair with both ends inside the namespace.
	nettest.Script(t, ns, fmt.Sprintf(`
		link add node0 type veth peer name node1
		addr add %s/24 dev node0
		link set node0 up
		link set node1 up
		route add default dev node0`, nodeIP))
	// There is no kube-proxy: the one Service Pods need, the API's
	// (what in-cluster clients such as banger's controller dial), is
	// forwarded to the apiserver here.
	nettest.Do(t, ns, func() {
		for _, chain := range []string{"PREROUTING", "OUTPUT"} {
			err := hostcmd.IPTables(context.Background(), "nat", "-A", chain, "-d", serviceIP.String()+"/32", "-p", "tcp", "--dport", "443",
				"-j", "DNAT", "--to-destination", fmt.Sprintf("%s:%d", nodeIP, apiPort))
			if err != nil {
				t.Fatalf("forward the kubernetes service: %v", err)
			}
		}
	})

	p, err := newPKI(filepath.Join(dir, "pki"))
	if err != nil {
		t.Fatal(err)
	}
	if err := clusterCerts(p, NodeName, nodeIP); err != nil {
		t.Fatal(err)
	}
	inner := fmt.Sprintf("https://%s:%d", nodeIP, apiPort)
	for _, name := range []string{"controller-manager", "scheduler", "kubelet"} {
		if err := kubeconfig(p, filepath.Join(dir, name+".kubeconfig"), inner, name); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(c.teardown)

	c.start(t, "etcd", "etcd",
		"--name=default", "--data-dir="+filepath.Join(dir, "etcd"),
		"--listen-client-urls=http://127.0.0.1:2379", "--advertise-client-urls=http://127.0.0.1:2379",
		"--listen-peer-urls=http://127.0.0.1:2380", "--initial-advertise-peer-urls=http://127.0.0.1:2380",
		"--initial-cluster=default=http://127.0.0.1:2380")
	c.start(t, "kube-apiserver", filepath.Join(c.bin, "kube-apiserver"),
		"--etcd-servers=http://127.0.0.1:2379",
		"--advertise-address="+nodeIP.String(), "--bind-address=0.0.0.0", "--secure-port="+strconv.Itoa(apiPort),
		"--cert-dir="+filepath.Join(dir, "apiserver"),
		"--client-ca-file="+p.path("ca.crt"),
		"--tls-cert-file="+p.path("apiserver.crt"), "--tls-private-key-file="+p.path("apiserver.key"),
		"--kubelet-client-certificate="+p.path("apiserver-kubelet-client.crt"),
		"--kubelet-client-key="+p.path("apiserver-kubelet-client.key"),
		"--kubelet-certificate-authority="+p.path("ca.crt"),
		"--kubelet-preferred-address-types=InternalIP",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+p.path("sa.pub"),
		"--service-account-signing-key-file="+p.path("sa.key"),
		"--service-cluster-ip-range="+serviceRange,
		"--authorization-mode=Node,RBAC",
		"--allow-privileged=true")

	// The forwarder gives the test (and a developer's kubectl, while the
	// test runs) the apiserver on the host's loopback.
	c.fwd, err = forward(c.NetNS, fmt.Sprintf("%s:%d", nodeIP, apiPort))
	if err != nil {
		t.Fatal(err)
	}
	c.Kubeconfig = filepath.Join(dir, "admin.kubeconfig")
	if err := kubeconfig(p, c.Kubeconfig, "https://"+c.fwd.Addr(), "admin"); err != nil {
		t.Fatal(err)
	}
	if c.Config, err = clientcmd.BuildConfigFromFlags("", c.Kubeconfig); err != nil {
		t.Fatal(err)
	}
	if c.Client, err = kubernetes.NewForConfig(c.Config); err != nil {
		t.Fatal(err)
	}
	c.waitHTTPS(ctx, t, "kube-apiserver", "https://"+c.fwd.Addr()+"/readyz", p)

	cm := []string{
		"--kubeconfig=" + filepath.Join(dir, "controller-manager.kubeconfig"),
		"--authentication-kubeconfig=" + filepath.Join(dir, "controller-manager.kubeconfig"),
		"--authorization-kubeconfig=" + filepath.Join(dir, "controller-manager.kubeconfig"),
		"--bind-address=127.0.0.1", "--leader-elect=false",
		"--use-service-account-credentials",
		"--enable-hostpath-provisioner",
		"--service-account-private-key-file=" + p.path("sa.key"),
		"--root-ca-file=" + p.path("ca.crt"),
		"--cluster-signing-cert-file=" + p.path("ca.crt"), "--cluster-signing-key-file=" + p.path("ca.key"),
	}
	c.start(t, "kube-controller-manager", filepath.Join(c.bin, "kube-controller-manager"), append(cm, o.controllerManagerArgs()...)...)
	c.start(t, "kube-scheduler", filepath.Join(c.bin, "kube-scheduler"),
		"--kubeconfig="+filepath.Join(dir, "scheduler.kubeconfig"),
		"--authentication-kubeconfig="+filepath.Join(dir, "scheduler.kubeconfig"),
		"--authorization-kubeconfig="+filepath.Join(dir, "scheduler.kubeconfig"),
		"--bind-address=127.0.0.1", "--leader-elect=false")

	cd := filepath.Join(dir, "containerd")
	c.containerdDir = cd
	c.ContainerdSocket = filepath.Join(cd, "containerd.sock")
	for _, d := range []string{filepath.Join(cd, "net.d"), filepath.Join(dir, "cni-ipam"), filepath.Join(dir, "pod-logs")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, filepath.Join(cd, "config.toml"), containerdConfig(cd))
	writeFile(t, filepath.Join(cd, "net.d", "10-banger-test.conflist"), cniConfig(filepath.Join(dir, "cni-ipam")))
	c.start(t, "containerd", "containerd", "--config="+filepath.Join(cd, "config.toml"))
	c.waitSocket(ctx, t, c.ContainerdSocket)

	tarPath := filepath.Join(dir, "images.tar")
	if err := writeImages(tarPath, "/bin/busybox"); err != nil {
		t.Fatal(err)
	}
	if err := c.ImportImages(ctx, tarPath); err != nil {
		t.Fatal(err)
	}

	writeFile(t, filepath.Join(dir, "kubelet.yaml"), kubeletConfig(p, dir, c.ContainerdSocket)+o.kubeletConfig())
	c.start(t, "kubelet", filepath.Join(c.bin, "kubelet"),
		"--config="+filepath.Join(dir, "kubelet.yaml"),
		"--kubeconfig="+filepath.Join(dir, "kubelet.kubeconfig"),
		"--root-dir="+filepath.Join(dir, "kubelet"),
		"--cert-dir="+filepath.Join(dir, "kubelet", "pki"),
		"--hostname-override="+NodeName, "--node-ip="+nodeIP.String())

	c.waitReady(ctx, t)
	c.defaultStorageClass(ctx, t)
	return c
}

// defaultStorageClass makes StorageClass the cluster's default, so a
// claim without a class gets a hostPath volume.
func (c *Cluster) defaultStorageClass(ctx context.Context, t testing.TB) {
	t.Helper()
	sc := &storagev1.StorageClass{
		ObjectMeta: metav1.ObjectMeta{Name: StorageClass,
			Annotations: map[string]string{"storageclass.kubernetes.io/is-default-class": "true"}},
		Provisioner: "kubernetes.io/host-path",
	}
	if _, err := c.Client.StorageV1().StorageClasses().Create(ctx, sc, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create storage class %s: %v", StorageClass, err)
	}
}

// hostPathVolumes lists the volume directories in HostPathDir.
func hostPathVolumes() map[string]bool {
	names := map[string]bool{}
	entries, _ := os.ReadDir(HostPathDir)
	for _, e := range entries {
		names[e.Name()] = true
	}
	return names
}

// ImportImages imports a docker-save or OCI tar into the cluster's
// containerd, where pods with imagePullPolicy Never or IfNotPresent find it.
func (c *Cluster) ImportImages(ctx context.Context, tarPath string) error {
	_, err := hostcmd.Run(ctx, hostcmd.Cmd{Name: "ctr", Package: "containerd",
		Args: []string{"--address", c.ContainerdSocket, "-n", "k8s.io", "images", "import", "--all-platforms", tarPath}})
	if err != nil {
		return fmt.Errorf("import %s into the test cluster: %w", tarPath, err)
	}
	return nil
}

// AllowHTTPRegistry lets the kubelet pull Pods' images from host
// (host:port, a registry a test serves on the node's address with
// Listen) over plain HTTP: containerd reads certs.d/HOST/hosts.toml at
// each pull.
func (c *Cluster) AllowHTTPRegistry(host string) error {
	dir := filepath.Join(c.containerdDir, "certs.d", host)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "hosts.toml"), fmt.Appendf(nil, "server = %[1]q\n[host.%[1]q]\n  capabilities = [\"pull\", \"resolve\"]\n", "http://"+host), 0o644)
}

func writeFile(t testing.TB, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

// proc is one program of the cluster, started inside the namespace.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

// start runs prog inside the namespace with nsenter --net (not ip netns
// exec, which remounts /sys and hides /sys/fs/cgroup from the kubelet and
// runc), its output to Dir/logs/NAME.log.
func (c *Cluster) start(t testing.TB, name, prog string, args ...string) {
	t.Helper()
	logs := filepath.Join(c.Dir, "logs")
	if err := os.MkdirAll(logs, 0o755); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(logs, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command("nsenter", append([]string{"--net=" + c.NetNS, "--", prog}, args...)...)
	cmd.Stdout, cmd.Stderr = f, f
	// A test binary that dies must not leave a cluster running.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		cmd.Wait()
		close(p.done)
	}()
	c.procs = append(c.procs, p)
}

// exited fails the test if a program of the cluster has ended.
func (c *Cluster) exited(t testing.TB) {
	t.Helper()
	for _, p := range c.procs {
		select {
		case <-p.done:
			t.Fatalf("%s exited: %v\n%s", p.name, p.cmd.ProcessState, tailFile(p.log, 3000))
		default:
		}
	}
}

func tailFile(path string, n int) string {
	b, _ := os.ReadFile(path)
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

func (c *Cluster) poll(ctx context.Context, t testing.TB, what string, ok func() error) {
	t.Helper()
	var last error
	for {
		c.exited(t)
		if last = ok(); last == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("test cluster: %s: %v (logs in %s)", what, last, filepath.Join(c.Dir, "logs"))
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (c *Cluster) waitHTTPS(ctx context.Context, t testing.TB, what, url string, p *pki) {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(p.caCert)
	cert, err := tls.LoadX509KeyPair(p.path("admin.crt"), p.path("admin.key"))
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}}}}
	c.poll(ctx, t, what+" ready", func() error {
		resp, err := hc.Get(url)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %s", url, resp.Status)
		}
		return nil
	})
	hc.CloseIdleConnections()
}

func (c *Cluster) waitSocket(ctx context.Context, t testing.TB, path string) {
	t.Helper()
	c.poll(ctx, t, "containerd listening", func() error {
		conn, err := net.Dial("unix", path)
		if err != nil {
			return err
		}
		return conn.Close()
	})
}

// waitReady waits for the node to be Ready and the default namespace's
// service account to exist (pods are refused before it does).
func (c *Cluster) waitReady(ctx context.Context, t testing.TB) {
	t.Helper()
	c.poll(ctx, t, "node Ready", func() error {
		n, err := c.Client.CoreV1().Nodes().Get(ctx, NodeName, getOpts)
		if err != nil {
			return err
		}
		for _, cond := range n.Status.Conditions {
			if cond.Type == "Ready" {
				if cond.Status == "True" {
					return nil
				}
				return fmt.Errorf("node %s: %s", cond.Reason, cond.Message)
			}
		}
		return fmt.Errorf("node has no Ready condition yet")
	})
	c.poll(ctx, t, "default service account", func() error {
		_, err := c.Client.CoreV1().ServiceAccounts("default").Get(ctx, "default", getOpts)
		return err
	})
}

func (c *Cluster) restoreSysctls() {
	for k, v := range c.sysctls {
		now, err := os.ReadFile("/proc/sys/" + k)
		if err == nil && bytes.Equal(now, []byte(v)) {
			continue
		}
		if err := os.WriteFile("/proc/sys/"+k, []byte(v), 0o644); err != nil {
			c.t.Errorf("restore sysctl %s=%s: %v", k, strings.TrimSpace(v), err)
		}
	}
}

// stop ends p: SIGTERM, then SIGKILL if it has not exited in time.
func (p *proc) stop(grace time.Duration) {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(unix.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		p.cmd.Process.Kill()
		<-p.done
	}
}

// Pids maps each program of the cluster (etcd, kube-apiserver, ...,
// containerd, kubelet) to its process id.
func (c *Cluster) Pids() map[string]int {
	m := map[string]int{}
	for _, p := range c.procs {
		m[p.name] = p.cmd.Process.Pid
	}
	return m
}
