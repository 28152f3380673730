package vm

import (
	"testing"

	"github.com/bangervm/banger/api"
)

func TestImageInit(t *testing.T) {
	for _, tt := range []struct {
		cfg  api.ImageConfig
		want string
	}{
		{api.ImageConfig{Cmd: []string{"/bin/sh"}}, ""},
		{api.ImageConfig{Cmd: []string{"/sbin/init"}}, "/sbin/init"},
		{api.ImageConfig{Entrypoint: []string{"/lib/systemd/systemd"}}, "/lib/systemd/systemd"},
		{api.ImageConfig{Cmd: []string{"/sbin/init", "--log-level=debug"}}, ""},
		{api.ImageConfig{Cmd: []string{"init"}}, ""},
		{api.ImageConfig{}, ""},
	} {
		if got := imageInit(tt.cfg); got != tt.want {
			t.Errorf("imageInit(%+v) = %q, want %q", tt.cfg, got, tt.want)
		}
	}
}
