package agentproto

// DefaultSSHPort is the guest port of the agent's SSH server when
// SSHConfig.Port is zero.
const DefaultSSHPort = 22

// SSHConfig asks the agent to serve SSH in the guest: root may log in with
// one of AuthorizedKeys, and the server presents HostKey. An image that
// runs its own init and has /usr/sbin/sshd keeps that sshd; the agent then
// serves none and installs HostKey (as /etc/ssh/ssh_host_ed25519_key) and
// AuthorizedKeys (in root's ~/.ssh/authorized_keys) in the VM's root for
// it, before the image's init starts.
type SSHConfig struct {
	// Port is the guest TCP port; zero means DefaultSSHPort.
	Port int `json:"port,omitempty"`
	// HostKey is the server's private host key, PEM ("OPENSSH PRIVATE
	// KEY", ed25519), generated per VM by the host so that it can pin the
	// public half.
	HostKey string `json:"hostKey"`
	// AuthorizedKeys are authorized_keys lines (an entry may hold several
	// lines, and comments); key options are refused.
	AuthorizedKeys []string `json:"authorizedKeys"`
}
