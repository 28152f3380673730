package hostcmd

import (
	"slices"
	"testing"
)

func TestDebugfsQuote(t *testing.T) {
	tests := []struct {
		in, want string
		wantErr  bool
	}{
		{in: "/etc/passwd", want: `"/etc/passwd"`},
		{in: "/a b", want: `"/a b"`},
		{in: `/say "hi"`, want: `"/say ""hi"""`},
		{in: "/héllo wörld.txt", want: `"/héllo wörld.txt"`},
		{in: "/tab\there", want: "\"/tab\there\""},
		{in: "/new\nline", wantErr: true},
		{in: "/cr\rhere", wantErr: true},
		{in: "/nul\x00", wantErr: true},
	}
	for _, tt := range tests {
		got, err := DebugfsQuote(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("DebugfsQuote(%q) = %q, %v; want %q, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestDebugfsErrors(t *testing.T) {
	tests := []struct {
		stderr string
		want   []string
	}{
		{stderr: "debugfs 1.47.0 (5-Feb-2023)\n", want: nil},
		{stderr: "", want: nil},
		{stderr: "debugfs 1.47.0 (5-Feb-2023)\n/x: File not found by ext2_lookup \n",
			want: []string{"/x: File not found by ext2_lookup"}},
		{stderr: "debugfs: Bad magic number in super-block while trying to open img\n",
			want: []string{"debugfs: Bad magic number in super-block while trying to open img"}},
	}
	for _, tt := range tests {
		if got := debugfsErrors(tt.stderr); !slices.Equal(got, tt.want) {
			t.Errorf("debugfsErrors(%q) = %q, want %q", tt.stderr, got, tt.want)
		}
	}
}
