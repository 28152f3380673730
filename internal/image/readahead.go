package image

import (
	"io"
	"sync"
)

// readAhead reads r on its own goroutine, a few chunks ahead of the
// consumer, so that decompressing a layer (most of a pull's CPU) overlaps
// with writing its files instead of alternating with it.
type readAhead struct {
	ch   chan chunk
	free chan []byte
	cur  []byte
	buf  []byte
	err  error
	stop chan struct{}
	once sync.Once
	done chan struct{}
}

type chunk struct {
	b   []byte
	err error
}

const (
	readAheadChunk = 256 << 10
	readAheadDepth = 4
)

func newReadAhead(r io.Reader) *readAhead {
	ra := &readAhead{
		ch:   make(chan chunk, readAheadDepth),
		free: make(chan []byte, readAheadDepth+2),
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}
	for i := 0; i < readAheadDepth+2; i++ {
		ra.free <- make([]byte, readAheadChunk)
	}
	go ra.fill(r)
	return ra
}

func (ra *readAhead) fill(r io.Reader) {
	defer close(ra.done)
	defer close(ra.ch)
	for {
		var b []byte
		select {
		case b = <-ra.free:
		case <-ra.stop:
			return
		}
		n, err := io.ReadFull(r, b)
		if err == io.ErrUnexpectedEOF {
			err = io.EOF
		}
		select {
		case ra.ch <- chunk{b: b[:n], err: err}:
		case <-ra.stop:
			return
		}
		if err != nil {
			return
		}
	}
}

func (ra *readAhead) Read(p []byte) (int, error) {
	for len(ra.cur) == 0 {
		if ra.buf != nil {
			ra.free <- ra.buf[:cap(ra.buf)]
			ra.buf = nil
		}
		if ra.err != nil {
			return 0, ra.err
		}
		c, ok := <-ra.ch
		if !ok {
			return 0, io.ErrClosedPipe
		}
		ra.buf, ra.cur, ra.err = c.b, c.b, c.err
	}
	n := copy(p, ra.cur)
	ra.cur = ra.cur[n:]
	return n, nil
}

// Close stops the reading goroutine and waits for it, so the underlying
// reader may be closed safely afterwards.
func (ra *readAhead) Close() error {
	ra.once.Do(func() { close(ra.stop) })
	<-ra.done
	return nil
}
