package vm

import (
	"strings"
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

func TestParseProcNet(t *testing.T) {
	tcp := `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0
   2: 0200A8C0:0016 0300A8C0:D431 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0 100 0 0 10 0
`
	ports, err := parseProcNet(strings.NewReader(tcp), "tcp")
	if err != nil {
		t.Fatal(err)
	}
	if len(ports) != 2 || ports[0].Port != 22 || ports[0].Address != "0.0.0.0" || ports[1].Port != 8080 || ports[1].Address != "127.0.0.1" {
		t.Errorf("ports %+v", ports)
	}
	tcp6 := `  sl  local_address                         remote_address                        st
   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000
   1: 00000000000000000000000001000000:0035 00000000000000000000000000000000:0000 0A 00000000:00000000
`
	ports, _ = parseProcNet(strings.NewReader(tcp6), "tcp6")
	if len(ports) != 2 || ports[0].Address != "::" || ports[1].Address != "::1" || ports[1].Port != 53 {
		t.Errorf("tcp6 ports %+v", ports)
	}
}
