package termtext

import (
	"bytes"
	"testing"
	"unicode/utf8"
)

func TestEscape(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"plain text\n", "plain text\n"},
		{"tab\there", "tab\there"},
		{"héllo wörld ✓ 日本", "héllo wörld ✓ 日本"},
		{"\x1b]0;pwned\x07", `\x1b]0;pwned\x07`},
		{"\x1b[2J\x1b[H", `\x1b[2J\x1b[H`},
		{"a\x00b\x7fc", `a\x00b\x7fc`},
		{"line\r\nnext\r\n", "line\nnext\n"},
		{"secret\rcover", `secret\x0dcover`},
		{"end\r", `end\x0d`},
		{"\r\r\n", `\x0d` + "\n"},
		{"\u009b2J", `\u009b2J`},
		{"\u0085", `\u0085`},
		{"\xff\xfe", `\xff\xfe`},
		{"\x9b2J", `\x9b2J`},
		{"\xe2\x82", `\xe2\x82`},
		{"\xe2\x82x", `\xe2\x82x`},
		{"\xed\xa0\x80", `\xed\xa0\x80`}, // a UTF-16 surrogate is not UTF-8
		{`\x1b`, `\x1b`},
		{"", ""},
	} {
		if got := Escape(tc.in); got != tc.want {
			t.Errorf("Escape(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestWriterSplits writes inputs one byte at a time and at every split point:
// a UTF-8 sequence or CRLF cut between Writes must come out as it would whole.
func TestWriterSplits(t *testing.T) {
	for _, in := range []string{
		"日本\r\n✓", "\u009b[31m", "a\xe2\x82", "x\r", "\r\r\n", "\x1b]0;pwned\x07 ok\n",
	} {
		want := Escape(in)
		for cut := 0; cut <= len(in); cut++ {
			if got := writeChunks(t, in[:cut], in[cut:]); got != want {
				t.Errorf("%q cut at %d: got %q, want %q", in, cut, got, want)
			}
		}
		bytesOf := make([]string, 0, len(in))
		for i := range len(in) {
			bytesOf = append(bytesOf, in[i:i+1])
		}
		if got := writeChunks(t, bytesOf...); got != want {
			t.Errorf("%q byte by byte: got %q, want %q", in, got, want)
		}
	}
}

func TestWriterReportsInputLength(t *testing.T) {
	var out bytes.Buffer
	w := NewWriter(&out)
	n, err := w.Write([]byte("\x1b[2J"))
	if err != nil || n != 4 {
		t.Fatalf("Write = %d, %v; want 4, nil", n, err)
	}
}

func writeChunks(t *testing.T, chunks ...string) string {
	t.Helper()
	var out bytes.Buffer
	w := NewWriter(&out)
	for _, c := range chunks {
		if _, err := w.Write([]byte(c)); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return out.String()
}

// checkSafe fails if out holds anything a terminal could take as control.
func checkSafe(t *testing.T, in, out string) {
	t.Helper()
	if !utf8.ValidString(out) {
		t.Fatalf("Escape(%q) = %q: not UTF-8", in, out)
	}
	for i := range len(out) {
		if c := out[i]; (c < 0x20 && c != '\n' && c != '\t') || c == 0x7f {
			t.Fatalf("Escape(%q) = %q: control byte %#x at %d", in, out, c, i)
		}
	}
	for _, r := range out {
		if r >= 0x80 && r <= 0x9f {
			t.Fatalf("Escape(%q) = %q: C1 control %U", in, out, r)
		}
	}
}

func FuzzEscape(f *testing.F) {
	for _, s := range []string{"\x1b]0;pwned\x07", "\x1b[2J", "\u009b", "\xff", "a\r\nb\r", "日本\xe2\x82", "\t\n"} {
		f.Add(s, uint8(3))
	}
	f.Fuzz(func(t *testing.T, in string, cut uint8) {
		out := Escape(in)
		checkSafe(t, in, out)
		c := int(cut) % (len(in) + 1)
		if got := writeChunks(t, in[:c], in[c:]); got != out {
			t.Fatalf("Writer(%q cut at %d) = %q, Escape = %q", in, c, got, out)
		}
	})
}
