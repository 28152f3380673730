// Package guestdata parses what the host reads out of a guest: its socket
// table (/proc/net/tcp and friends), its CPU counters (/proc/stat) and the
// agent's stats answer. The guest is untrusted, so every parser reads at
// most a fixed number of bytes, lines and entries and fails with a
// *LimitError past them: a guest cannot grow the daemon's memory, or keep
// it busy, by answering without end.
package guestdata

import (
	"bufio"
	"errors"
	"fmt"
	"io"
)

// Limits bound one parse. A zero field takes the parser's default.
type Limits struct {
	Bytes   int64 // bytes read from the guest
	Lines   int   // lines, parsed or not
	Entries int   // entries kept (sockets, CPUs)
}

// maxLine bounds one line: a guest cannot make a line buffer grow either.
const maxLine = 4096

// ErrTooLarge is matched (errors.Is) by every *LimitError.
var ErrTooLarge = errors.New("guest data over its limit")

// LimitError says which limit a guest's answer went past.
type LimitError struct {
	What  string // "/proc/net/tcp"
	Limit string // "bytes", "lines", "entries", "line length"
	Max   int64
}

func (e *LimitError) Error() string {
	return fmt.Sprintf("%s from the guest is over the limit of %d %s (a guest this large is not supported, or the guest is misbehaving)", e.What, e.Max, e.Limit)
}

// Is makes errors.Is(err, ErrTooLarge) true.
func (e *LimitError) Is(target error) bool { return target == ErrTooLarge }

// lineReader yields the lines of at most lim.Bytes of r, failing past the
// byte, line and line-length limits.
type lineReader struct {
	what  string
	lim   Limits
	cr    countingReader
	sc    *bufio.Scanner
	lines int
}

// newLineReader reads the lines of r. With cutLong, a line longer than
// maxLine is cut short instead of failing the parse.
func newLineReader(what string, r io.Reader, lim Limits, cutLong bool) *lineReader {
	lr := &lineReader{what: what, lim: lim}
	// One byte past the limit tells "exactly at" from "over".
	lr.cr = countingReader{r: io.LimitReader(r, lim.Bytes+1)}
	var src io.Reader = &lr.cr
	if cutLong {
		src = &cutLines{r: src}
	}
	lr.sc = bufio.NewScanner(src)
	lr.sc.Buffer(make([]byte, 0, 512), maxLine)
	return lr
}

// next returns the next line; ok is false at the end or on err.
func (lr *lineReader) next() (line string, ok bool, err error) {
	if !lr.sc.Scan() {
		switch err := lr.sc.Err(); {
		case errors.Is(err, bufio.ErrTooLong):
			return "", false, &LimitError{What: lr.what, Limit: "bytes per line", Max: maxLine}
		case err != nil:
			return "", false, fmt.Errorf("read %s: %w", lr.what, err)
		}
		if lr.cr.n > lr.lim.Bytes {
			return "", false, &LimitError{What: lr.what, Limit: "bytes", Max: lr.lim.Bytes}
		}
		return "", false, nil
	}
	if lr.cr.n > lr.lim.Bytes {
		return "", false, &LimitError{What: lr.what, Limit: "bytes", Max: lr.lim.Bytes}
	}
	if lr.lines++; lr.lines > lr.lim.Lines {
		return "", false, &LimitError{What: lr.what, Limit: "lines", Max: int64(lr.lim.Lines)}
	}
	return lr.sc.Text(), true, nil
}

func (lr *lineReader) tooMany() error {
	return &LimitError{What: lr.what, Limit: "entries", Max: int64(lr.lim.Entries)}
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func orDefault(l, d Limits) Limits {
	if l.Bytes <= 0 {
		l.Bytes = d.Bytes
	}
	if l.Lines <= 0 {
		l.Lines = d.Lines
	}
	if l.Entries <= 0 {
		l.Entries = d.Entries
	}
	return l
}

// cutLines passes r through but drops the bytes of every line past
// maxLine-1, so that a line the parser does not need (the "intr" line of
// /proc/stat holds a counter per interrupt) cannot fail it.
type cutLines struct {
	r   io.Reader
	col int
	buf []byte
}

func (c *cutLines) Read(p []byte) (int, error) {
	if len(c.buf) < len(p) {
		c.buf = make([]byte, len(p))
	}
	for {
		n, err := c.r.Read(c.buf[:len(p)])
		out := 0
		for _, b := range c.buf[:n] {
			if b == '\n' {
				c.col = 0
			} else if c.col++; c.col >= maxLine-1 {
				continue
			}
			p[out] = b
			out++
		}
		// All of it dropped: read on rather than return nothing.
		if out > 0 || err != nil || n == 0 {
			return out, err
		}
	}
}
