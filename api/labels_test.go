package api

import (
	"strings"
	"testing"

	"github.com/bangervm/banger/errdefs"
)

func TestParseLabels(t *testing.T) {
	good := [][]string{
		{"owner=agent-7"},
		{"banger.mcp=3f2a", "team=x"},
		{"example.com/role=build", "empty="},
		{"a=" + strings.Repeat("v", 63)},
	}
	for _, args := range good {
		if _, err := ParseLabels(args); err != nil {
			t.Errorf("ParseLabels(%q): %v", args, err)
		}
	}
	bad := [][]string{
		{"noequals"},
		{"=v"},
		{"-k=v"},
		{"k-=v"},
		{"k=v v"},
		{"k=-v"},
		{"k=" + strings.Repeat("v", 64)},
		{strings.Repeat("k", 64) + "=v"},
		{"Upper.Case/k=v"},
		{"/k=v"},
		{"a/b/c=v"},
		{"k=1", "k=2"},
		{"k=v\n"},
	}
	for _, args := range bad {
		if _, err := ParseLabels(args); !errdefs.IsInvalidArgument(err) {
			t.Errorf("ParseLabels(%q) = %v, want an invalid-argument error", args, err)
		}
	}
	many := map[string]string{}
	for i := 0; i <= MaxLabels; i++ {
		many[strings.Repeat("k", i+1)] = "v"
	}
	if err := ValidateLabels(many); !errdefs.IsInvalidArgument(err) {
		t.Errorf("%d labels accepted", len(many))
	}
}

func TestMatchLabels(t *testing.T) {
	have := map[string]string{"a": "1", "b": "2"}
	for _, tc := range []struct {
		want map[string]string
		ok   bool
	}{
		{nil, true},
		{map[string]string{"a": "1"}, true},
		{map[string]string{"a": "1", "b": "2"}, true},
		{map[string]string{"a": "1", "b": "3"}, false},
		{map[string]string{"c": ""}, false},
	} {
		if got := MatchLabels(have, tc.want); got != tc.ok {
			t.Errorf("MatchLabels(%v) = %v", tc.want, got)
		}
	}
}
