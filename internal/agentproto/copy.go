package agentproto

import (
	"context"
	"fmt"
	"io"

	"github.com/bangervm/banger/errdefs"
)

// Archiver is an optional Handler interface: copying file trees as tar
// streams (see WriteTar and untar.Extract). A Handler without it answers
// tarOut and tarIn with ErrFailedPrecondition.
type Archiver interface {
	// TarOut checks path (absolute; a missing one is ErrNotFound) and
	// returns the tar of the tree at it, as WriteTar writes it. Closing the
	// reader early stops the archiving.
	TarOut(ctx context.Context, path string) (io.ReadCloser, error)
	// TarIn checks dir (an existing directory, absolute) and returns a
	// PendingFile taking a tar stream: Commit waits for the extraction and
	// returns its outcome; Abort stops it. Entries extracted before an
	// error or Abort stay.
	TarIn(ctx context.Context, dir string) (PendingFile, error)
}

func (s *Server) archiver() (Archiver, error) {
	a, ok := s.Handler.(Archiver)
	if !ok {
		return nil, fmt.Errorf("this agent cannot copy files: %w", errdefs.ErrFailedPrecondition)
	}
	return a, nil
}

func (s *Server) tarOut(ctx context.Context, fw *frameWriter, path string) {
	a, err := s.archiver()
	if err != nil {
		_ = fw.error(err)
		return
	}
	rc, err := a.TarOut(ctx, path)
	if err != nil {
		_ = fw.error(err)
		return
	}
	sendData(fw, rc, struct{}{}, "archive "+path)
}

func (s *Server) tarIn(ctx context.Context, r io.Reader, fw *frameWriter, dir string) {
	a, err := s.archiver()
	if err != nil {
		_ = fw.error(err)
		return
	}
	pf, err := a.TarIn(ctx, dir)
	if err != nil {
		_ = fw.error(err)
		return
	}
	receiveData(r, fw, pf, "extract into "+dir)
}

// TarOut streams the guest's file tree at path (absolute) as a PAX tar whose
// root entry is TarName(path); symbolic links stay links. A missing path is
// ErrNotFound, reported here before any data. A failure part-way makes Read
// return the error, never a clean EOF. The caller must close the reader;
// closing early or cancelling ctx stops the agent.
func (c *Client) TarOut(ctx context.Context, path string) (io.ReadCloser, error) {
	cl, err := c.open(ctx, request{Op: opTarOut, Path: path})
	if err != nil {
		return nil, err
	}
	op := "archive " + path
	if err := readJSON(cl.st, fResponse, nil); err != nil {
		cl.close()
		return nil, cl.wrap(op, err)
	}
	return &fileReader{cl: cl, op: op}, nil
}

// TarIn extracts the tar stream r into the guest directory dir (absolute,
// existing: else ErrNotFound or ErrInvalidArgument) with untar.Extract's
// Permissive policy, keeping the archive's ownership (the archive is the
// host's: the guest trusts it). It returns once the agent has extracted
// everything, or with the first error (a hostile entry is
// ErrInvalidArgument); entries extracted before an error stay.
func (c *Client) TarIn(ctx context.Context, dir string, r io.Reader) error {
	return c.sendData(ctx, request{Op: opTarIn, Path: dir}, "extract into "+dir, r)
}
