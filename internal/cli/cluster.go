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
resource (CRD), the controller's service account and role, and the
controller itself, which runs each Sandbox in a launcher Pod of its own on a
disk of its own (a PersistentVolumeClaim). These are the manifests of
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
		Use:   "install [--kubeconfig PATH] [--namespace NS] [--controller-image REF] [--launcher-image REF]",
		Short: "Install or upgrade banger's controller on a cluster",
		Long: `Apply the Sandbox CRD, the controller's RBAC (namespace, service account,
cluster role and binding) and its Deployment with server-side apply, then
wait until the controller is Available. Prints each object and whether it
was created, configured or unchanged; installing again updates in place.

The images default to the manifests' banger.dev/controller:dev and
banger.dev/launcher:dev, which your nodes must already have; name images in
a registry they pull from with --controller-image and --launcher-image.
Sandbox disks need a StorageClass: the cluster's default, or the one a
Sandbox names.`,
		Example: `  banger cluster install --kubeconfig ~/.kube/config
  banger cluster install --namespace banger --controller-image registry.example/banger-controller:v1 --launcher-image registry.example/banger-launcher:v1`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runClusterInstall(cmd.Context(), f, opts)
		},
	}
	clusterFlags(cmd, &opts)
	cmd.Flags().StringVar(&opts.Namespace, "namespace", install.DefaultNamespace, "namespace of the controller")
	cmd.Flags().StringVar(&opts.ControllerImage, "controller-image", "", "image of the controller (default: the manifest's)")
	cmd.Flags().StringVar(&opts.LauncherImage, "launcher-image", "", "image of each Sandbox's launcher Pod (default: the manifest's)")
	return cmd
}

func newClusterUninstallCmd(f *Factory) *cobra.Command {
	var opts clusterOptions
	cmd := &cobra.Command{
		Use:   "uninstall [--kubeconfig PATH] [--force]",
		Short: "Remove banger's controller, CRD and RBAC from a cluster",
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
