package vm

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The console tail explaining a failed boot is guest output: it reaches the
// user's terminal escaped.
func TestConsoleTailEscapes(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "console.log"), []byte("kernel ok\r\n\x1b]0;pwned\x07\x1b[2Jgone\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	got := (&Manager{}).consoleTail(nil, dir)
	want := "\nguest console (last lines):\n  kernel ok\n  " + `\x1b]0;pwned\x07\x1b[2Jgone`
	if got != want {
		t.Errorf("consoleTail = %q, want %q", got, want)
	}
	if strings.ContainsAny(got, "\x1b\x07\r") {
		t.Errorf("consoleTail = %q: holds control characters", got)
	}
}
