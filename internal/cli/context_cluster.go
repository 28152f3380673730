package cli

import (
	"context"

	"github.com/go-logr/logr"
	"k8s.io/klog/v2"

	"github.com/bangervm/banger/client"
	"github.com/bangervm/banger/internal/contexts"
	"github.com/bangervm/banger/internal/kube/remote"
)

// remoteClient is the client of cluster context cur: banger's API served
// in this process on top of the cluster (package remote), with the
// user's kubeconfig.
func remoteClient(ctx context.Context, cur contexts.Context) (*client.Client, error) {
	// client-go reports what it cannot return (a stdin copy cut short
	// when an exec ends) through klog on stderr; the CLI prints only its
	// own messages.
	klog.SetLogger(logr.Discard())
	cfg, err := contexts.RESTConfig(cur)
	if err != nil {
		return nil, err
	}
	h, err := remote.New(remote.Config{REST: cfg, Namespace: cur.Namespace, Context: cur.Name, DefaultImage: cur.Image})
	if err != nil {
		return nil, err
	}
	// The server lives as long as the command.
	dial, _ := remote.InProcess(h)
	return client.NewWithDial("cluster context "+cur.Name, dial), nil
}
