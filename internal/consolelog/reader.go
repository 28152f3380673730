package consolelog

import (
	"io"
	"os"
)

// Reader reads a console log from its start and, at its end, goes on in
// the new file if the log was rotated meanwhile: a follower (vm logs -f)
// sees every byte written after it opened the log.
type Reader struct {
	path string
	f    *os.File
}

// OpenReader opens the log at path.
func OpenReader(path string) (*Reader, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	return &Reader{path: path, f: f}, nil
}

// Read reads from the current file; io.EOF means nothing more for now
// (a follower tries again later).
func (r *Reader) Read(p []byte) (int, error) {
	n, err := r.f.Read(p)
	if n > 0 || err != io.EOF {
		return n, err
	}
	cur, err1 := os.Stat(r.path)
	open, err2 := r.f.Stat()
	if err1 != nil || err2 != nil || os.SameFile(cur, open) {
		return 0, io.EOF
	}
	// Rotated: first what reached the old file before its rotation.
	if n, err := r.f.Read(p); n > 0 {
		return n, err
	}
	nf, err := os.Open(r.path)
	if err != nil {
		return 0, io.EOF
	}
	r.f.Close()
	r.f = nf
	return r.f.Read(p)
}

// Close closes the file being read.
func (r *Reader) Close() error { return r.f.Close() }
