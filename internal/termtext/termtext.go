// Package termtext makes text that came from a guest safe to print on the
// user's terminal. A guest controls its console and its command output; printed
// raw, an escape sequence in it could retitle the terminal, clear the screen,
// hide text or, on some terminals, answer back as if the user had typed. Every
// byte that a terminal could read as control is shown as a visible escape
// instead, so the user still sees what the guest sent.
package termtext

import (
	"fmt"
	"io"
	"unicode/utf8"
)

// Escape returns s with printable UTF-8, newlines and tabs unchanged and
// everything else made visible: C0 controls, ESC and DEL as `\x1b`, C1
// controls (U+0080–U+009F) as `\u009b`, and bytes that are not UTF-8 as
// `\xff`. A carriage return right before a newline is dropped (serial consoles
// end lines with CRLF); any other carriage return is escaped, since it could
// overwrite what was printed before it on the line.
func Escape(s string) string {
	out, _ := appendEscaped(nil, []byte(s), true)
	return string(out)
}

// appendEscaped appends the escaped form of b to dst. Unless final is set, it
// stops before an incomplete UTF-8 sequence or a carriage return at the end of
// b, whose meaning depends on bytes not yet seen, and returns how many bytes of
// b it consumed.
func appendEscaped(dst, b []byte, final bool) ([]byte, int) {
	i := 0
	for i < len(b) {
		c := b[i]
		if c == '\r' {
			if i+1 == len(b) && !final {
				return dst, i
			}
			if i+1 < len(b) && b[i+1] == '\n' {
				i++ // the newline is kept on the next turn
				continue
			}
		}
		if c < utf8.RuneSelf {
			if c == '\n' || c == '\t' || (c >= 0x20 && c != 0x7f) {
				dst = append(dst, c)
			} else {
				dst = fmt.Appendf(dst, `\x%02x`, c)
			}
			i++
			continue
		}
		if !final && !utf8.FullRune(b[i:]) {
			return dst, i
		}
		r, size := utf8.DecodeRune(b[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			dst = fmt.Appendf(dst, `\x%02x`, c)
		case r >= 0x80 && r <= 0x9f:
			dst = fmt.Appendf(dst, `\u%04x`, r)
		default:
			dst = append(dst, b[i:i+size]...)
		}
		i += size
	}
	return dst, i
}

// Writer escapes what is written to it, as Escape does, and passes it on. It
// holds back at most a few bytes whose meaning depends on the next Write (a
// UTF-8 sequence split across Writes, a trailing carriage return); Close
// writes them out. A Writer is not safe for concurrent use.
type Writer struct {
	w       io.Writer
	pending []byte
	buf     []byte
}

var _ io.WriteCloser = (*Writer)(nil)

// NewWriter returns a Writer passing escaped text on to w. Close it to flush
// the held-back bytes; closing does not close w.
func NewWriter(w io.Writer) *Writer {
	return &Writer{w: w}
}

// Write escapes p and writes the result to the underlying writer. It returns
// len(p) when the underlying write succeeds, so callers such as io.Copy see
// their own byte counts, not the escaped length.
func (w *Writer) Write(p []byte) (int, error) {
	in := p
	if len(w.pending) > 0 {
		in = append(w.pending, p...)
	}
	out, n := appendEscaped(w.buf[:0], in, false)
	w.buf = out
	w.pending = append(w.pending[:0:0], in[n:]...)
	if len(out) > 0 {
		if _, err := w.w.Write(out); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// Close writes out any held-back bytes, escaped as at the end of input. It
// does not close the underlying writer.
func (w *Writer) Close() error {
	if len(w.pending) == 0 {
		return nil
	}
	out, _ := appendEscaped(w.buf[:0], w.pending, true)
	w.pending = nil
	_, err := w.w.Write(out)
	return err
}
