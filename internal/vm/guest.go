package vm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/agentproto"
	"github.com/bangervm/banger/internal/guestdata"
)

// guestTimeout bounds every read of guest data (a file, the stats): a
// guest that stalls its answer costs its own caller this long, never
// anyone else.
const guestTimeout = 10 * time.Second

// readGuest reads the guest file at path through the agent and parses it
// with parse (a guestdata parser, which bounds what it reads), within
// guestTimeout. A missing file is ErrNotFound.
func readGuest[T any](ctx context.Context, c *agentproto.Client, path string, parse func(io.Reader) (T, error)) (T, error) {
	var zero T
	ctx, cancel := context.WithTimeout(ctx, guestTimeout)
	defer cancel()
	rc, _, err := c.ReadFile(ctx, path)
	if err != nil {
		return zero, guestErr(ctx, path, err)
	}
	defer rc.Close()
	v, err := parse(rc)
	if err != nil {
		return zero, guestErr(ctx, path, err)
	}
	return v, nil
}

// guestStats asks the agent for the guest's stats within guestTimeout and
// checks the answer.
func guestStats(ctx context.Context, c *agentproto.Client) (agentproto.Stats, error) {
	ctx, cancel := context.WithTimeout(ctx, guestTimeout)
	defer cancel()
	s, err := c.Stats(ctx)
	if err == nil {
		err = guestdata.CheckStats(s)
	}
	if err != nil {
		return agentproto.Stats{}, guestErr(ctx, "stats", err)
	}
	return s, nil
}

// guestErr names what was read and, when the guest is to blame, says so
// with a class the CLI can show: too slow or too much is Unavailable.
func guestErr(ctx context.Context, what string, err error) error {
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return fmt.Errorf("read %s from the guest: no answer within %v (the guest is stalled or overloaded): %w", what, guestTimeout, errdefs.ErrUnavailable)
	case errors.Is(err, guestdata.ErrTooLarge):
		return fmt.Errorf("read %s from the guest: %w: %w", what, err, errdefs.ErrUnavailable)
	}
	return fmt.Errorf("read %s from the guest: %w", what, err)
}
