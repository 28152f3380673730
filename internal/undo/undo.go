// Package undo is a stack of cleanup steps for an operation that makes
// several things in turn (a VM's record, directory, tap, engine process):
// each step registers how to remove what it made, and on failure the
// stack removes everything in reverse order, so rollback is written once,
// next to what it undoes.
package undo

import (
	"context"
	"errors"
	"fmt"
)

// Stack holds cleanup steps. The zero value is an empty stack. It is not
// safe for concurrent use: one operation owns it.
type Stack struct {
	steps []step
}

type step struct {
	what string
	fn   func(ctx context.Context) error
}

// Push registers fn as the way to remove what; it runs before every step
// pushed earlier.
func (s *Stack) Push(what string, fn func(ctx context.Context) error) {
	s.steps = append(s.steps, step{what, fn})
}

// Len is the number of steps pushed and not yet run or released.
func (s *Stack) Len() int { return len(s.steps) }

// Run runs every step, last pushed first, and empties the stack. A failing
// step does not stop the others; their errors come back joined, each
// naming what it was removing. Run is given a context that outlives the
// failed operation's (context.WithoutCancel): cleanup must happen even
// when the caller gave up.
func (s *Stack) Run(ctx context.Context) error {
	var errs []error
	for i := len(s.steps) - 1; i >= 0; i-- {
		st := s.steps[i]
		if err := st.fn(ctx); err != nil {
			errs = append(errs, fmt.Errorf("undo %s: %w", st.what, err))
		}
	}
	s.steps = nil
	return errors.Join(errs...)
}

// Release forgets every step without running it: the operation succeeded
// and what it made stays.
func (s *Stack) Release() { s.steps = nil }
