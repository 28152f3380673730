package cli

import (
	"context"
	"fmt"

	"github.com/bangervm/banger/client"
	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/contexts"
)

// clusterClient is the client of cluster context cur.
func clusterClient(ctx context.Context, cur contexts.Context) (*client.Client, error) {
	return nil, fmt.Errorf("context %s is a cluster, and this banger cannot talk to clusters yet: %w", cur.Name, errdefs.ErrUnavailable)
}
