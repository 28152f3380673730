package agent

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/agentproto"
	"github.com/bangervm/banger/internal/untar"
)

var _ agentproto.Archiver = (*Handler)(nil)

// TarOut implements agentproto.Archiver.
func (h *Handler) TarOut(ctx context.Context, path string) (io.ReadCloser, error) {
	if err := checkAbs(path); err != nil {
		return nil, err
	}
	if _, err := os.Lstat(path); err != nil {
		return nil, fmt.Errorf("archive %s: %w", path, errdefs.FromFS(err))
	}
	pr, pw := io.Pipe()
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	go func() {
		defer cancel()
		pw.CloseWithError(agentproto.WriteTar(ctx, pw, path, agentproto.TarName(path)))
	}()
	return &pipeReader{PipeReader: pr, cancel: cancel}, nil
}

// pipeReader stops the archiving goroutine when closed.
type pipeReader struct {
	*io.PipeReader
	cancel context.CancelFunc
}

func (p *pipeReader) Close() error {
	p.cancel()
	return p.PipeReader.Close()
}

// TarIn implements agentproto.Archiver; entries keep the archive's owners.
func (h *Handler) TarIn(ctx context.Context, dir string) (agentproto.PendingFile, error) {
	if err := checkAbs(dir); err != nil {
		return nil, err
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("extract into %s: %w", dir, errdefs.FromFS(err))
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("extract into %s: not a directory: %w", dir, errdefs.ErrInvalidArgument)
	}
	pr, pw := io.Pipe()
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	x := &pendingTar{pw: pw, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(x.done)
		x.err = untar.Extract(ctx, dir, pr, untar.Options{Policy: untar.Permissive, KeepOwner: os.Geteuid() == 0})
		// Unblock a writer the extraction stopped listening to: it gets
		// the error, or io.ErrClosedPipe after the archive's end.
		pr.CloseWithError(x.err)
	}()
	return x, nil
}

// pendingTar feeds a tar stream to an extraction running in a goroutine.
type pendingTar struct {
	pw     *io.PipeWriter
	cancel context.CancelFunc
	done   chan struct{}
	err    error
	once   sync.Once
}

func (x *pendingTar) Write(b []byte) (int, error) {
	n, err := x.pw.Write(b)
	if err == io.ErrClosedPipe {
		// The extraction finished (the archive's end) before the stream
		// did: drop the padding that follows.
		<-x.done
		if x.err == nil {
			return len(b), nil
		}
		return n, x.err
	}
	return n, err
}

func (x *pendingTar) Commit() error {
	x.once.Do(func() { x.pw.Close() })
	<-x.done
	x.cancel()
	return x.err
}

func (x *pendingTar) Abort() {
	x.once.Do(func() { x.pw.CloseWithError(fmt.Errorf("copy abandoned by the host: %w", errdefs.ErrCanceled)) })
	x.cancel()
	<-x.done
}
