package apiserver

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/agentproto"
	"github.com/bangervm/banger/internal/consolelog"
	"github.com/bangervm/banger/internal/vm"
)

// VMs is what the API needs of the VM manager.
type VMs interface {
	List(ctx context.Context, sel map[string]string) ([]api.VM, error)
	Get(ctx context.Context, ref string) (api.VM, error)
	Create(ctx context.Context, req api.CreateVMRequest, progress func(api.Event)) (api.VM, error)
	Start(ctx context.Context, ref string, progress func(api.Event)) (api.VM, error)
	Stop(ctx context.Context, ref string) (api.StopResult, error)
	Kill(ctx context.Context, ref string) (api.StopResult, error)
	Restart(ctx context.Context, ref string, progress func(api.Event)) (api.VM, error)
	Delete(ctx context.Context, ref string, force bool) error
	Update(ctx context.Context, ref string, req api.UpdateVMRequest) (api.VM, error)
	Prune(ctx context.Context, sel map[string]string) (api.PruneVMsResult, error)
	Stats(ctx context.Context, ref string) (api.VMStats, error)
	ConsoleLog(ctx context.Context, ref string) (string, api.VM, error)
	Agent(ctx context.Context, ref string) (*agentproto.Client, api.VM, error)
	// Session marks an exec or copy session with VM id as open until the
	// returned func is called: an open session keeps the VM from being
	// stopped as idle.
	Session(id string) (done func())
	Ports(ctx context.Context, ref string) ([]api.Port, error)
	Forwards(ctx context.Context, ref string) ([]api.Forward, error)
	AddForward(ctx context.Context, ref string, f api.Forward) (api.Forward, error)
	RemoveForward(ctx context.Context, ref string, hostPort int) error
	SetWorkspace(ctx context.Context, ref, path string) (api.VM, error)
}

func (s *server) routeVMs(mux *http.ServeMux) {
	mux.HandleFunc("GET "+api.PathVMs, s.listVMs)
	mux.HandleFunc("POST "+api.PathVMs, s.createVM)
	mux.HandleFunc("POST "+api.PathVMPrune, s.pruneVMs)
	mux.HandleFunc("GET "+api.PathVM+"{ref}", s.getVM)
	mux.HandleFunc("DELETE "+api.PathVM+"{ref}", s.deleteVM)
	mux.HandleFunc("PATCH "+api.PathVM+"{ref}", s.updateVM)
	mux.HandleFunc("POST "+api.PathVM+"{ref}/{action}", s.vmAction)
	mux.HandleFunc("GET "+api.PathVM+"{ref}/logs", s.vmLogs)
	mux.HandleFunc("GET "+api.PathVM+"{ref}/stats", s.vmStats)
	s.routeCopy(mux)
	mux.HandleFunc("PUT "+api.PathVM+"{ref}/workspace", func(w http.ResponseWriter, r *http.Request) {
		var req api.WorkspaceRequest
		if err := decode(r, &req); err != nil {
			writeError(w, err)
			return
		}
		v, err := s.c.VMs.SetWorkspace(r.Context(), r.PathValue("ref"), req.Path)
		reply(w, v, err)
	})
	mux.HandleFunc("GET "+api.PathVM+"{ref}/ports", func(w http.ResponseWriter, r *http.Request) {
		v, err := s.c.VMs.Ports(r.Context(), r.PathValue("ref"))
		reply(w, v, err)
	})
	mux.HandleFunc("GET "+api.PathVM+"{ref}/forwards", func(w http.ResponseWriter, r *http.Request) {
		v, err := s.c.VMs.Forwards(r.Context(), r.PathValue("ref"))
		reply(w, v, err)
	})
	mux.HandleFunc("POST "+api.PathVM+"{ref}/forwards", func(w http.ResponseWriter, r *http.Request) {
		var f api.Forward
		if err := decode(r, &f); err != nil {
			writeError(w, err)
			return
		}
		v, err := s.c.VMs.AddForward(r.Context(), r.PathValue("ref"), f)
		reply(w, v, err)
	})
	mux.HandleFunc("DELETE "+api.PathVM+"{ref}/forwards/{port}", func(w http.ResponseWriter, r *http.Request) {
		port, err := strconv.Atoi(r.PathValue("port"))
		if err != nil {
			writeError(w, fmt.Errorf("host port %q: %w", r.PathValue("port"), errdefs.ErrInvalidArgument))
			return
		}
		reply(w, struct{}{}, s.c.VMs.RemoveForward(r.Context(), r.PathValue("ref"), port))
	})
}

