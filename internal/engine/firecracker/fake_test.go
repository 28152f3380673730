package firecracker

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// fakeFC is a fake Firecracker API: every request and answer is checked
// against testdata/firecracker.yaml, and Firecracker's documented rules are
// enforced (pre-boot resources refused after InstanceStart, InstanceStart
// needs a boot source, at most one root drive, logger and drive files must
// exist). Errors are answered as Firecracker does: 400 with
// {"fault_message": ...}.
type fakeFC struct {
	spec *apiSpec

	mu         sync.Mutex
	started    bool
	paused     bool
	configured bool // a boot resource was set: /snapshot/load is refused
	memMiB     int
	bootSource bool
	rootDrive  string
	udsPath    string
	nics       map[string]string    // iface_id → host_dev_name
	faults     map[string]fakeFault // "PUT /drives/vda" → injected answer
	violations []string
	reqLog     []string // "METHOD PATH BODY"

	onStart       func(udsPath string, nics map[string]string)
	onCtrlAltDel  func()
	onLoadFailed  func()
	onRequestLine func(line string)
}

type fakeFault struct {
	status int
	msg    string
}

// parseFaults reads "PUT /drives/vda=400=Invalid block device path;...".
func parseFaults(s string) map[string]fakeFault {
	m := map[string]fakeFault{}
	for _, f := range strings.Split(s, ";") {
		parts := strings.SplitN(f, "=", 3)
		if len(parts) != 3 {
			continue
		}
		var st int
		fmt.Sscan(parts[1], &st)
		m[parts[0]] = fakeFault{st, parts[2]}
	}
	return m
}

// fakeLog is the logger's file, held open as Firecracker does.
var fakeLog *os.File

var preBoot = []string{"/logger", "/metrics", "/machine-config", "/boot-source", "/drives/", "/network-interfaces/", "/vsock"}

