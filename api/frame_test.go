package api

import (
	"bytes"
	"testing"
)

func TestFrames(t *testing.T) {
	var buf bytes.Buffer
	big := bytes.Repeat([]byte("x"), MaxFrame+10)
	if err := WriteFrame(&buf, FrameStdout, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	WriteFrame(&buf, FrameStdinEOF, nil)
	WriteFrame(&buf, FrameStderr, big)
	var got []byte
	for i, want := range []byte{FrameStdout, FrameStdinEOF, FrameStderr, FrameStderr} {
		typ, p, err := ReadFrame(&buf)
		if err != nil || typ != want {
			t.Fatalf("frame %d: %c %v, want %c", i, typ, err, want)
		}
		if i >= 2 {
			got = append(got, p...)
		}
	}
	if !bytes.Equal(got, big) {
		t.Error("split payload not reassembled")
	}
	hostile := []byte{'o', 0xff, 0xff, 0xff, 0xff}
	if _, _, err := ReadFrame(bytes.NewReader(hostile)); err == nil {
		t.Error("oversized frame accepted")
	}
}
