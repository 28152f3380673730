// Command banger-controller runs each banger Sandbox (banger.dev/v1alpha1)
// of a Kubernetes cluster in its own launcher Pod. See internal/kube/controller
// and deploy/kubernetes.
package main

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/bangervm/banger/internal/kube/api"
	"github.com/bangervm/banger/internal/kube/controller"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "banger-controller:", err)
		os.Exit(1)
	}
}

func run() error {
	image := flag.String("launcher-image", "", "image of the launcher Pods (required)")
	namespaces := flag.String("namespaces", "", "comma-separated namespaces to serve (default: all)")
	metrics := flag.String("metrics-addr", "0", `metrics listen address ("0": off)`)
	health := flag.String("health-addr", "0", `listen address of /healthz and /readyz ("0": off); ready once the caches synced`)
	accel := flag.String("accel", controller.DefaultAccel, "accelerator of Sandboxes that name none: kvm (their Pods request banger.dev/kvm) or tcg (software emulation)")
	nodeSelector := flag.String("node-selector", "", "k=v[,k=v]: launcher Pods run only on nodes with these labels (default: any node)")
	flag.Parse()
	if *image == "" {
		return fmt.Errorf("--launcher-image is required")
	}
	l := controller.DefaultLauncher(*image)
	var err error
	if l.Accel, err = api.ParseAccel(*accel); err != nil {
		return fmt.Errorf("--accel: %w", err)
	}
	if l.NodeSelector, err = api.ParseNodeSelector(*nodeSelector); err != nil {
		return fmt.Errorf("--node-selector: %w", err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctrl.SetLogger(logr.FromSlogHandler(log.Handler()))

	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return err
	}
	if err := api.AddToScheme(scheme); err != nil {
		return err
	}
	cfg, err := ctrl.GetConfig() // --kubeconfig, $KUBECONFIG, or in-cluster
	if err != nil {
		return fmt.Errorf("kubernetes config: %w", err)
	}
	var ns []string
	if *namespaces != "" {
		ns = strings.Split(*namespaces, ",")
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 scheme,
		Cache:                  controller.CacheOptions(ns...),
		Metrics:                metricsserver.Options{BindAddress: *metrics},
		HealthProbeBindAddress: *health,
	})
	if err != nil {
		return fmt.Errorf("controller manager: %w", err)
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return err
	}
	// Ready once the caches synced: the service account could list and
	// watch what it serves.
	if err := mgr.AddReadyzCheck("caches", func(req *http.Request) error {
		if !mgr.GetCache().WaitForCacheSync(req.Context()) {
			return errors.New("caches not synced")
		}
		return nil
	}); err != nil {
		return err
	}
	if err := (&controller.Reconciler{Launcher: l}).Setup(mgr); err != nil {
		return err
	}
	return mgr.Start(ctrl.SetupSignalHandler())
}
