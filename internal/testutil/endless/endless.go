// Package endless makes readers that never end, for tests that a reader of
// guest data stops at its limits: a hostile guest's answer can be as long
// as it likes.
package endless

import "io"

// Lines returns a reader of head followed by line repeated forever.
func Lines(head, line string) io.Reader {
	return io.MultiReader(&repeat{b: []byte(head), once: true}, &repeat{b: []byte(line)})
}

// Bytes returns a reader of b repeated forever (one long line if b has
// no newline).
func Bytes(b byte) io.Reader { return &repeat{b: []byte{b}} }

type repeat struct {
	b    []byte
	off  int
	once bool
	done bool
}

func (r *repeat) Read(p []byte) (int, error) {
	if r.done || len(r.b) == 0 {
		return 0, io.EOF
	}
	n := 0
	for n < len(p) {
		c := copy(p[n:], r.b[r.off:])
		n += c
		r.off += c
		if r.off == len(r.b) {
			r.off = 0
			if r.once {
				r.done = true
				break
			}
		}
	}
	return n, nil
}