func (f *fakeFC) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	defer f.mu.Unlock()
	line := fmt.Sprintf("%s %s %s", r.Method, r.URL.Path, strings.TrimSpace(string(body)))
	f.reqLog = append(f.reqLog, line)
	if f.onRequestLine != nil {
		f.onRequestLine(line)
	}
	reply := func(status int, v any) {
		var b []byte
		if v != nil {
			b, _ = json.Marshal(v)
		}
		if err := f.spec.validateResponse(r.Method, r.URL.Path, status, b); err != nil {
			f.violations = append(f.violations, "fake answer: "+err.Error())
		}
		if b != nil {
			w.Header().Set("Content-Type", "application/json")
		}
		w.WriteHeader(status)
		w.Write(b)
	}
	fault := func(msg string) { reply(http.StatusBadRequest, map[string]string{"fault_message": msg}) }

	if err := f.spec.validateRequest(r.Method, r.URL.Path, body); err != nil {
		f.violations = append(f.violations, err.Error())
		fault("contract violation: " + err.Error())
		return
	}
	if ft, ok := f.faults[r.Method+" "+r.URL.Path]; ok {
		reply(ft.status, map[string]string{"fault_message": ft.msg})
		return
	}
	var m map[string]any
	json.Unmarshal(body, &m)
	str := func(k string) string { s, _ := m[k].(string); return s }

	if r.Method == http.MethodGet && r.URL.Path == "/" {
		state := "Not started"
		if f.started {
			state = "Running"
		}
		if f.paused {
			state = "Paused"
		}
		reply(200, map[string]string{"app_name": "Firecracker", "id": "anonymous-instance", "state": state, "vmm_version": "1.12.0"})
		return
	}
	if r.Method == http.MethodPut {
		for _, p := range preBoot {
			if f.started && (r.URL.Path == p || strings.HasSuffix(p, "/") && strings.HasPrefix(r.URL.Path, p)) {
				fault("The requested operation is not supported after starting the microVM.")
				return
			}
		}
		if r.URL.Path != "/logger" && r.URL.Path != "/metrics" && !strings.HasPrefix(r.URL.Path, "/snapshot/") {
			f.configured = true
		}
	}
	switch {
	case r.URL.Path == "/logger":
		// As Firecracker opens it: no create, non-blocking (a named pipe
		// of banger's, drained into the capped log).
		lf, err := os.OpenFile(str("log_path"), os.O_RDWR|syscall.O_NONBLOCK, 0)
		if err != nil {
			fault(fmt.Sprintf("Logger error: Failed to open target file: %v", err))
			return
		}
		fmt.Fprintln(lf, "fake firecracker: logger configured")
		fakeLog = lf
	case r.URL.Path == "/metrics":
		if _, err := os.Stat(str("metrics_path")); err != nil {
			fault(fmt.Sprintf("Metrics error: Failed to open target file: %v", err))
			return
		}
	case r.URL.Path == "/boot-source":
		if _, err := os.Stat(str("kernel_image_path")); err != nil {
			fault("Cannot load kernel due to invalid memory configuration or invalid kernel image: " + err.Error())
			return
		}
		if p := str("initrd_path"); p != "" {
			if _, err := os.Stat(p); err != nil {
				fault("Invalid initrd path: " + err.Error())
				return
			}
		}
		f.bootSource = true
	case strings.HasPrefix(r.URL.Path, "/drives/"):
		id := strings.TrimPrefix(r.URL.Path, "/drives/")
		if str("drive_id") != id {
			fault("The id from the path does not match the id from the body!")
			return
		}
		if _, err := os.Stat(str("path_on_host")); err != nil {
			fault("Unable to create the block device: " + err.Error())
			return
		}
		if root, _ := m["is_root_device"].(bool); root {
			if f.rootDrive != "" && f.rootDrive != id {
				fault("A root block device already exists!")
				return
			}
			f.rootDrive = id
		}
	case strings.HasPrefix(r.URL.Path, "/network-interfaces/"):
		if str("iface_id") != strings.TrimPrefix(r.URL.Path, "/network-interfaces/") {
			fault("The id from the path does not match the id from the body!")
			return
		}
		if f.nics == nil {
			f.nics = map[string]string{}
		}
		f.nics[str("iface_id")] = str("host_dev_name")
	case r.URL.Path == "/machine-config":
		n, _ := m["mem_size_mib"].(float64)
		f.memMiB = int(n)
	case r.URL.Path == "/vsock":
		f.udsPath = str("uds_path")
	case r.URL.Path == "/vm":
		if !f.started {
			fault("The requested operation is not supported before starting the microVM.")
			return
		}
		f.paused = str("state") == "Paused"
	case r.URL.Path == "/snapshot/create":
		if !f.started || !f.paused {
			fault("Create snapshot error: the microVM is not paused.")
			return
		}
		if err := f.createSnapshot(str("snapshot_path"), str("mem_file_path")); err != nil {
			fault("Create snapshot error: " + err.Error())
			return
		}
	case r.URL.Path == "/snapshot/load":
		if f.started || f.configured {
			fault("Loading a microVM snapshot not allowed after configuring boot-specific resources.")
			return
		}
		mb, _ := m["mem_backend"].(map[string]any)
		path, _ := mb["backend_path"].(string)
		var overrides map[string]string
		if o, ok := m["network_overrides"].([]any); ok {
			overrides = map[string]string{}
			for _, e := range o {
				e, _ := e.(map[string]any)
				id, _ := e["iface_id"].(string)
				dev, _ := e["host_dev_name"].(string)
				overrides[id] = dev
			}
		}
		uds, nics, err := loadFakeSnapshot(str("snapshot_path"), path, overrides)
		if err != nil {
			// Firecracker ends the process after a failed load.
			if f.onLoadFailed != nil {
				defer f.onLoadFailed()
			}
			fault("Load snapshot error: " + err.Error())
			return
		}
		f.started = true
		f.paused = m["resume_vm"] != true
		if f.onStart != nil {
			f.onStart(uds, nics)
		}
	case r.URL.Path == "/actions":
		switch str("action_type") {
		case "InstanceStart":
			if f.started {
				fault("The requested operation is not supported after starting the microVM.")
				return
			}
			if !f.bootSource {
				fault("Cannot start microvm without kernel configuration.")
				return
			}
			f.started = true
			if f.onStart != nil {
				f.onStart(f.udsPath, f.nics)
			}
		case "SendCtrlAltDel":
			if !f.started {
				fault("The requested operation is not supported before starting the microVM.")
				return
			}
			if f.onCtrlAltDel != nil {
				defer f.onCtrlAltDel()
			}
		}
	}
	reply(http.StatusNoContent, nil)
}

// fakeSnapshot is the fake's microVM state file.
type fakeSnapshot struct {
	Fake    string            `json:"fake_firecracker_snapshot"`
	UDSPath string            `json:"uds_path"`
	MemMiB  int               `json:"mem_mib"`
	NICs    map[string]string `json:"nics,omitempty"`
}

// createSnapshot writes the state file and a memory file of the
// machine's size, as Firecracker does.
func (f *fakeFC) createSnapshot(state, mem string) error {
	b, _ := json.Marshal(fakeSnapshot{Fake: "v1", UDSPath: f.udsPath, MemMiB: f.memMiB, NICs: f.nics})
	if err := os.WriteFile(state, b, 0o600); err != nil {
		return err
	}
	mf, err := os.Create(mem)
	if err != nil {
		return err
	}
	defer mf.Close()
	if _, err := mf.WriteString("guest memory"); err != nil {
		return err
	}
	return mf.Truncate(int64(f.memMiB) << 20)
}

