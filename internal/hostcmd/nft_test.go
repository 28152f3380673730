package hostcmd

import (
	"slices"
	"testing"
)

func TestConcatElem(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
		bad  bool
	}{
		{in: `{"concat": ["bgr-a1", "172.30.0.2"]}`, want: []string{"bgr-a1", "172.30.0.2"}},
		{in: `{"elem": {"val": {"concat": ["bgr-a1", "02:00:00:00:00:01"]}, "comment": "x"}}`, want: []string{"bgr-a1", "02:00:00:00:00:01"}},
		{in: `"172.30.0.2"`, bad: true},
		{in: `{"prefix": {"addr": "10.0.0.0", "len": 8}}`, bad: true},
	} {
		got, err := concatElem([]byte(tc.in))
		if (err != nil) != tc.bad {
			t.Errorf("%s: err = %v", tc.in, err)
			continue
		}
		if !tc.bad && !slices.Equal(got, tc.want) {
			t.Errorf("%s: got %q, want %q", tc.in, got, tc.want)
		}
	}
}
