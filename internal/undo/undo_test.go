package undo

import (
	"context"
	"errors"
	"strings"
	"testing"
)

func TestRunReverseOrderAllSteps(t *testing.T) {
	var s Stack
	var order []string
	add := func(name string, err error) {
		s.Push(name, func(context.Context) error {
			order = append(order, name)
			return err
		})
	}
	add("record", nil)
	add("directory", errors.New("busy"))
	add("tap", nil)
	add("engine", errors.New("no such process"))
	if s.Len() != 4 {
		t.Fatalf("Len = %d", s.Len())
	}
	err := s.Run(context.Background())
	if got := strings.Join(order, ","); got != "engine,tap,directory,record" {
		t.Errorf("order %s, want engine,tap,directory,record (every step, last pushed first)", got)
	}
	if err == nil || !strings.Contains(err.Error(), "undo engine: no such process") || !strings.Contains(err.Error(), "undo directory: busy") {
		t.Errorf("err = %v, want both failures named", err)
	}
	if s.Len() != 0 {
		t.Error("Run left steps on the stack")
	}
	order = nil
	if err := s.Run(context.Background()); err != nil || order != nil {
		t.Errorf("second Run: %v %v, want nothing run", err, order)
	}
}

func TestReleaseKeepsEverything(t *testing.T) {
	var s Stack
	ran := false
	s.Push("disk", func(context.Context) error { ran = true; return nil })
	s.Release()
	if err := s.Run(context.Background()); err != nil || ran {
		t.Errorf("after Release: Run = %v, step ran = %v", err, ran)
	}
}
