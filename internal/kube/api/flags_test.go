package api

import (
	"maps"
	"strings"
	"testing"
)

func TestParseNodeSelector(t *testing.T) {
	for in, want := range map[string]map[string]string{
		"":                              nil,
		"banger.dev/node=yes":           {"banger.dev/node": "yes"},
		"a=1, example.com/b=x-y":        {"a": "1", "example.com/b": "x-y"},
		"kubernetes.io/hostname=node-1": {"kubernetes.io/hostname": "node-1"},
		"empty=":                        {"empty": ""},
	} {
		got, err := ParseNodeSelector(in)
		if err != nil || !maps.Equal(got, want) {
			t.Errorf("ParseNodeSelector(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"a", "a=1,", "=1", "a=1,a=2", "a b=1", "a=not valid", "a=" + strings.Repeat("x", 64), "-a=1"} {
		if got, err := ParseNodeSelector(bad); err == nil {
			t.Errorf("ParseNodeSelector(%q) = %v, want an error", bad, got)
		}
	}
}

func TestParseAccel(t *testing.T) {
	for _, ok := range []string{"kvm", "tcg"} {
		if got, err := ParseAccel(ok); err != nil || got != ok {
			t.Errorf("ParseAccel(%q) = %q, %v", ok, got, err)
		}
	}
	for _, bad := range []string{"", "KVM", "hvf", "auto"} {
		if _, err := ParseAccel(bad); err == nil {
			t.Errorf("ParseAccel(%q): no error", bad)
		}
	}
}