func (s *server) listVMs(w http.ResponseWriter, r *http.Request) {
	sel, err := api.ParseLabels(r.URL.Query()[api.QueryLabel])
	if err != nil {
		writeError(w, err)
		return
	}
	v, err := s.c.VMs.List(r.Context(), sel)
	if v == nil {
		v = []api.VM{}
	}
	reply(w, v, err)
}

func (s *server) getVM(w http.ResponseWriter, r *http.Request) {
	v, err := s.c.VMs.Get(r.Context(), r.PathValue("ref"))
	reply(w, v, err)
}

func (s *server) createVM(w http.ResponseWriter, r *http.Request) {
	var req api.CreateVMRequest
	if err := decode(r, &req); err != nil {
		writeError(w, err)
		return
	}
	stream(w, r, s.c.Log, func(ctx context.Context, p func(api.Event)) (api.VM, error) {
		return s.c.VMs.Create(ctx, req, p)
	})
}

func (s *server) deleteVM(w http.ResponseWriter, r *http.Request) {
	force := r.URL.Query().Get("force") == "1"
	reply(w, struct{}{}, s.c.VMs.Delete(r.Context(), r.PathValue("ref"), force))
}

func (s *server) updateVM(w http.ResponseWriter, r *http.Request) {
	var req api.UpdateVMRequest
	if err := decode(r, &req); err != nil {
		writeError(w, err)
		return
	}
	v, err := s.c.VMs.Update(r.Context(), r.PathValue("ref"), req)
	reply(w, v, err)
}

func (s *server) pruneVMs(w http.ResponseWriter, r *http.Request) {
	var req api.PruneVMsRequest
	if r.ContentLength != 0 {
		if err := decode(r, &req); err != nil {
			writeError(w, err)
			return
		}
	}
	if err := api.ValidateLabels(req.Labels); err != nil {
		writeError(w, err)
		return
	}
	v, err := s.c.VMs.Prune(r.Context(), req.Labels)
	reply(w, v, err)
}

func (s *server) vmStats(w http.ResponseWriter, r *http.Request) {
	v, err := s.c.VMs.Stats(r.Context(), r.PathValue("ref"))
	reply(w, v, err)
}

func (s *server) vmAction(w http.ResponseWriter, r *http.Request) {
	ref := r.PathValue("ref")
	switch r.PathValue("action") {
	case api.ActionStart:
		stream(w, r, s.c.Log, func(ctx context.Context, p func(api.Event)) (api.VM, error) {
			return s.c.VMs.Start(ctx, ref, p)
		})
	case api.ActionRestart:
		stream(w, r, s.c.Log, func(ctx context.Context, p func(api.Event)) (api.VM, error) {
			return s.c.VMs.Restart(ctx, ref, p)
		})
	case api.ActionStop:
		v, err := s.c.VMs.Stop(r.Context(), ref)
		reply(w, v, err)
	case api.ActionKill:
		v, err := s.c.VMs.Kill(r.Context(), ref)
		reply(w, v, err)
	case api.ActionExec:
		s.exec(w, r, ref)
	default:
		writeError(w, fmt.Errorf("unknown vm action %q: %w", r.PathValue("action"), errdefs.ErrNotFound))
	}
}

// vmLogs sends the console log; with follow=1 it keeps sending what the
// guest prints until the client goes away or the VM stops.
func (s *server) vmLogs(w http.ResponseWriter, r *http.Request) {
	path, v, err := s.c.VMs.ConsoleLog(r.Context(), r.PathValue("ref"))
	if err != nil {
		writeError(w, err)
		return
	}
	f, err := consolelog.OpenReader(path) // follows rotations
	if errors.Is(err, os.ErrNotExist) {
		w.Header().Set("Content-Type", "text/plain")
		return
	}
	if err != nil {
		writeError(w, err)
		return
	}
	defer f.Close()
	w.Header().Set("Content-Type", "text/plain")
	fl, _ := w.(http.Flusher)
	follow := r.URL.Query().Get("follow") == "1"
	buf := make([]byte, 32<<10)
	idle := 0
	for {
		n, err := f.Read(buf)
		if n > 0 {
			w.Write(buf[:n])
			idle = 0
			continue
		}
		if err != nil && err != io.EOF {
			return
		}
		if !follow {
			return
		}
		if fl != nil {
			fl.Flush()
		}
		select {
		case <-r.Context().Done():
			return
		case <-time.After(200 * time.Millisecond):
		}
		// Every few seconds check that the VM still runs.
		if idle++; idle%25 == 0 {
			cur, err := s.c.VMs.Get(r.Context(), v.ID)
			if err != nil || (cur.State != api.VMRunning && cur.State != api.VMPaused) {
				return
			}
		}
	}
}

