package cli

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/bangervm/banger/internal/kube/install"
)

func newClusterCmd(f *Factory) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cluster",
		Short: "Install banger's controller on a Kubernetes cluster, or remove it",
		Long: `banger cluster install puts banger on a Kubernetes cluster: the Sandbox
resource (CRD), the controller's service account and role, the controller
itself, which runs each Sandbox in a launcher Pod of its own on a disk of
its own (a PersistentVolumeClaim), and the node agent (banger-node), which
offers /dev/kvm to those Pods as the resource banger.dev/kvm. These are the manifests of
deploy/kubernetes, built into banger; kubectl apply -k deploy/kubernetes
applies the same. Then add the cluster as a context (banger context add) to
run VMs there.`,
	}
	cmd.AddCommand(newClusterInstallCmd(f), newClusterUninstallCmd(f))
	return cmd
}

// clusterOptions are the flags of cluster install and uninstall.
type clusterOptions struct {
	Kubeconfig  string
	KubeContext string
	install.Options
	Force   bool
	Timeout time.Duration
}

func clusterFlags(cmd *cobra.Command, opts *clusterOptions) {
	cmd.Flags().StringVar(&opts.Kubeconfig, "kubeconfig", "", "kubeconfig of the cluster (default: $KUBECONFIG, else ~/.kube/config)")
	cmd.Flags().StringVar(&opts.KubeContext, "kube-context", "", "context of the kubeconfig to use (default: its current context)")
	cmd.Flags().DurationVar(&opts.Timeout, "timeout", 5*time.Minute, "how long to wait for the cluster")
}

func newClusterInstallCmd(f *Factory) *cobra.Command {
	var opts clusterOptions
	cmd := &cobra.Command{
		Use:   "install [--kubeconfig PATH] [--namespace NS] [--controller-image REF] [--launcher-image REF] [--node-image REF] [--accel kvm|tcg] [--node-selector k=v[,k=v]]",
		Short: "Install or upgrade banger's controller on a cluster",
		Long: `Apply the Sandbox CRD, the controller's RBAC (namespace, service account,
cluster role and binding), its Deployment and the node agent's DaemonSet
with server-side apply, then wait until the controller is Available and the
node agent ready on its nodes. Prints each object and whether it was
created, configured or unchanged; installing again updates in place.

The images default to the manifests' banger.dev/controller:dev,
banger.dev/launcher:dev and banger.dev/node:dev, which your nodes must
already have; name images in a registry they pull from with
--controller-image, --launcher-image and --node-image. Sandbox disks need a
StorageClass: the cluster's default, or the one a Sandbox names.

--accel is what Sandboxes that name no accelerator get: kvm (the default)
runs them only on nodes where banger-node offers banger.dev/kvm (nodes with
/dev/kvm), and never falls back to emulation; tcg runs them anywhere, in
software, many times slower. --node-selector keeps launcher Pods and the
node agent on the nodes it matches; to dedicate nodes to banger, label them
to match and taint them banger.dev/sandbox=:NoSchedule (banger's Pods
tolerate that taint, others do not).`,
		Example: `  banger cluster install --kubeconfig ~/.kube/config
  banger cluster install --namespace banger --controller-image registry.example/banger-controller:v1 --launcher-image registry.example/banger-launcher:v1 --node-image registry.example/banger-node:v1
  kubectl label node n1 banger.dev/node=yes && kubectl taint node n1 banger.dev/sandbox=:NoSchedule
  banger cluster install --node-selector banger.dev/node=yes
  banger cluster install --accel tcg     # no KVM on the nodes: software emulation`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runClusterInstall(cmd.Context(), f, opts)
		},
	}
	clusterFlags(cmd, &opts)
	cmd.Flags().StringVar(&opts.Namespace, "namespace", install.DefaultNamespace, "namespace of the controller")
	cmd.Flags().StringVar(&opts.ControllerImage, "controller-image", "", "image of the controller (default: the manifest's)")
	cmd.Flags().StringVar(&opts.LauncherImage, "launcher-image", "", "image of each Sandbox's launcher Pod (default: the manifest's)")
	cmd.Flags().StringVar(&opts.NodeImage, "node-image", "", "image of the node agent, banger-node (default: the manifest's)")
	cmd.Flags().StringVar(&opts.Accel, "accel", "", "accelerator of Sandboxes that name none: kvm or tcg (default: the manifest's, kvm)")
	cmd.Flags().StringVar(&opts.NodeSelector, "node-selector", "", "k=v[,k=v]: run launcher Pods and the node agent only on nodes with these labels (default: any node)")
	return cmd
}

func newClusterUninstallCmd(f *Factory) *cobra.Command {
	var opts clusterOptions
	cmd := &cobra.Command{
		Use:   "uninstall [--kubeconfig PATH] [--force]",
		Short: "Remove banger's controller, node agent, CRD and RBAC from a cluster",
		Long: `Delete what banger cluster install applied and wait until it is gone.
Refuses while Sandboxes exist, naming them, unless --force: that deletes
every Sandbox first, and waits until their Pods (whose launchers stop the
VMs) and disks are gone. The namespace is kept when something other than
banger made or changed it.`,
		Example: `  banger cluster uninstall --kubeconfig ~/.kube/config
  banger cluster uninstall --force`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runClusterUninstall(cmd.Context(), f, opts)
		},
	}
	clusterFlags(cmd, &opts)
	cmd.Flags().StringVar(&opts.Namespace, "namespace", "", "namespace of the controller (default: the one it was installed into)")
	cmd.Flags().BoolVar(&opts.Force, "force", false, "delete every Sandbox and its disk instead of refusing")
	return cmd
}

func clusterClient(f *Factory, opts clusterOptions) (*install.Client, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if opts.Kubeconfig != "" {
		rules = &clientcmd.ClientConfigLoadingRules{ExplicitPath: opts.Kubeconfig}
	}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: opts.KubeContext}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	cfg = rest.CopyConfig(cfg)
	cfg.UserAgent = "banger"
	return install.New(cfg, f.IO.Out)
}

func runClusterInstall(ctx context.Context, f *Factory, opts clusterOptions) error {
	c, err := clusterClient(f, opts)
	if err != nil {
		return err
	}
	return c.Install(ctx, opts.Options, opts.Timeout)
}

func runClusterUninstall(ctx context.Context, f *Factory, opts clusterOptions) error {
	c, err := clusterClient(f, opts)
	if err != nil {
		return err
	}
	return c.Uninstall(ctx, opts.Options, opts.Force, opts.Timeout)
}
