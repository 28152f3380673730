package launcher

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"

	"golang.org/x/sys/unix"

	"github.com/bangervm/banger/internal/hostcmd"
	"github.com/bangervm/banger/internal/network"
	"github.com/bangervm/banger/internal/vm"
)

// tunPath is the tun/tap device QEMU and ip tuntap open. A container
// runtime makes no /dev/net/tun, but runc's device cgroup allows c 10:200.
const tunPath = "/dev/net/tun"

// podNetwork makes the Pod's network namespace what a host is to bangerd:
// banger's bridge on a subnet that overlaps none of the Pod's networks,
// its firewall chains and the bridge guard (package network), so the VM's
// tap gets its mode's rules as on a host. On top of a host's set-up:
//   - the Pod's uplink (eth0) is closed to new connections, to the Pod
//     and to its VM alike (network.CloseUplink), before anything forwards:
//     no other Pod, hence no other Sandbox's guest, opens anything here;
//   - the guest reaches no port of its own Pod (Firewall.ServicesOnly, and
//     no service ports: the launcher serves no DNS), in either mode;
//   - forwarding is turned on for the bridge and eth0 only, over
//     rtnetlink (network.SetLinkForwarding), as /proc/sys is read-only in
//     a container; the FORWARD policy is DROP first.
//
// It needs CAP_NET_ADMIN, and CAP_MKNOD to make /dev/net/tun: what the
// controller grants a Pod whose Sandbox asks for a network.
func podNetwork(ctx context.Context, log *slog.Logger) (*vm.Network, error) {
	if err := ensureTun(); err != nil {
		return nil, err
	}
	uplink, err := defaultUplink(ctx)
	if err != nil {
		return nil, err
	}
	nets, err := network.HostNets(ctx)
	if err != nil {
		return nil, err
	}
	bridge := network.DefaultBridge
	// The bridge's own networks are no conflict: set up again, it keeps
	// its subnet.
	subnet, err := network.ChooseSubnet(network.Prefixes(nets, bridge), network.DefaultCandidates())
	if err != nil {
		return nil, err
	}
	if err := network.CloseUplink(ctx, uplink); err != nil {
		return nil, err
	}
	if err := hostcmd.SetIPTablesPolicy(ctx, "filter", "FORWARD", "DROP"); err != nil {
		return nil, fmt.Errorf("set the iptables FORWARD policy to DROP: %w", err)
	}
	if err := network.EnsureBridge(ctx, bridge, network.Gateway(subnet)); err != nil {
		return nil, err
	}
	fw := network.Firewall{Bridge: bridge, Subnet: subnet, ServicePorts: []uint16{}, ServicesOnly: true}
	if err := fw.Ensure(ctx); err != nil {
		return nil, err
	}
	for _, dev := range []string{bridge, uplink} {
		if err := network.SetLinkForwarding(dev, true); err != nil {
			return nil, err
		}
	}
	log.Info("launcher: pod networking", "bridge", bridge, "subnet", subnet.String(), "uplink", uplink)
	return &vm.Network{Bridge: bridge, Subnet: subnet, Firewall: fw, Ops: network.Local{}, OwnerUID: os.Getuid()}, nil
}

// defaultUplink is the interface of the Pod's default route.
func defaultUplink(ctx context.Context) (string, error) {
	var routes []struct {
		Dev string `json:"dev"`
	}
	if err := hostcmd.IPJSON(ctx, &routes, "-4", "route", "show", "default"); err != nil {
		return "", fmt.Errorf("the pod's default route: %w", err)
	}
	if len(routes) == 0 || routes[0].Dev == "" {
		return "", errors.New("the pod has no IPv4 default route: a VM with a network needs one")
	}
	return routes[0].Dev, nil
}

// ensureTun makes /dev/net/tun if the container has none.
func ensureTun() error {
	if _, err := os.Stat(tunPath); err == nil {
		return nil
	}
	if err := os.MkdirAll("/dev/net", 0o755); err != nil {
		return fmt.Errorf("make %s: %w", tunPath, err)
	}
	err := unix.Mknod(tunPath, unix.S_IFCHR|0o600, int(unix.Mkdev(10, 200)))
	if err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("make %s (char 10:200): %w: the launcher container needs CAP_MKNOD, which banger-controller grants a Sandbox with a network", tunPath, err)
	}
	return nil
}