// exec runs a process in the guest over an upgraded connection carrying
// frames both ways (see api.ExecUpgrade).
func (s *server) exec(w http.ResponseWriter, r *http.Request, ref string) {
	if !strings.EqualFold(r.Header.Get("Upgrade"), api.ExecUpgrade) {
		writeError(w, fmt.Errorf("exec needs an upgraded connection (Upgrade: %s): %w", api.ExecUpgrade, errdefs.ErrInvalidArgument))
		return
	}
	var req api.ExecRequest
	if err := decode(r, &req); err != nil {
		writeError(w, err)
		return
	}
	if len(req.Argv) == 0 {
		writeError(w, fmt.Errorf("exec: no command given: %w", errdefs.ErrInvalidArgument))
		return
	}
	ac, v, err := s.c.VMs.Agent(r.Context(), ref)
	if err != nil {
		writeError(w, err)
		return
	}
	defer s.c.VMs.Session(v.ID)()
	hj, ok := w.(http.Hijacker)
	if !ok {
		writeError(w, errors.New("exec: connection cannot be upgraded"))
		return
	}
	conn, brw, err := hj.Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	conn.SetDeadline(time.Time{})
	fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: %s\r\nConnection: Upgrade\r\n%s: %s\r\n\r\n", api.ExecUpgrade, api.HeaderVersion, s.c.Version.APIVersion)
	if err := brw.Flush(); err != nil {
		return
	}
	fw := &frameWriter{w: conn}
	stdinR, stdinW := io.Pipe()
	// The session outlives the HTTP request's context, which ended with
	// the hijack.
	ctx, cancel := context.WithCancel(context.WithoutCancel(r.Context()))
	defer cancel()
	proc, err := ac.Start(ctx, vm.ExecDefaults(v, req), agentproto.ExecIO{
		Stdin:  stdinR,
		Stdout: fw.stream(api.FrameStdout),
		Stderr: fw.stream(api.FrameStderr),
	})
	if err != nil {
		fw.send(api.FrameError, mustJSON(api.ErrorFrom(err)))
		return
	}
	go func() {
		// A client that goes away hangs up the process, as ssh does.
		err := readFrames(brw.Reader, stdinW, proc)
		if err != nil {
			proc.Signal(syscall.SIGHUP)
			stdinW.CloseWithError(err)
		}
	}()
	st, err := proc.Wait()
	if err != nil {
		fw.send(api.FrameError, mustJSON(api.ErrorFrom(err)))
		return
	}
	fw.send(api.FrameExit, mustJSON(api.ExitStatus{Code: st.Code, Signal: st.Signal}))
}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

// readFrames feeds client frames to the process until stdin ends or the
// connection drops; it returns nil only when the client closed stdin and
// then the connection cleanly.
func readFrames(r *bufio.Reader, stdin *io.PipeWriter, proc *agentproto.Process) error {
	for {
		typ, payload, err := api.ReadFrame(r)
		if err != nil {
			return err
		}
		switch typ {
		case api.FrameStdin:
			if _, err := stdin.Write(payload); err != nil {
				// The process no longer reads stdin; keep serving
				// resizes and signals.
				continue
			}
		case api.FrameStdinEOF:
			stdin.Close()
		case api.FrameResize:
			var sz struct{ Rows, Cols uint16 }
			if json.Unmarshal(payload, &sz) == nil {
				proc.Resize(sz.Rows, sz.Cols)
			}
		case api.FrameSignal:
			var sig struct{ Signal int }
			if json.Unmarshal(payload, &sig) == nil && sig.Signal > 0 && sig.Signal < 65 {
				proc.Signal(syscall.Signal(sig.Signal))
			}
		}
	}
}

type frameWriter struct {
	mu sync.Mutex
	w  net.Conn
}

func (f *frameWriter) send(typ byte, b []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return api.WriteFrame(f.w, typ, b)
}

type streamWriter struct {
	f   *frameWriter
	typ byte
}

func (s streamWriter) Write(p []byte) (int, error) {
	if err := s.f.send(s.typ, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (f *frameWriter) stream(typ byte) io.Writer { return streamWriter{f: f, typ: typ} }
