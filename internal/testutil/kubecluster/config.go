package kubecluster

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
)

var (
	// serviceIP is the first address of the service range: the
	// "kubernetes" Service, named in the apiserver's certificate.
	serviceIP = net.IPv4(10, 96, 0, 1)
	// nodeIP is the node's address, on a veth pair inside the namespace.
	nodeIP = net.IPv4(10, 201, 0, 1)
)

const (
	serviceRange = "10.96.0.0/24"
	podRange     = "10.244.0.0/24"
	apiPort      = 6443
)

// kubeconfig writes a kubeconfig for server that authenticates with the
// client certificate NAME.crt/NAME.key of p.
func kubeconfig(p *pki, path, server, name string) error {
	s := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: banger-test
  cluster:
    server: %s
    certificate-authority: %s
users:
- name: %s
  user:
    client-certificate: %s
    client-key: %s
contexts:
- name: banger-test
  context: {cluster: banger-test, user: %s}
current-context: banger-test
`, server, p.path("ca.crt"), name, p.path(name+".crt"), p.path(name+".key"), name)
	return os.WriteFile(path, []byte(s), 0o600)
}

// containerdConfig is containerd's configuration: every path under dir
// (its own root, state, socket and plugin directories, so the machine's
// containerd, if any, is untouched), runc with cgroupfs, CNI from Debian's
// plugins.
func containerdConfig(dir string) string {
	return fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
[grpc]
  address = %[3]q
[ttrpc]
  address = %[4]q
[plugins."io.containerd.internal.v1.opt"]
  path = %[5]q
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %[6]q
  # Root here may lack CAP_SYS_RESOURCE (a container, a user namespace):
  # without this every pod sandbox fails with "can't get final child's
  # PID from pipe: EOF" when runc lowers the OOM score below its own.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = %[7]q
  # Read at each pull: AllowHTTPRegistry adds a host.
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = %[8]q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), filepath.Join(dir, "containerd.sock"),
		filepath.Join(dir, "ttrpc.sock"), filepath.Join(dir, "opt"), PauseImage, filepath.Join(dir, "net.d"), filepath.Join(dir, "certs.d"))
}

// cniConfig is the pod network: a bridge in the namespace with host-local
// addresses, whose allocations are kept under ipamDir instead of the
// machine's /var/lib/cni.
func cniConfig(ipamDir string) string {
	return fmt.Sprintf(`{
  "cniVersion": "0.4.0",
  "name": "banger-test",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": %q}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": %q
      }
    }
  ]
}
`, podRange, ipamDir)
}

// kubeletConfig is the kubelet's configuration file. Paths the kubelet
// would otherwise put on the machine (pod logs) are under dir.
func kubeletConfig(p *pki, dir, socket string) string {
	return strings.TrimLeft(fmt.Sprintf(`
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: %[1]s
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: %[2]s}
authorization: {mode: Webhook}
tlsCertFile: %[3]s
tlsPrivateKeyFile: %[4]s
cgroupDriver: cgroupfs
# This machine has cgroup v1; v1.34's kubelet still runs there when told.
failCgroupV1: false
containerRuntimeEndpoint: unix://%[5]s
failSwapOn: false
clusterDomain: cluster.local
podLogsDir: %[6]s
# Test machines' disks are often fuller than a production node's: evict
# nothing and collect no image the test imported.
evictionHard: {memory.available: "50Mi", nodefs.available: "1%%", imagefs.available: "1%%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
`, nodeIP, p.path("ca.crt"), p.path("kubelet-serving.crt"), p.path("kubelet-serving.key"), socket, filepath.Join(dir, "pod-logs")), "\n")
}
