package apiserver

import (
	"fmt"
	"io"
	"net/http"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/errdefs"
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
	p, err := archivePath(r)
	if err != nil {
		writeError(w, err)
		return
	}
	ac, v, err := s.c.VMs.Agent(r.Context(), r.PathValue("ref"))
	if err != nil {
		writeError(w, err)
		return
	}
	defer s.c.VMs.Session(v.ID)()
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
	dir, err := archivePath(r)
	if err != nil {
		writeError(w, err)
		return
	}
	ac, v, err := s.c.VMs.Agent(r.Context(), r.PathValue("ref"))
	if err != nil {
		writeError(w, err)
		return
	}
	defer s.c.VMs.Session(v.ID)()
	reply(w, struct{}{}, ac.TarIn(r.Context(), dir, r.Body))
}
