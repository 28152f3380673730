package image

import (
	"context"
	"sync"

	"github.com/bangervm/banger/api"
)

// flights coalesces concurrent calls for the same key into one execution.
// Unlike singleflight, the shared work runs on its own context, which is
// cancelled only when every caller waiting for it has gone away, and its
// progress events reach every waiter.
type flights[T any] struct {
	mu sync.Mutex
	m  map[string]*flight[T]
	wg sync.WaitGroup // running flights, so shutdown can wait for their cleanup
}

// wait blocks until every flight has returned.
func (f *flights[T]) wait() { f.wg.Wait() }

type flight[T any] struct {
	done    chan struct{}
	res     T
	err     error
	cancel  context.CancelFunc
	waiters map[int]func(api.Event)
	nextID  int
}

// do runs fn once for key among concurrent callers and returns its result
// to each. The bool reports whether this caller joined a flight already
// under way.
func (f *flights[T]) do(ctx context.Context, key string, progress func(api.Event), fn func(ctx context.Context, progress func(api.Event)) (T, error)) (T, bool, error) {
	f.mu.Lock()
	if f.m == nil {
		f.m = map[string]*flight[T]{}
	}
	fl, joined := f.m[key]
	if !joined {
		// The flight's context keeps the caller's values but not its
		// cancellation: that is decided by the last waiter leaving.
		fctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		fl = &flight[T]{done: make(chan struct{}), cancel: cancel, waiters: map[int]func(api.Event){}}
		f.m[key] = fl
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			res, err := fn(fctx, fl.broadcast(&f.mu))
			f.mu.Lock()
			fl.res, fl.err = res, err
			delete(f.m, key)
			f.mu.Unlock()
			cancel()
			close(fl.done)
		}()
	}
	id := fl.nextID
	fl.nextID++
	if progress == nil {
		progress = func(api.Event) {}
	}
	fl.waiters[id] = progress
	f.mu.Unlock()

	select {
	case <-fl.done:
		return fl.res, joined, fl.err
	case <-ctx.Done():
		f.mu.Lock()
		delete(fl.waiters, id)
		if len(fl.waiters) == 0 {
			fl.cancel()
		}
		f.mu.Unlock()
		var zero T
		return zero, joined, ctx.Err()
	}
}

func (fl *flight[T]) broadcast(mu *sync.Mutex) func(api.Event) {
	return func(ev api.Event) {
		mu.Lock()
		ws := make([]func(api.Event), 0, len(fl.waiters))
		for _, w := range fl.waiters {
			ws = append(ws, w)
		}
		mu.Unlock()
		for _, w := range ws {
			w(ev)
		}
	}
}
