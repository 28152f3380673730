package image

import (
	"bytes"
	"errors"
	"io"
	"math/rand"
	"testing"
	"testing/iotest"
)

func TestReadAhead(t *testing.T) {
	data := make([]byte, 3*readAheadChunk+123)
	rand.New(rand.NewSource(1)).Read(data)
	ra := newReadAhead(iotest.HalfReader(bytes.NewReader(data)))
	got, err := io.ReadAll(iotest.OneByteReader(io.LimitReader(ra, 1000)))
	if err != nil || !bytes.Equal(got, data[:1000]) {
		t.Fatalf("prefix: %v", err)
	}
	rest, err := io.ReadAll(ra)
	if err != nil || !bytes.Equal(rest, data[1000:]) {
		t.Fatalf("rest: %d bytes, %v", len(rest), err)
	}
	ra.Close()

	boom := errors.New("boom")
	ra = newReadAhead(io.MultiReader(bytes.NewReader(data[:10]), iotest.ErrReader(boom)))
	if _, err := io.ReadAll(ra); !errors.Is(err, boom) {
		t.Fatalf("error not passed on: %v", err)
	}
	ra.Close()

	// Closing early stops the goroutine even though nobody reads.
	ra = newReadAhead(bytes.NewReader(data))
	ra.Close()
}
