package hostcmd

import (
	"slices"
	"strings"
	"testing"
)

func TestMke2fsArgs(t *testing.T) {
	base := Mke2fsConfig{Dir: "/src", Output: "/out.ext4", SizeBytes: 1 << 30}
	tests := []struct {
		name    string
		mod     func(*Mke2fsConfig)
		want    []string // must appear in order at the end
		has     []string // must appear somewhere
		wantErr string
	}{
		{name: "1 GiB is 1048576k, not 1048576 blocks", want: []string{"-d", "/src", "/out.ext4", "1048576k"}},
		{name: "4 KiB", mod: func(c *Mke2fsConfig) { c.SizeBytes = 4096 }, want: []string{"/out.ext4", "4k"}},
		{name: "label", mod: func(c *Mke2fsConfig) { c.Label = "rootfs" }, has: []string{"-L", "rootfs"}},
		{name: "inodes", mod: func(c *Mke2fsConfig) { c.Inodes = 70000 }, has: []string{"-N", "70000"}},
		{name: "uuid", mod: func(c *Mke2fsConfig) { c.UUID = "d5a8f0a4-5b0e-4a57-9d3e-0a5e4f3c2b1a" },
			has: []string{"-U", "d5a8f0a4-5b0e-4a57-9d3e-0a5e4f3c2b1a", "lazy_itable_init=1,lazy_journal_init=1,nodiscard,root_owner=0:0,hash_seed=d5a8f0a4-5b0e-4a57-9d3e-0a5e4f3c2b1a"}},
		{name: "fixed profile", has: []string{"-t", "ext4", "-T", "default", "-b", "4096", "-F", "-q"}},
		{name: "size not block multiple", mod: func(c *Mke2fsConfig) { c.SizeBytes = 1000 }, wantErr: "multiple of 4096"},
		{name: "zero size", mod: func(c *Mke2fsConfig) { c.SizeBytes = 0 }, wantErr: "multiple of 4096"},
		{name: "label too long", mod: func(c *Mke2fsConfig) { c.Label = strings.Repeat("x", 17) }, wantErr: "16 bytes"},
		{name: "output like an option", mod: func(c *Mke2fsConfig) { c.Output = "-n" }, wantErr: "starts with"},
		{name: "no dir", mod: func(c *Mke2fsConfig) { c.Dir = "" }, wantErr: "required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := base
			if tt.mod != nil {
				tt.mod(&c)
			}
			args, err := Mke2fsArgs(c)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Mke2fsArgs() error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(tt.want) > 0 && !slices.Equal(args[len(args)-len(tt.want):], tt.want) {
				t.Errorf("args end %q, want %q", args, tt.want)
			}
			for _, h := range tt.has {
				if !slices.Contains(args, h) {
					t.Errorf("args %q lack %q", args, h)
				}
			}
		})
	}
}
