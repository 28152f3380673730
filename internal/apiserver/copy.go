package apiserver

import (
	"fmt"
	"io"
	"net/http"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/agentproto"
)

// The archive routes follow api.PathVM+"{ref}" (see api.ActionArchive).
const (
	archiveSuffix  = "/" + api.ActionArchive
	tarContentType = api.TarContentType
)

func (s *server) routeCopy(mux *http.ServeMux) {
	mux.HandleFunc("GET "+api.PathVM+"{ref}"+archiveSuffix, s.getArchive)
	mux.HandleFunc("PUT "+api.PathVM+"{ref}"+archiveSuffix, s.putArchive)
}

func archivePath(r *http.Request) (string, error) {
	p := r.URL.Query().Get("path")
	if p == "" {
		return "", fmt.Errorf("archive: no guest path given (?path=): %w", errdefs.ErrInvalidArgument)
	}
	return p, nil
}

// getArchive streams the tar of a guest path. Errors found before the
// first byte (a missing path is 404) are JSON errors; a failure later
// aborts the response, so the client sees a broken stream rather than a
// short archive.
func (s *server) getArchive(w http.ResponseWriter, r *http.Request) {
	ac, p, done, err := s.archiveSession(r)
	if err != nil {
		writeError(w, err)
		return
	}
	defer done()
	rc, err := ac.TarOut(r.Context(), p)
	if err != nil {
		writeError(w, err)
		return
	}
	defer rc.Close()
	w.Header().Set("Content-Type", tarContentType)
	w.WriteHeader(http.StatusOK)
	if _, err := io.Copy(w, rc); err != nil {
		if r.Context().Err() == nil {
			s.c.Log.Warn("archive from vm", "vm", r.PathValue("ref"), "path", p, "err", err)
		}
		panic(http.ErrAbortHandler)
	}
}

// putArchive extracts the request body into a guest directory.
func (s *server) putArchive(w http.ResponseWriter, r *http.Request) {
	ac, dir, done, err := s.archiveSession(r)
	if err != nil {
		writeError(w, err)
		return
	}
	defer done()
	reply(w, struct{}{}, ac.TarIn(r.Context(), dir, r.Body))
}

// archiveSession reads an archive request's guest path and opens a
// session with its VM's agent; done ends the session.
func (s *server) archiveSession(r *http.Request) (ac *agentproto.Client, path string, done func(), err error) {
	if path, err = archivePath(r); err != nil {
		return nil, "", nil, err
	}
	ac, v, err := s.c.VMs.Agent(r.Context(), r.PathValue("ref"))
	if err != nil {
		return nil, "", nil, err
	}
	return ac, path, s.c.VMs.Session(v.ID), nil
}
