package daemon

import (
	"context"
	"errors"
	"log/slog"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/internal/config"
	"github.com/bangervm/banger/internal/engine"
)

type fcResult struct {
	engine engine.Engine
	status api.EngineStatus
}

// firecrackerEngine finds Firecracker; until its engine lands it reports
// it unavailable.
func firecrackerEngine(ctx context.Context, s config.Config, log *slog.Logger, h *engine.Host) fcResult {
	h.FirecrackerErr = errors.New("the Firecracker engine is not in this build")
	return fcResult{status: api.EngineStatus{Name: engine.Firecracker, Note: h.FirecrackerErr.Error()}}
}
