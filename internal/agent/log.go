package agent

import (
	"bytes"
	"io"
	"log/slog"
	"os"
	"sync"
)

// consolePrefix marks agent lines among the kernel's on the serial console.
const consolePrefix = "banger-agent: "

// logRing is how much recent log the agent keeps in memory, to seed the
// log file once /run exists.
const logRing = 64 << 10

// LogSink receives the agent's log lines and copies them to the console
// (prefixed), to an in-memory ring and, once SetFile is called, to a file
// that `vm logs` reads. It is safe for concurrent use.
type LogSink struct {
	mu      sync.Mutex
	console io.Writer
	file    io.Writer
	ring    []byte
}

// NewLogger returns a logger writing to sink, and the sink. console may be
// nil until SetConsole.
func NewLogger(console io.Writer) (*slog.Logger, *LogSink) {
	s := &LogSink{console: console}
	return slog.New(slog.NewTextHandler(s, &slog.HandlerOptions{Level: slog.LevelInfo})), s
}

// Write takes one or more whole lines.
func (s *LogSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.console != nil {
		var b bytes.Buffer
		for _, line := range bytes.SplitAfter(p, []byte("\n")) {
			if len(line) > 0 {
				b.WriteString(consolePrefix)
				b.Write(line)
			}
		}
		// A console that fails must not stop the agent.
		_, _ = s.console.Write(b.Bytes())
	}
	if s.file != nil {
		_, _ = s.file.Write(p)
	}
	s.ring = append(s.ring, p...)
	if len(s.ring) > logRing {
		s.ring = append(s.ring[:0], s.ring[len(s.ring)-logRing/2:]...)
	}
	return len(p), nil
}

// SetConsole directs lines to w from now on.
func (s *LogSink) SetConsole(w io.Writer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.console = w
}

// SetFile opens path for appending, writes the lines kept so far into it,
// and copies every later line there.
func (s *LogSink) SetFile(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	_, _ = f.Write(s.ring)
	s.file = f
	return nil
}
