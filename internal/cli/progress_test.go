package cli

import (
	"fmt"
	"strings"
	"testing"

	"github.com/bangervm/banger/api"
)

// buildEvents is an image build as the daemon reports it: a phase's first
// message, then hundreds of lines of mmdebstrap output in the same phase,
// then the next phases.
func buildEvents() []api.Event {
	evs := []api.Event{{Phase: "debootstrap", Message: "mmdebstrap bookworm from http://deb.debian.org/debian (about a minute)"}}
	for i := range 620 {
		evs = append(evs, api.Event{Phase: "debootstrap", Message: fmt.Sprintf("I: unpacking package-%d...", i)})
	}
	evs = append(evs, api.Event{Phase: "ext4", Message: "building ext4 root filesystem"},
		api.Event{Phase: "layer", Layer: 1, Layers: 2, Current: 0, Total: 10 << 20},
		api.Event{Phase: "layer", Layer: 1, Layers: 2, Current: 10 << 20, Total: 10 << 20},
		api.Event{Phase: "boot", Message: "booting vm"})
	return evs
}

// Without a terminal, a build's progress is a few lines: each phase's
// first message and each finished layer, not every line of tool output.
func TestProgressPlain(t *testing.T) {
	io, _, errOut := TestStreams()
	p := newProgress(io)
	for _, ev := range buildEvents() {
		p.event(ev)
	}
	p.done()
	want := "mmdebstrap bookworm from http://deb.debian.org/debian (about a minute)\nbuilding ext4 root filesystem\nlayer 1/2 done (10.0 MiB)\nbooting vm\n"
	if errOut.String() != want {
		t.Errorf("plain progress:\n%s\nwant:\n%s", errOut, want)
	}
}

// On a terminal, one status line per phase, redrawn in place (the tool's
// output scrolls by in it) and left standing when the next phase begins.
func TestProgressTerminal(t *testing.T) {
	io, _, errOut := TestStreams()
	io.ErrTTY = true
	p := newProgress(io)
	for _, ev := range buildEvents() {
		p.event(ev)
	}
	p.done()
	lines := strings.Split(strings.TrimSuffix(errOut.String(), "\n"), "\n")
	if len(lines) != 4 {
		t.Fatalf("%d lines, want one per phase (debootstrap, ext4, layer, boot):\n%q", len(lines), errOut.String())
	}
	last := func(l string) string { return l[strings.LastIndex(l, "\r\033[K")+len("\r\033[K"):] }
	for i, want := range []string{"I: unpacking package-619...", "building ext4 root filesystem", "layer 1/2", "booting vm"} {
		if !strings.HasPrefix(last(lines[i]), want) {
			t.Errorf("line %d ends showing %q, want %q", i, last(lines[i]), want)
		}
	}
}
