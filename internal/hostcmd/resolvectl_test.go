package hostcmd

import (
	"slices"
	"testing"

	"github.com/bangervm/banger/errdefs"
)

func TestResolvectlArgs(t *testing.T) {
	for _, tc := range []struct {
		verb, link string
		values     []string
		want       []string // nil: refused
	}{
		{"dns", "banger0", []string{"127.0.0.1:42069"}, []string{"dns", "banger0", "127.0.0.1:42069"}},
		{"domain", "banger0", []string{"~vm"}, []string{"domain", "banger0", "~vm"}},
		{"default-route", "banger0", []string{"false"}, []string{"default-route", "banger0", "false"}},
		{"revert", "banger0", nil, []string{"revert", "banger0"}},
		{"dns", "-h", []string{"1.1.1.1"}, nil},
		{"dns", "", []string{"1.1.1.1"}, nil},
		{"dns", "banger0", []string{"--interface=eth0"}, nil},
		{"domain", "banger0", []string{""}, nil},
		{"flush-caches", "banger0", nil, nil},
		{"query", "banger0", nil, nil},
	} {
		got, err := ResolvectlArgs(tc.verb, tc.link, tc.values...)
		if tc.want == nil {
			if !errdefs.IsInvalidArgument(err) {
				t.Errorf("%s %q %q: got %q, %v; want refused", tc.verb, tc.link, tc.values, got, err)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("%s %q %q: got %q, %v; want %q", tc.verb, tc.link, tc.values, got, err, tc.want)
		}
	}
}

func TestParseBusPID(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int
	}{
		{"u 1234\n", 1234},
		{"u 1", 1},
		{"u 0", 0},
		{"s foo", 0},
		{"", 0},
		{"u 12 13", 0},
	} {
		got, err := parseBusPID(tc.in)
		if (err == nil) != (tc.want != 0) || got != tc.want {
			t.Errorf("parseBusPID(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
}
