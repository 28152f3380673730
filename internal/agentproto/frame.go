package agentproto

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/bangervm/banger/errdefs"
)

// Inside a session stream every message is a frame:
//
//	type[1] length[4] payload[length]
//
// with the length big-endian and at most MaxFrame. Control payloads are
// JSON; data payloads are raw bytes.
const (
	frameHeaderLen = 5
	// MaxFrame bounds one frame's payload so a garbled or hostile length
	// cannot make either side allocate without limit.
	MaxFrame = 1 << 20
	// chunkSize is how much data one data frame carries.
	chunkSize = 32 << 10
)

// Frame types.
const (
	fRequest  byte = 1  // host: JSON request, first frame of a stream
	fResponse byte = 2  // agent: JSON result
	fError    byte = 3  // agent: JSON wireError; ends the operation
	fData     byte = 4  // file data, either direction
	fEOF      byte = 5  // end of file data
	fStdin    byte = 6  // host: stdin bytes
	fStdinEOF byte = 7  // host: stdin closed
	fStdout   byte = 8  // agent: stdout bytes (the terminal when TTY)
	fStderr   byte = 9  // agent: stderr bytes
	fResize   byte = 10 // host: JSON winSize
	fSignal   byte = 11 // host: JSON signalMsg
	fExit     byte = 12 // agent: JSON ExitStatus; ends an exec
)

// Operation names in request.Op.
const (
	opHealth    = "health"
	opStats     = "stats"
	opExec      = "exec"
	opReadFile  = "readFile"
	opWriteFile = "writeFile"
	opShutdown  = "shutdown"
	opTarOut    = "tarOut"
	opTarIn     = "tarIn"
	opIdentify  = "identify" // protocol 2
	opSetClock  = "setClock" // protocol 2; older agents answer "unknown operation"
)

type request struct {
	Op       string       `json:"op"`
	Exec     *ExecRequest `json:"exec,omitempty"`
	Path     string       `json:"path,omitempty"`
	Mode     uint32       `json:"mode,omitempty"`
	Identity *Identity    `json:"identity,omitempty"`
	Time     *time.Time   `json:"time,omitempty"` // setClock
}

type winSize struct {
	Rows uint16 `json:"rows"`
	Cols uint16 `json:"cols"`
}

type signalMsg struct {
	Signal int `json:"signal"`
}

// wireError carries an error's text and errdefs class across the session.
type wireError struct {
	Message string `json:"message"`
	Class   string `json:"class,omitempty"`
}

func toWire(err error) wireError {
	return wireError{Message: err.Error(), Class: errdefs.Code(err)}
}

func (we wireError) err() error { return errdefs.FromCode(we.Class, we.Message) }

// frameWriter serialises frames from several goroutines onto one stream.
type frameWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (fw *frameWriter) write(t byte, p []byte) error {
	if len(p) > MaxFrame {
		return fmt.Errorf("frame of %d bytes exceeds the %d limit", len(p), MaxFrame)
	}
	buf := make([]byte, frameHeaderLen, frameHeaderLen+len(p))
	buf[0] = t
	binary.BigEndian.PutUint32(buf[1:], uint32(len(p)))
	buf = append(buf, p...)
	fw.mu.Lock()
	defer fw.mu.Unlock()
	_, err := fw.w.Write(buf)
	return err
}

func (fw *frameWriter) json(t byte, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return fw.write(t, b)
}

func (fw *frameWriter) error(err error) error { return fw.json(fError, toWire(err)) }

// data returns a Writer that sends everything written as frames of type t,
// split into chunks.
func (fw *frameWriter) data(t byte) io.Writer { return dataWriter{fw, t} }

type dataWriter struct {
	fw *frameWriter
	t  byte
}

func (d dataWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		c := min(len(p), chunkSize)
		if err := d.fw.write(d.t, p[:c]); err != nil {
			return n, err
		}
		n += c
		p = p[c:]
	}
	return n, nil
}

// readFrame reads one frame. A length above MaxFrame is an error and the
// stream must be abandoned, since its framing is lost.
func readFrame(r io.Reader) (byte, []byte, error) {
	var hdr [frameHeaderLen]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n > MaxFrame {
		return 0, nil, fmt.Errorf("frame of %d bytes exceeds the %d limit", n, MaxFrame)
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(r, p); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, err
	}
	return hdr[0], p, nil
}

// readJSON reads a frame and decodes it into v if it has type want. An
// fError frame becomes the error it carries.
func readJSON(r io.Reader, want byte, v any) error {
	t, p, err := readFrame(r)
	if err != nil {
		return err
	}
	return decodeFrame(t, p, want, v)
}

func decodeFrame(t byte, p []byte, want byte, v any) error {
	switch t {
	case want:
		if v == nil {
			return nil
		}
		if err := json.Unmarshal(p, v); err != nil {
			return fmt.Errorf("decode frame %d: %w", t, err)
		}
		return nil
	case fError:
		var we wireError
		if err := json.Unmarshal(p, &we); err != nil {
			return fmt.Errorf("decode error frame: %w", err)
		}
		return we.err()
	default:
		return fmt.Errorf("unexpected frame type %d, want %d", t, want)
	}
}
