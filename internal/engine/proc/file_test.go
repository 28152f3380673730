package proc

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A tail quoted into an error comes from the guest: it must not reach the
// user's terminal as control sequences.
func TestQuoteTailEscapes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "console.log")
	if err := os.WriteFile(path, []byte("old line\nboot\x1b]0;pwned\x07\x1b[2J\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	got := QuoteTail("console", path, int64(len("old line\n")))
	want := "; console:\n" + `boot\x1b]0;pwned\x07\x1b[2J`
	if got != want {
		t.Errorf("QuoteTail = %q, want %q", got, want)
	}
	if strings.ContainsRune(got, 0x1b) {
		t.Errorf("QuoteTail = %q: holds ESC", got)
	}
}
