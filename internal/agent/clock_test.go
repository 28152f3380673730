package agent

import (
	"context"
	"testing"
	"time"

	"github.com/bangervm/banger/errdefs"
)

// TestHandlerSetClock: the handler sets the clock through its SetClock,
// refuses without one and refuses a time no working host clock shows.
func TestHandlerSetClock(t *testing.T) {
	ctx := context.Background()
	var got time.Time
	h := NewHandler(HandlerConfig{SetClock: func(t time.Time) error { got = t; return nil }})
	now := time.Now()
	if err := h.SetClock(ctx, now); err != nil || !got.Equal(now) {
		t.Errorf("SetClock = %v, set %v; want %v", err, got, now)
	}
	for _, bad := range []time.Time{time.Unix(0, 0), time.Date(2999, 1, 1, 0, 0, 0, 0, time.UTC)} {
		if err := h.SetClock(ctx, bad); !errdefs.IsInvalidArgument(err) {
			t.Errorf("SetClock(%v) = %v; want InvalidArgument", bad, err)
		}
	}
	if err := NewHandler(HandlerConfig{}).SetClock(ctx, now); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("SetClock without a clock = %v; want FailedPrecondition", err)
	}
}
