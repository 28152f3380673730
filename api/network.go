package api

// PathNetwork reports host networking as the daemon set it up at start.
const PathNetwork = "/v1/network"

// NetworkInfo is what the daemon found and did about host networking and
// .vm DNS when it started. `banger doctor` reads it; it does not change
// while the daemon runs.
type NetworkInfo struct {
	// Configured: config network = true (after BANGER_NETWORK).
	Configured bool `json:"configured"`
	// Enabled: the bridge, forwarding and firewall are set up; VMs get a
	// NIC.
	Enabled bool `json:"enabled"`
	// Reason says why not, when Enabled is false: turned off by choice,
	// or the error that stopped the set-up (which names its fix).
	Reason string `json:"reason,omitempty"`
	Bridge string `json:"bridge,omitempty"`
	// Subnet and Gateway are set once chosen, even when a later step
	// failed.
	Subnet  string `json:"subnet,omitempty"`
	Gateway string `json:"gateway,omitempty"`
	// Ops is how privileged operations run: OpsLocal (bangerd is root)
	// or OpsRootHelper (through the helper at RootHelper).
	Ops        string `json:"ops,omitempty"`
	RootHelper string `json:"rootHelper,omitempty"`
	// ForwardingWasOn: net.ipv4.ip_forward was already 1, and not by
	// bangerd; false means bangerd turned it on (in this boot).
	ForwardingWasOn bool `json:"forwardingWasOn"`
	// ForwardPolicyDrop: because bangerd turned forwarding on, it set the
	// iptables FORWARD chain's policy to DROP, so the host forwards only
	// what a rule accepts (banger's for its bridge, other tools' for
	// theirs). Forwarding that was already on keeps its policy.
	ForwardPolicyDrop bool `json:"forwardPolicyDrop"`
	// DNSAddr is where the .vm DNS server listens; empty when it could
	// not listen, and DNSError says why.
	DNSAddr  string `json:"dnsAddr,omitempty"`
	DNSError string `json:"dnsError,omitempty"`
	// DNSRouted: systemd-resolved sends the host's .vm queries to the
	// server; DNSRouteReason says why not.
	DNSRouted      bool   `json:"dnsRouted"`
	DNSRouteReason string `json:"dnsRouteReason,omitempty"`
}

// NetworkInfo.Ops values.
const (
	OpsLocal      = "local"
	OpsRootHelper = "root-helper"
)
