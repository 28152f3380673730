package hostcmd

import (
	"strings"
	"testing"
)

func TestParseLdd(t *testing.T) {
	out := "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x00007f)\n\t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n"
	libs, err := parseLdd("qemu", out)
	if err != nil || strings.Join(libs, " ") != "/lib/x86_64-linux-gnu/libz.so.1 /lib64/ld-linux-x86-64.so.2" {
		t.Errorf("libs %q, %v", libs, err)
	}
	if _, err := parseLdd("qemu", "\tlibgone.so.2 => not found\n"); err == nil || !strings.Contains(err.Error(), "libgone.so.2") {
		t.Errorf("missing library: %v", err)
	}
}
