package cli

import (
	"fmt"
	"github.com/bangervm/banger/api"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/bangervm/banger/internal/sshconf"
)

func sshDir(f *Factory) *sshconf.Dir { return &sshconf.Dir{Path: filepath.Join(f.Layout.State, "ssh")} }

func newSSHConfigCmd(f *Factory) *cobra.Command {
	var install, uninstall bool
	cmd := &cobra.Command{
		Use:   "ssh-config [--install | --uninstall]",
		Short: "Write banger's ssh_config so plain ssh, scp and sftp reach <vm>.vm",
		Long: `Write banger's own ssh_config (Host *.vm as root, with banger's key and its
pinned known_hosts, connecting through banger so no resolver set-up is
needed) and print its path. With --install, add one marker-fenced Include
line at the top of ~/.ssh/config so that plain "ssh web.vm" works;
--uninstall removes exactly that block. Nothing else in your files changes.`,
		Example: `  banger ssh-config && ssh -F "$(banger ssh-config)" web.vm
  banger ssh-config --install && ssh web.vm && scp f web.vm:/tmp/`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if install && uninstall {
				return flagErrorf("ssh-config: --install and --uninstall do not go together")
			}
			user, err := userSSHConfig()
			if err != nil {
				return err
			}
			if uninstall {
				changed, err := sshconf.Uninstall(user)
				if err != nil {
					return err
				}
				if changed {
					fmt.Fprintf(f.IO.ErrOut, "removed banger's Include from %s\n", user)
				}
				return nil
			}
			d := sshDir(f)
			if install {
				if err := installSSHInclude(f, user); err != nil {
					return err
				}
			} else if err := writeSSHConfig(d); err != nil {
				return err
			}
			fmt.Fprintln(f.IO.Out, d.Config())
			return nil
		},
	}
	cmd.Flags().BoolVar(&install, "install", false, "add one fenced Include line to ~/.ssh/config")
	cmd.Flags().BoolVar(&uninstall, "uninstall", false, "remove banger's block from ~/.ssh/config")
	return cmd
}

// userSSHConfig is the user's ~/.ssh/config.
func userSSHConfig() (string, error) {
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("find ~/.ssh/config: %w", err)
	}
	return filepath.Join(home, ".ssh", "config"), nil
}

// writeSSHConfig writes banger's ssh_config, whose ProxyCommand is this
// very binary.
func writeSSHConfig(d *sshconf.Dir) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	proxy := self + " ssh-proxy"
	if h := os.Getenv("BANGER_HOME"); h != "" {
		// The proxy must find the same installation.
		proxy = "env BANGER_HOME=" + h + " " + proxy
	}
	return d.WriteConfig(proxy)
}

// installSSHInclude is ssh-config --install (and doctor --fix): banger's
// ssh_config written, and one fenced Include of it in user.
func installSSHInclude(f *Factory, user string) error {
	d := sshDir(f)
	if err := writeSSHConfig(d); err != nil {
		return err
	}
	changed, err := sshconf.Install(user, d.Config())
	if err != nil {
		return err
	}
	if changed {
		fmt.Fprintf(f.IO.ErrOut, "added an Include of banger's config to %s (remove with --uninstall)\n", user)
	}
	return nil
}

// newSSHProxyCmd is the ProxyCommand of banger's ssh_config: it connects
// stdin and stdout to port PORT of the VM named HOST (name.vm).
func newSSHProxyCmd(f *Factory) *cobra.Command {
	return &cobra.Command{
		Use:    "ssh-proxy HOST PORT",
		Hidden: true,
		Args:   exactArgs(2, "a host and a port"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := f.Client(cmd.Context())
			if err != nil {
				return err
			}
			name := strings.TrimSuffix(strings.TrimSuffix(args[0], "."), ".vm")
			v, err := c.VM(cmd.Context(), name)
			if err != nil {
				return err
			}
			if v.State != api.VMRunning {
				return fmt.Errorf("vm %s is %s, not running: start it (banger vm start %s)", v.Name, v.State, v.Name)
			}
			if v.IP == "" {
				return fmt.Errorf("vm %s has no network address (net %s): ssh needs --net public or full; banger vm ssh %s works without", v.Name, v.Net, v.Name)
			}
			var d net.Dialer
			conn, err := d.DialContext(cmd.Context(), "tcp", net.JoinHostPort(v.IP, args[1]))
			if err != nil {
				return err
			}
			defer conn.Close()
			go func() {
				io.Copy(conn, f.IO.In)
				conn.(*net.TCPConn).CloseWrite()
			}()
			// Done when the VM's side closes, even if ssh's side did first.
			_, err = io.Copy(f.IO.Out, conn)
			return err
		},
	}
}