// loadFakeSnapshot checks a state file and memory file createSnapshot
// wrote and returns the vsock socket and the NICs' taps the snapshot
// names, with overrides (iface_id → host_dev_name) applied; an override
// of an interface the snapshot lacks is refused, as Firecracker does.
func loadFakeSnapshot(state, mem string, overrides map[string]string) (string, map[string]string, error) {
	b, err := os.ReadFile(state)
	if err != nil {
		return "", nil, err
	}
	var s fakeSnapshot
	if err := json.Unmarshal(b, &s); err != nil || s.Fake != "v1" {
		return "", nil, fmt.Errorf("invalid snapshot state file %s (CRC mismatch)", state)
	}
	st, err := os.Stat(mem)
	if err != nil {
		return "", nil, fmt.Errorf("cannot open the memory file: %w", err)
	}
	if st.Size() != int64(s.MemMiB)<<20 {
		return "", nil, fmt.Errorf("memory file %s is %d bytes, the snapshot has %d MiB", mem, st.Size(), s.MemMiB)
	}
	for id, dev := range overrides {
		if _, ok := s.NICs[id]; !ok {
			return "", nil, fmt.Errorf("invalid network override: the snapshot has no network interface %q", id)
		}
		s.NICs[id] = dev
	}
	return s.UDSPath, s.NICs, nil
}

// serveFakeVsock listens on uds like Firecracker's vsock device with a
// guest echo server on port 1024.
func serveFakeVsock(uds string) (net.Listener, error) {
	l, err := net.Listen("unix", uds)
	if err != nil {
		return nil, err
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				line, err := br.ReadString('\n')
				if err != nil || line != "CONNECT 1024\n" {
					return // nothing listens there: Firecracker hangs up
				}
				fmt.Fprint(c, "OK 1073741824\n")
				io.Copy(c, br)
			}()
		}
	}()
	return l, nil
}

// TestMain turns the test binary into a fake firecracker when
// BANGER_FAKE_FC=1 (the engine runs it through a symlink named
// "firecracker").
func TestMain(m *testing.M) {
	if os.Getenv("BANGER_FAKE_FC") == "1" {
		os.Exit(fakeMain(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// fakeMain is the fake firecracker program. Environment:
// BANGER_FAKE_FC_VERSION (default 1.12.0), BANGER_FAKE_FC_FAULTS (see
// parseFaults), BANGER_FAKE_FC_LOG (request log, one line per request;
// contract violations as "VIOLATION ..."), BANGER_FAKE_FC_IGNORE_CAD=1 (the
// guest ignores Ctrl+Alt+Del).
func fakeMain(args []string) int {
	ver := os.Getenv("BANGER_FAKE_FC_VERSION")
	if ver == "" {
		ver = "1.12.0"
	}
	var sock string
	for i, a := range args {
		switch {
		case a == "--version":
			fmt.Printf("Firecracker v%s\n\n", ver)
			return 0
		case a == "--api-sock" && i+1 < len(args):
			sock = args[i+1]
		case strings.HasPrefix(a, "--api-sock="):
			sock = strings.TrimPrefix(a, "--api-sock=")
		}
	}
	if sock == "" {
		fmt.Fprintln(os.Stderr, "fake firecracker: no --api-sock")
		return 1
	}
	spec, err := loadSpec(specPath())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	var logMu sync.Mutex
	logLine := func(s string) {
		p := os.Getenv("BANGER_FAKE_FC_LOG")
		if p == "" {
			return
		}
		logMu.Lock()
		defer logMu.Unlock()
		lf, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err == nil {
			fmt.Fprintln(lf, s)
			lf.Close()
		}
	}
	f := &fakeFC{spec: spec, faults: parseFaults(os.Getenv("BANGER_FAKE_FC_FAULTS"))}
	nv := 0
	f.onRequestLine = func(line string) {
		logLine(line)
	}
	f.onStart = func(uds string, nics map[string]string) {
		fmt.Println("fake guest: booting") // the serial console
		for id, dev := range nics {
			fmt.Printf("fake guest: nic %s on tap %s\n", id, dev)
		}
		if uds != "" {
			if _, err := serveFakeVsock(uds); err != nil {
				fmt.Fprintln(os.Stderr, "fake vsock:", err)
			}
		}
	}
	f.onLoadFailed = func() {
		go func() {
			time.Sleep(50 * time.Millisecond)
			os.Exit(1)
		}()
	}
	f.onCtrlAltDel = func() {
		if os.Getenv("BANGER_FAKE_FC_IGNORE_CAD") == "1" {
			return
		}
		go func() {
			time.Sleep(50 * time.Millisecond)
			os.Exit(0)
		}()
	}
	l, err := net.Listen("unix", sock)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.ServeHTTP(w, r)
		f.mu.Lock()
		for ; nv < len(f.violations); nv++ {
			logLine("VIOLATION " + f.violations[nv])
		}
		f.mu.Unlock()
	})}
	srv.Serve(l)
	return 1
}
