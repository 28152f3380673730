package hostcmd

import (
	"slices"
	"testing"
)

func TestSplitIPTablesLine(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
		bad  bool
	}{
		{in: "", want: nil},
		{in: "-N BANGER-INPUT", want: []string{"-N", "BANGER-INPUT"}},
		{in: `-A X -s 1.2.3.4/32 -m comment --comment "banger:vm=a" -j ACCEPT`, want: []string{"-A", "X", "-s", "1.2.3.4/32", "-m", "comment", "--comment", "banger:vm=a", "-j", "ACCEPT"}},
		{in: `-A X -m comment --comment "a b \"c\"" -j DROP`, want: []string{"-A", "X", "-m", "comment", "--comment", `a b "c"`, "-j", "DROP"}},
		{in: `-A X --comment ""`, want: []string{"-A", "X", "--comment", ""}},
		{in: `-A X --comment "open`, bad: true},
	} {
		got, err := SplitIPTablesLine(tc.in)
		if (err != nil) != tc.bad {
			t.Errorf("%q: err = %v", tc.in, err)
			continue
		}
		if !tc.bad && !slices.Equal(got, tc.want) {
			t.Errorf("%q: got %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestParsePolicy(t *testing.T) {
	out := "-P FORWARD DROP\n-N DOCKER\n-A FORWARD -j BANGER-FORWARD\n"
	if got, err := parsePolicy(out, "FORWARD"); err != nil || got != "DROP" {
		t.Errorf("parsePolicy = %q, %v; want DROP", got, err)
	}
	if got, err := parsePolicy("-N BANGER-FORWARD\n-A BANGER-FORWARD -j DROP\n", "BANGER-FORWARD"); err == nil {
		t.Errorf("parsePolicy of a user chain = %q, want an error", got)
	}
}
