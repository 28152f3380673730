package cli

import (
	"fmt"
	"strings"
	"sync"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/internal/termtext"
)

// progressPrinter renders a stream of progress events. On a terminal,
// one status line per phase, redrawn in place (a bar where sizes are
// known, else the latest message: a tool's output scrolls by in it) and
// left standing when the next phase begins. Otherwise (logs, CI) a few
// plain lines: a phase's first message, and each layer as it completes;
// the rest (hundreds of lines of mmdebstrap output) is not printed.
// Messages are escaped for the terminal: they can quote what a guest or a
// registry sent.
type progressPrinter struct {
	io    *IOStreams
	mu    sync.Mutex
	last  string // last plain line, to skip repeats
	phase string // the phase of the last event
	drawn bool
}

func newProgress(io *IOStreams) *progressPrinter { return &progressPrinter{io: io} }

func (p *progressPrinter) event(ev api.Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	newPhase := ev.Phase != p.phase
	if p.io.ErrTTY {
		p.bar(ev, newPhase)
		return
	}
	var line string
	switch {
	case ev.Phase == "layer" && ev.Current == ev.Total:
		line = fmt.Sprintf("layer %d/%d done (%s)", ev.Layer, ev.Layers, humanBytes(ev.Total))
	case ev.Phase == "layer" && ev.Current == 0:
		line = ""
	case ev.Message != "" && (newPhase || ev.Phase == ""):
		line = termtext.Escape(ev.Message)
	}
	if line != "" && line != p.last {
		fmt.Fprintln(p.io.ErrOut, line)
		p.last, p.phase = line, ev.Phase
	}
}

func (p *progressPrinter) bar(ev api.Event, newPhase bool) {
	var line string
	if ev.Total > 0 {
		const width = 30
		frac := float64(ev.Current) / float64(ev.Total)
		if frac > 1 {
			frac = 1
		}
		n := int(frac * width)
		label := ev.Phase
		if ev.Layers > 0 {
			label = fmt.Sprintf("layer %d/%d", ev.Layer, ev.Layers)
		}
		line = fmt.Sprintf("%-12s [%s%s] %s / %s", label, strings.Repeat("=", n), strings.Repeat(" ", width-n), humanBytes(ev.Current), humanBytes(ev.Total))
	} else if ev.Message != "" {
		line = termtext.Escape(ev.Message)
	} else {
		return
	}
	if r := []rune(line); len(r) > 100 {
		line = string(r[:100])
	}
	if newPhase && p.drawn {
		// The finished phase's line stays.
		fmt.Fprintln(p.io.ErrOut)
	}
	fmt.Fprintf(p.io.ErrOut, "\r\033[K%s", line)
	p.drawn, p.phase = true, ev.Phase
}

// done ends the last phase's line, left standing like the others, so
// that later output starts on a line of its own.
func (p *progressPrinter) done() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.drawn {
		fmt.Fprintln(p.io.ErrOut)
		p.drawn = false
	}
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
