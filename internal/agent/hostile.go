//go:build hostileagent

package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"

	"github.com/bangervm/banger/internal/agentproto"
	"github.com/bangervm/banger/internal/testutil/endless"
	"github.com/bangervm/banger/internal/testutil/hostiletar"
)

// This file exists only in the test build of banger-agent (go build -tags
// hostileagent ./cmd/banger-agent), never in a shipped one. That agent
// behaves like the real one until told otherwise, at run time inside the
// guest, by the words in HostileModeFile (written with vm exec), so that a
// test can run a hostile VM and a well-behaved one under one daemon:
//
//	procnet-endless  /proc/net/tcp* never ends: a listening socket forever
//	stall            reads of /proc files and stats never answer
//	stats-huge       the stats answer is as large as a frame allows, with
//	                 nonsense values
//	console-spam     starts writing to /dev/console without end (once)
//	tar-hostile      the archive of any path (vm cp VM:SRC) is
//	                 hostiletar.Archive: entries outside SRC, through
//	                 links, devices, a setuid file, control characters
//	tar-endless      the archive of any path never ends (hostiletar.Endless)
//	proto-99         the handshake announces protocol version 99, as an
//	                 agent no banger speaks would: the host can no longer
//	                 talk to it and must still stop the VM data-safely

// HostileModeFile holds the hostile agent's modes.
const HostileModeFile = "/run/banger-hostile"

func init() {
	hostile = newHostile
	hostileVersion = func() uint16 {
		if hostileMode("proto-99") {
			return 99
		}
		return agentproto.ProtocolVersion
	}
}

var _ agentproto.Archiver = (*hostileHandler)(nil)

type hostileHandler struct {
	agentproto.Handler
	log *slog.Logger
}

func newHostile(log *slog.Logger, h agentproto.Handler) agentproto.Handler {
	log.Warn("this is the HOSTILE test agent (build tag hostileagent); modes in " + HostileModeFile)
	return &hostileHandler{Handler: h, log: log}
}

func hostileMode(m string) bool {
	b, _ := os.ReadFile(HostileModeFile)
	for _, w := range strings.Fields(string(b)) {
		if w == m {
			return true
		}
	}
	return false
}

// stall blocks for good, ignoring ctx as a hostile agent would; only the
// host's own deadline ends the call.
func stall() { select {} }

func (h *hostileHandler) Open(ctx context.Context, path string) (io.ReadCloser, agentproto.FileInfo, error) {
	h.spam()
	if strings.HasPrefix(path, "/proc/") && hostileMode("stall") {
		stall()
	}
	if strings.HasPrefix(path, "/proc/net/tcp") && hostileMode("procnet-endless") {
		const row = "   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n"
		return io.NopCloser(endless.Lines("  sl  local_address rem_address   st\n", row)), agentproto.FileInfo{Name: "tcp"}, nil
	}
	return h.Handler.Open(ctx, path)
}

func (h *hostileHandler) Stats(ctx context.Context) (agentproto.Stats, error) {
	h.spam()
	if hostileMode("stall") {
		stall()
	}
	s, err := h.Handler.Stats(ctx)
	if hostileMode("stats-huge") {
		// About 85 bytes each in JSON: under agentproto.MaxFrame, so
		// that it reaches the host's checks.
		for i := range 8000 {
			s.Net = append(s.Net, agentproto.IOCounter{Name: fmt.Sprintf("\x1b[2Jeth%d", i), In: 1 << 63, Out: 1 << 63})
		}
	}
	return s, err
}

func (h *hostileHandler) Health(ctx context.Context) (agentproto.Info, error) {
	h.spam()
	return h.Handler.Health(ctx)
}

// TarOut answers vm cp VM:SRC; the embedded Handler hides the real
// agent's optional Archiver, so it is passed on by hand.
func (h *hostileHandler) TarOut(ctx context.Context, path string) (io.ReadCloser, error) {
	switch {
	case hostileMode("tar-hostile"):
		return io.NopCloser(bytes.NewReader(hostiletar.Archive(agentproto.TarName(path)))), nil
	case hostileMode("tar-endless"):
		return io.NopCloser(hostiletar.Endless(agentproto.TarName(path))), nil
	}
	a, err := h.archiver()
	if err != nil {
		return nil, err
	}
	return a.TarOut(ctx, path)
}

func (h *hostileHandler) TarIn(ctx context.Context, dir string) (agentproto.PendingFile, error) {
	a, err := h.archiver()
	if err != nil {
		return nil, err
	}
	return a.TarIn(ctx, dir)
}

func (h *hostileHandler) archiver() (agentproto.Archiver, error) {
	a, ok := h.Handler.(agentproto.Archiver)
	if !ok {
		return nil, errors.New("hostile agent: the wrapped handler cannot copy files")
	}
	return a, nil
}

var spamming atomic.Bool

// spam starts the console spammer once console-spam is set.
func (h *hostileHandler) spam() {
	if !hostileMode("console-spam") || !spamming.CompareAndSwap(false, true) {
		return
	}
	go func() {
		c, err := os.OpenFile("/dev/console", os.O_WRONLY, 0)
		if err != nil {
			h.log.Error("console spam", "err", err)
			return
		}
		io.Copy(c, endless.Lines("", "HOSTILE console spam, without end ...............................\n"))
	}()
}
