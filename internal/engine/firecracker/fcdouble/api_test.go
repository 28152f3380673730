package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bangervm/banger/internal/engine"
)

// fakeMachine records what the API asks of the guest.
type fakeMachine struct {
	mu       sync.Mutex
	plans    []bootPlan
	ctrlAlt  int
	agent    string
	startErr error
	restored []bootPlan
}

func (f *fakeMachine) Start(p bootPlan) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.startErr != nil {
		return f.startErr
	}
	f.plans = append(f.plans, p)
	return nil
}

func (f *fakeMachine) CtrlAltDel() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ctrlAlt++
	return nil
}

func (f *fakeMachine) Pause() error  { return nil }
func (f *fakeMachine) Resume() error { return nil }
func (f *fakeMachine) Abort()        {}
func (f *fakeMachine) Snapshot(state, mem string, header []byte) error {
	return errors.New("fake machine: no snapshots")
}
func (f *fakeMachine) Restore(p bootPlan, state, mem string, offset int64, resume bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.restored = append(f.restored, p)
	return nil
}

func (f *fakeMachine) AgentSocket() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.plans) == 0 {
		return ""
	}
	return f.agent
}

// shortDir is a temporary directory with a path short enough for unix
// sockets.
func shortDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "fcdt")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

type apiClient struct {
	t   *testing.T
	c   *http.Client
	vmm *vmm
	dir string
}

// newAPI serves a vmm with a fake machine on a unix socket, as the double
// does.
func newAPI(t *testing.T, m machine) *apiClient {
	t.Helper()
	dir := shortDir(t)
	sock := filepath.Join(dir, "api.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	v := newVMM(defaultID, &logger{id: defaultID, level: 3, w: io.Discard}, m)
	srv := &http.Server{Handler: v}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close(); v.close() })
	c := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		},
	}}
	return &apiClient{t: t, c: c, vmm: v, dir: dir}
}

// do sends a request and returns the status and body.
func (a *apiClient) do(method, path, body string) (int, string) {
	a.t.Helper()
	req, err := http.NewRequest(method, "http://localhost"+path, strings.NewReader(body))
	if err != nil {
		a.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := a.c.Do(req)
	if err != nil {
		a.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusBadRequest && resp.Header.Get("Content-Type") != "application/json" {
		a.t.Errorf("%s %s: 400 with Content-Type %q", method, path, resp.Header.Get("Content-Type"))
	}
	return resp.StatusCode, string(b)
}

// put expects 204 No Content with an empty body.
func (a *apiClient) put(path, body string) {
	a.t.Helper()
	code, b := a.do("PUT", path, body)
	if code != http.StatusNoContent || b != "" {
		a.t.Fatalf("PUT %s %s: %d %s, want 204", path, body, code, b)
	}
}

// fault expects 400 with a fault_message (only) containing want.
func (a *apiClient) fault(method, path, body, want string) {
	a.t.Helper()
	code, b := a.do(method, path, body)
	if code != http.StatusBadRequest {
		a.t.Fatalf("%s %s %s: %d %s, want 400", method, path, body, code, b)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(b), &m); err != nil {
		a.t.Fatalf("%s %s: fault body %q: %v", method, path, b, err)
	}
	msg, ok := m["fault_message"].(string)
	if !ok || len(m) != 1 {
		a.t.Fatalf("%s %s: fault body %q: want exactly {\"fault_message\": string}", method, path, b)
	}
	if !strings.Contains(msg, want) {
		a.t.Fatalf("%s %s %s: fault_message %q, want it to contain %q", method, path, body, msg, want)
	}
}

func (a *apiClient) getJSON(path string, v any) {
	a.t.Helper()
	code, b := a.do("GET", path, "")
	if code != http.StatusOK {
		a.t.Fatalf("GET %s: %d %s", path, code, b)
	}
	if err := json.Unmarshal([]byte(b), v); err != nil {
		a.t.Fatalf("GET %s: %q: %v", path, b, err)
	}
}

// files creates empty files (kernel, initrd, disks) in the test dir.
func (a *apiClient) files(names ...string) map[string]string {
	m := map[string]string{}
	for _, n := range names {
		p := filepath.Join(a.dir, n)
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			a.t.Fatal(err)
		}
		m[n] = p
	}
	return m
}

func q(s string) string { b, _ := json.Marshal(s); return string(b) }

func TestVersionFlag(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"--version"}, &out, &errb); code != 0 {
		t.Fatalf("--version: exit %d, stderr %q", code, errb.String())
	}
	if got := out.String(); got != "Firecracker v"+Version+"\n" {
		t.Fatalf("--version printed %q", got)
	}
	if !strings.HasPrefix(out.String(), "Firecracker v1.") {
		t.Fatal("version must look like Firecracker's")
	}
}

func TestParseArgs(t *testing.T) {
	o, err := parseArgs([]string{"--api-sock", "/tmp/a.sock", "--id=vm-1", "--seccomp-level", "0",
		"--boot-timer", "--log-path", "/tmp/log", "--level", "Debug", "--show-level", "--http-api-max-payload-size=1000"})
	if err != nil {
		t.Fatal(err)
	}
	if o.apiSock != "/tmp/a.sock" || o.id != "vm-1" || o.logPath != "/tmp/log" || o.level != "Debug" || o.version {
		t.Fatalf("parsed %+v", o)
	}
	if o, _ := parseArgs(nil); o.apiSock != defaultAPISock || o.id != defaultID {
		t.Fatalf("defaults: %+v", o)
	}
	if _, err := parseArgs([]string{"--api-sock"}); err == nil {
		t.Fatal("--api-sock without a value accepted")
	}
	var out, errb bytes.Buffer
	if code := run([]string{"--id", "bad id!", "--api-sock", "/nonexistent/x.sock"}, &out, &errb); code == 0 {
		t.Fatal("invalid --id accepted")
	}
}

func TestInstanceInfoAndVersion(t *testing.T) {
	a := newAPI(t, &fakeMachine{})
	var info map[string]string
	a.getJSON("/", &info)
	want := map[string]string{"id": defaultID, "state": "Not started", "vmm_version": Version, "app_name": "Firecracker"}
	for k, v := range want {
		if info[k] != v {
			t.Errorf("GET /: %s = %q, want %q", k, info[k], v)
		}
	}
	var ver map[string]string
	a.getJSON("/version", &ver)
	if ver["firecracker_version"] != Version {
		t.Errorf("GET /version: %v", ver)
	}
}

func TestMachineConfig(t *testing.T) {
	a := newAPI(t, &fakeMachine{})
	var mc map[string]any
	a.getJSON("/machine-config", &mc)
	if mc["vcpu_count"] != 1.0 || mc["mem_size_mib"] != 128.0 || mc["smt"] != false {
		t.Fatalf("default machine-config: %v", mc)
	}
	a.put("/machine-config", `{"vcpu_count": 2, "mem_size_mib": 256}`)
	a.getJSON("/machine-config", &mc)
	if mc["vcpu_count"] != 2.0 || mc["mem_size_mib"] != 256.0 {
		t.Fatalf("machine-config after PUT: %v", mc)
	}
	a.fault("PUT", "/machine-config", `{"vcpu_count": 2}`, "missing field `mem_size_mib`")
	a.fault("PUT", "/machine-config", `{"mem_size_mib": 256}`, "missing field `vcpu_count`")
	a.fault("PUT", "/machine-config", `{"vcpu_count": 0, "mem_size_mib": 256}`, "vCPU number is invalid")
	a.fault("PUT", "/machine-config", `{"vcpu_count": 33, "mem_size_mib": 256}`, "vCPU number is invalid")
	a.fault("PUT", "/machine-config", `{"vcpu_count": 3, "mem_size_mib": 256, "smt": true}`, "vCPU number is invalid")
	a.fault("PUT", "/machine-config", `{"vcpu_count": 1, "mem_size_mib": 0}`, "memory size")
	a.fault("PUT", "/machine-config", `{"vcpu_count": "2", "mem_size_mib": 256}`, "vcpu_count")
	a.fault("PUT", "/machine-config", `{"vcpu_count": 1, "mem_size_mib": 256, "huge_pages": "1G"}`, "unknown variant `1G`")
	// A failed PUT leaves the configuration alone.
	a.getJSON("/machine-config", &mc)
	if mc["vcpu_count"] != 2.0 || mc["mem_size_mib"] != 256.0 {
		t.Fatalf("machine-config after failed PUTs: %v", mc)
	}
}

func TestBodyValidation(t *testing.T) {
	a := newAPI(t, &fakeMachine{})
	f := a.files("vmlinux", "disk")
	cases := []struct{ path, body, want string }{
		{"/boot-source", `{"kernel_image_path": ` + q(f["vmlinux"]) + `, "foo": 1}`, "unknown field `foo`"},
		{"/boot-source", `{"boot_args": "console=ttyS0"}`, "missing field `kernel_image_path`"},
		{"/boot-source", `{"kernel_image_path": 5}`, "kernel_image_path"},
		{"/boot-source", `{"kernel_image_path": "/nonexistent/vmlinux"}`, "kernel file cannot be opened"},
		{"/boot-source", `{"kernel_image_path": ` + q(f["vmlinux"]) + `, "initrd_path": "/nonexistent"}`, "initrd file cannot be opened"},
		{"/boot-source", ``, "Empty PUT request."},
		{"/boot-source", `{"kernel_image_path": ` + q(f["vmlinux"]) + `} {}`, "trailing characters"},
		{"/boot-source", `[1]`, "deserializing"},
		{"/drives/rootfs", `{"drive_id": "rootfs", "path_on_host": ` + q(f["disk"]) + `}`, "missing field `is_root_device`"},
		{"/drives/rootfs", `{"drive_id": "other", "path_on_host": ` + q(f["disk"]) + `, "is_root_device": true}`, errIDMismatch},
		{"/drives/rootfs", `{"drive_id": "rootfs", "path_on_host": ` + q(f["disk"]) + `, "is_root_device": "yes"}`, "is_root_device"},
		{"/drives/rootfs", `{"drive_id": "rootfs", "path_on_host": "/nonexistent", "is_root_device": true}`, "Unable to create the block device"},
		{"/drives/rootfs", `{"drive_id": "rootfs", "path_on_host": ` + q(f["disk"]) + `, "is_root_device": true, "cache_type": "Fast"}`, "unknown variant"},
		{"/drives/rootfs", `{"drive_id": "rootfs", "path_on_host": ` + q(f["disk"]) + `, "is_root_device": true, "rate_limiter": {"bandwidth": {"size": 1}}}`, "missing field `refill_time`"},
		{"/drives/rootfs", `{"drive_id": "rootfs", "path_on_host": ` + q(f["disk"]) + `, "is_root_device": true, "rate_limiter": {"bw": {}}}`, "unknown field `bw`"},
		{"/network-interfaces/eth0", `{"iface_id": "eth0"}`, "missing field `host_dev_name`"},
		{"/network-interfaces/eth0", `{"iface_id": "eth1", "host_dev_name": "tap0"}`, errIDMismatch},
		{"/network-interfaces/eth0", `{"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "zz"}`, "invalid MAC"},
		{"/vsock", `{"uds_path": "/tmp/x"}`, "missing field `guest_cid`"},
		{"/vsock", `{"guest_cid": 3}`, "missing field `uds_path`"},
		{"/vsock", `{"guest_cid": 2, "uds_path": "/tmp/x"}`, "guest CID"},
		{"/actions", `{}`, "missing field `action_type`"},
		{"/actions", `{"action_type": "Reboot"}`, "unknown variant `Reboot`"},
		{"/actions", `{"action_type": "InstanceStart", "payload": {}}`, "unknown field `payload`"},
		{"/metrics", `{}`, "missing field `metrics_path`"},
		{"/logger", `{"level": "Loud"}`, "Invalid log level"},
		{"/logger", `{"log_path": "/nonexistent/log"}`, "Cannot initialize logging system"},
	}
	for _, c := range cases {
		a.fault("PUT", c.path, c.body, c.want)
	}
	// Paths and methods the double does not serve.
	a.fault("GET", "/nonexistent", "", "Invalid request method and/or path: GET /nonexistent.")
	a.fault("DELETE", "/drives/rootfs", "", "Invalid request method and/or path")
	a.fault("PUT", "/drives", `{}`, "Invalid request method and/or path")
	a.fault("PUT", "/drives/a/b", `{}`, "Invalid request method and/or path")
	a.fault("PUT", "/balloon", `{}`, "Invalid request method and/or path")
	big := `{"kernel_image_path": "` + strings.Repeat("x", maxPayload) + `"}`
	a.fault("PUT", "/boot-source", big, "larger than the limit")
}

func TestStartRules(t *testing.T) {
	m := &fakeMachine{}
	a := newAPI(t, m)
	f := a.files("vmlinux", "initrd", "root.ext4", "data.ext4", "scratch.ext4")

	// Actions that need a running VM, and a start without a kernel.
	a.fault("PUT", "/actions", `{"action_type": "SendCtrlAltDel"}`, errPreBoot)
	a.fault("PUT", "/actions", `{"action_type": "InstanceStart"}`, errNoKernel)
	a.fault("PUT", "/actions", `{"action_type": "FlushMetrics"}`, "not initialized")

	// Configure in any order, as Firecracker allows pre-boot.
	a.put("/drives/data", `{"drive_id": "data", "path_on_host": `+q(f["data.ext4"])+`, "is_root_device": false, "is_read_only": true}`)
	logFile := a.files("fc.log")["fc.log"]
	a.put("/logger", `{"level": "Debug", "log_path": `+q(logFile)+`, "show_level": true}`)
	a.put("/drives/rootfs", `{"drive_id": "rootfs", "path_on_host": `+q(f["root.ext4"])+`, "is_root_device": true, "is_read_only": false}`)
	a.fault("PUT", "/drives/other-root", `{"drive_id": "other-root", "path_on_host": `+q(f["root.ext4"])+`, "is_root_device": true}`, errRootExists)
	a.put("/drives/scratch", `{"drive_id": "scratch", "path_on_host": `+q(f["scratch.ext4"])+`, "is_root_device": false, "cache_type": "Writeback", "io_engine": "Sync"}`)
	a.put("/boot-source", `{"kernel_image_path": `+q(f["vmlinux"])+`, "initrd_path": `+q(f["initrd"])+`, "boot_args": "console=ttyS0 reboot=k"}`)
	a.put("/machine-config", `{"vcpu_count": 2, "mem_size_mib": 512, "smt": false}`)
	a.put("/network-interfaces/eth0", `{"iface_id": "eth0", "host_dev_name": "tap7", "guest_mac": "06:00:AC:10:00:02"}`)
	a.fault("PUT", "/network-interfaces/eth1", `{"iface_id": "eth1", "host_dev_name": "tap7"}`, "already in use")
	uds := filepath.Join(a.dir, "v.sock")
	a.put("/vsock", `{"guest_cid": 3, "uds_path": `+q(uds)+`}`)
	if _, err := os.Stat(uds); err != nil {
		t.Fatalf("uds_path not bound at PUT /vsock: %v", err)
	}
	metrics := a.files("metrics.json")["metrics.json"]
	a.put("/metrics", `{"metrics_path": `+q(metrics)+`}`)
	a.fault("PUT", "/metrics", `{"metrics_path": `+q(metrics)+`}`, errMetricsAgain)
	a.put("/actions", `{"action_type": "FlushMetrics"}`)
	if b, _ := os.ReadFile(metrics); !bytes.Contains(b, []byte("utc_timestamp_ms")) {
		t.Errorf("FlushMetrics wrote %q", b)
	}

	a.put("/actions", `{"action_type": "InstanceStart"}`)
	var info map[string]string
	a.getJSON("/", &info)
	if info["state"] != "Running" {
		t.Fatalf("state after InstanceStart: %q", info["state"])
	}
	if len(m.plans) != 1 {
		t.Fatalf("machine started %d times", len(m.plans))
	}
	p := m.plans[0]
	var ids []string
	for _, d := range p.Drives {
		ids = append(ids, d.ID)
	}
	if !slices.Equal(ids, []string{"rootfs", "data", "scratch"}) {
		t.Errorf("drive order %v, want the root device first, then the order added", ids)
	}
	if !p.Drives[1].ReadOnly || p.Drives[0].ReadOnly {
		t.Errorf("read-only flags: %+v", p.Drives)
	}
	if p.BootArgs != "console=ttyS0 reboot=k root=/dev/vda rw" {
		t.Errorf("boot args %q", p.BootArgs)
	}
	if p.Kernel != f["vmlinux"] || p.Initrd != f["initrd"] || p.VCPU != 2 || p.MemMiB != 512 || !p.Vsock {
		t.Errorf("plan %+v", p)
	}
	if p.Net == nil || p.Net.HostDev != "tap7" || p.Net.MAC != "06:00:ac:10:00:02" {
		t.Errorf("net %+v", p.Net)
	}

	// After InstanceStart, every pre-boot resource is refused.
	for _, c := range []struct{ path, body string }{
		{"/boot-source", `{"kernel_image_path": ` + q(f["vmlinux"]) + `}`},
		{"/machine-config", `{"vcpu_count": 1, "mem_size_mib": 128}`},
		{"/drives/rootfs", `{"drive_id": "rootfs", "path_on_host": ` + q(f["root.ext4"]) + `, "is_root_device": true}`},
		{"/network-interfaces/eth0", `{"iface_id": "eth0", "host_dev_name": "tap7"}`},
		{"/vsock", `{"guest_cid": 4, "uds_path": ` + q(uds) + `}`},
		{"/logger", `{"level": "Info"}`},
		{"/metrics", `{"metrics_path": ` + q(metrics) + `}`},
		{"/actions", `{"action_type": "InstanceStart"}`},
	} {
		a.fault("PUT", c.path, c.body, errPostBoot)
	}
	// Bad bodies are still 400 after start (validation comes first).
	a.fault("PUT", "/machine-config", `{"bogus": 1}`, "unknown field `bogus`")

	a.put("/actions", `{"action_type": "SendCtrlAltDel"}`)
	if m.ctrlAlt != 1 {
		t.Errorf("SendCtrlAltDel reached the machine %d times", m.ctrlAlt)
	}
	var mc map[string]any
	a.getJSON("/machine-config", &mc)
	if mc["vcpu_count"] != 2.0 {
		t.Errorf("GET /machine-config after start: %v", mc)
	}
	if b, _ := os.ReadFile(logFile); !bytes.Contains(b, []byte(errPostBoot)) {
		t.Errorf("PUT /logger's log_path did not get the log: %q", b)
	}
}

func TestDefaultBootArgsAndStartError(t *testing.T) {
	m := &fakeMachine{startErr: io.ErrUnexpectedEOF}
	a := newAPI(t, m)
	f := a.files("vmlinux", "ro.ext4")
	a.put("/boot-source", `{"kernel_image_path": `+q(f["vmlinux"])+`}`)
	a.put("/drives/root", `{"drive_id": "root", "path_on_host": `+q(f["ro.ext4"])+`, "is_root_device": true, "is_read_only": true, "partuuid": "abcd-01"}`)
	a.fault("PUT", "/actions", `{"action_type": "InstanceStart"}`, "Start microvm error: unexpected EOF")
	var info map[string]string
	a.getJSON("/", &info)
	if info["state"] != "Not started" {
		t.Fatalf("state after a failed start: %q", info["state"])
	}
	m.startErr = nil
	a.put("/actions", `{"action_type": "InstanceStart"}`)
	if got, want := m.plans[0].BootArgs, defaultBootArgs+" root=PARTUUID=abcd-01 ro"; got != want {
		t.Errorf("boot args %q, want %q", got, want)
	}
	if m.plans[0].Vsock || m.plans[0].Net != nil {
		t.Errorf("plan has devices that were not configured: %+v", m.plans[0])
	}
}

// echoAgent stands in for QEMU's agent socket: it echoes what it reads.
func echoAgent(t *testing.T, path string) {
	t.Helper()
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
}

// vsockConnect dials uds_path and sends CONNECT port; it returns the
// connection and the reply line ("" when the double closed it).
func vsockConnect(t *testing.T, uds string, port int) (net.Conn, *bufio.Reader, string) {
	t.Helper()
	c, err := net.Dial("unix", uds)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "CONNECT "+itoa(port)+"\n"); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(c)
	line, _ := r.ReadString('\n')
	return c, r, line
}

func itoa(i int) string { b, _ := json.Marshal(i); return string(b) }

func TestVsockBridge(t *testing.T) {
	m := &fakeMachine{}
	a := newAPI(t, m)
	m.agent = filepath.Join(a.dir, "agent.sock")
	echoAgent(t, m.agent)
	f := a.files("vmlinux", "taken.sock")
	uds := filepath.Join(a.dir, "v.sock")

	a.fault("PUT", "/vsock", `{"guest_cid": 3, "uds_path": `+q(f["taken.sock"])+`}`, "Error binding to the host-side Unix socket")
	a.put("/vsock", `{"guest_cid": 3, "uds_path": `+q(uds)+`}`)
	a.put("/vsock", `{"guest_cid": 5, "uds_path": `+q(uds)+`}`) // update in place

	// Before the guest runs there is no listener: the connection closes.
	if _, _, line := vsockConnect(t, uds, 1024); line != "" {
		t.Fatalf("CONNECT before boot: %q", line)
	}
	a.put("/boot-source", `{"kernel_image_path": `+q(f["vmlinux"])+`}`)
	a.put("/actions", `{"action_type": "InstanceStart"}`)

	// A port nobody listens on: closed without OK.
	if _, _, line := vsockConnect(t, uds, 52); line != "" {
		t.Fatalf("CONNECT 52: %q", line)
	}
	// Garbage instead of CONNECT: closed.
	c, err := net.Dial("unix", uds)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(c, "HELLO\n")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, _ := c.Read(make([]byte, 16)); n != 0 {
		t.Fatal("a non-CONNECT line got an answer")
	}
	c.Close()

	// The agent port: OK <port>, then a byte stream, bytes sent right
	// behind the CONNECT line included.
	c, r, line := vsockConnect(t, uds, 1024)
	if !strings.HasPrefix(line, "OK ") || strings.TrimSpace(line) != "OK 1073741824" {
		t.Fatalf("CONNECT 1024: %q", line)
	}
	io.WriteString(c, "ping\n")
	if got, _ := r.ReadString('\n'); got != "ping\n" {
		t.Fatalf("echo through the bridge: %q", got)
	}
	// One host connection at a time.
	if _, _, line := vsockConnect(t, uds, 1024); line != "" {
		t.Fatalf("second concurrent CONNECT 1024: %q", line)
	}
	c.Close()

	// After the first closes, the next gets through, with a new port.
	deadline := time.Now().Add(5 * time.Second)
	for {
		c2, err := net.Dial("unix", uds)
		if err != nil {
			t.Fatal(err)
		}
		c2.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c2, "CONNECT 1024\nearly\n")
		r2 := bufio.NewReader(c2)
		line, _ := r2.ReadString('\n')
		if line == "" && time.Now().Before(deadline) {
			c2.Close()
			time.Sleep(20 * time.Millisecond)
			continue
		}
		if line != "OK 1073741825\n" {
			t.Fatalf("reconnect: %q", line)
		}
		if got, _ := r2.ReadString('\n'); got != "early\n" {
			t.Fatalf("bytes pipelined behind CONNECT: %q", got)
		}
		c2.Close()
		break
	}
}

func TestQEMUArgv(t *testing.T) {
	p := bootPlan{
		Kernel: "/k/vmlinux", Initrd: "/k/initrd", BootArgs: "console=ttyS0 root=/dev/vda ro",
		VCPU: 2, MemMiB: 256,
		Drives: []drive{{ID: "root", Path: "/d/root.ext4", Root: true, ReadOnly: true}, {ID: "rw", Path: "/d/rw.ext4"}},
		Net:    &netIface{ID: "eth0", HostDev: "tap3", MAC: "06:00:00:00:00:01"},
		Vsock:  true,
	}
	argv := qemuArgv("qemu-system-x86_64", "/run/x", p, engine.AccelTCG, 2596150, qemuMemory{})
	s := strings.Join(argv, " ")
	for _, want := range []string{
		"-M microvm,x-option-roms=off", "-nodefaults", "-no-reboot", "-smp 2", "-m 256M",
		"-kernel /k/vmlinux", "-initrd /k/initrd",
		"-append console=ttyS0 root=/dev/vda ro tsc_early_khz=2596150 ",
		"-chardev stdio,id=console,signal=off -serial chardev:console",
		"id=disk0,file=/d/root.ext4,format=raw,if=none,readonly=on",
		"id=disk1,file=/d/rw.ext4,format=raw,if=none,werror=enospc,rerror=report -device",
		"-netdev tap,id=net0,ifname=tap3,script=no,downscript=no",
		"mac=06:00:00:00:00:01",
		"-chardev socket,id=agent,path=/run/x/agent.sock,server=on,wait=off",
		"virtserialport,chardev=agent,name=banger.agent",
		"-qmp unix:/run/x/qmp.sock",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("argv lacks %q:\n%s", want, s)
		}
	}
	if strings.Contains(s, "console.log") || strings.Contains(s, " quiet") {
		t.Errorf("argv keeps the QEMU engine's console file or cmdline:\n%s", s)
	}
	p.Vsock, p.Net = false, nil
	s = strings.Join(qemuArgv("q", "/run/x", p, engine.AccelTCG, 0, qemuMemory{}), " ")
	if strings.Contains(s, "virtio-serial") || strings.Contains(s, "agent.sock") || strings.Contains(s, "-netdev") {
		t.Errorf("no vsock or NIC configured, yet:\n%s", s)
	}
	if !strings.Contains(s, "-icount shift=auto") || strings.Contains(s, "tsc_early_khz") {
		t.Errorf("TCG without a TSC rate should use -icount:\n%s", s)
	}
}

// TestSnapshotRules: Firecracker's ordering of the snapshot API — PATCH
// /vm and /snapshot/create only on a started VM, create only when paused,
// /snapshot/load only before any boot resource is configured, and a load
// of a file that is not a snapshot refused (the double then exits).
func TestSnapshotRules(t *testing.T) {
	a := newAPI(t, &fakeMachine{})
	f := a.files("vmlinux", "snap", "mem")
	create := `{"snapshot_type": "Full", "snapshot_path": ` + q(f["snap"]) + `, "mem_file_path": ` + q(f["mem"]) + `}`
	a.fault("PATCH", "/vm", `{"state": "Paused"}`, errPreBoot)
	a.fault("PATCH", "/vm", `{"state": "Stopped"}`, "Stopped")
	a.fault("PUT", "/snapshot/create", create, errPreBoot)
	a.fault("PUT", "/snapshot/load", `{"snapshot_path": `+q(f["snap"])+`}`, "either mem_backend or mem_file_path")
	a.fault("PUT", "/snapshot/load", `{"snapshot_path": `+q(f["snap"])+`, "mem_backend": {"backend_type": "File", "backend_path": `+q(f["mem"])+`}}`, "not a snapshot")
	a.put("/boot-source", `{"kernel_image_path": `+q(f["vmlinux"])+`}`)
	a.fault("PUT", "/snapshot/load", `{"snapshot_path": `+q(f["snap"])+`, "mem_backend": {"backend_type": "File", "backend_path": `+q(f["mem"])+`}}`, "not allowed after configuring boot-specific resources")
	a.put("/actions", `{"action_type": "InstanceStart"}`)
	a.fault("PUT", "/snapshot/create", create, "must be paused")
	a.do("PATCH", "/vm", `{"state": "Paused"}`)
	var info map[string]string
	a.getJSON("/", &info)
	if info["state"] != "Paused" {
		t.Errorf("state after PATCH /vm Paused: %q", info["state"])
	}
	a.fault("PUT", "/snapshot/create", create, "fake machine: no snapshots")
	a.fault("PUT", "/snapshot/load", `{"snapshot_path": `+q(f["snap"])+`, "mem_file_path": `+q(f["mem"])+`}`, errPostBoot)
}

// TestSnapshotLoadNetworkOverrides: a snapshot of a VM with a NIC is
// restored with the NIC backed by the tap network_overrides names, not
// the snapshot's; an override of another interface, one without
// host_dev_name or with a field Firecracker does not know is refused.
func TestSnapshotLoadNetworkOverrides(t *testing.T) {
	m := &fakeMachine{}
	a := newAPI(t, m)
	f := a.files("mem")
	h, _ := json.Marshal(snapshotHeader{Magic: snapshotMagic, Plan: bootPlan{
		Kernel: "vmlinux", VCPU: 1, MemMiB: 128, Net: &netIface{ID: "eth0", HostDev: "bgr-ttemplate", MAC: "02:62:61:6e:67:00"},
	}})
	snap := filepath.Join(a.dir, "snap")
	if err := os.WriteFile(snap, append(h, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	load := func(overrides string) string {
		return `{"snapshot_path": ` + q(snap) + `, "mem_backend": {"backend_type": "File", "backend_path": ` + q(f["mem"]) + `}, "resume_vm": true, "network_overrides": ` + overrides + `}`
	}
	a.fault("PUT", "/snapshot/load", load(`[{"iface_id": "eth0"}]`), "missing field `host_dev_name`")
	a.fault("PUT", "/snapshot/load", load(`[{"iface_id": "eth0", "host_dev_name": "bgr-clone1", "guest_mac": "x"}]`), "unknown field `guest_mac`")
	a.fault("PUT", "/snapshot/load", load(`[{"iface_id": "eth1", "host_dev_name": "bgr-clone1"}]`), `no network interface "eth1"`)
	a.put("/snapshot/load", load(`[{"iface_id": "eth0", "host_dev_name": "bgr-clone1"}]`))
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.restored) != 1 || m.restored[0].Net == nil || m.restored[0].Net.HostDev != "bgr-clone1" || m.restored[0].Net.MAC != "02:62:61:6e:67:00" {
		t.Errorf("restored plans %+v; want one whose NIC is on bgr-clone1", m.restored)
	}
}

// TestSnapshotPathsInJail: a jailed double records the paths the API gave
// (chroot-relative), as Firecracker does, so that a clone reopens them in
// its own jail, not the template VM's.
func TestSnapshotPathsInJail(t *testing.T) {
	t.Setenv("FCDOUBLE_CHROOT", "/jails/t/root")
	for in, want := range map[string]string{
		"/jails/t/root/vda":    "/vda",
		"/jails/t/root/d/v.sk": "/d/v.sk",
		"/elsewhere/vda":       "/elsewhere/vda",
		"/jails/t/rootx/vda":   "/jails/t/rootx/vda",
	} {
		if got := outJail(in); got != want {
			t.Errorf("outJail(%q) = %q, want %q", in, got, want)
		}
	}
	p := bootPlan{Kernel: "/jails/t/root/vmlinux", Drives: []drive{{ID: "vda", Path: "/jails/t/root/vda"}}}
	saved := jailPlan(p, outJail)
	if saved.Kernel != "/vmlinux" || saved.Drives[0].Path != "/vda" || p.Drives[0].Path != "/jails/t/root/vda" {
		t.Errorf("saved plan %+v (original %+v): want chroot-relative paths, the original untouched", saved, p)
	}
	t.Setenv("FCDOUBLE_CHROOT", "/jails/clone/root")
	if got := jailPlan(saved, inJail); got.Drives[0].Path != "/jails/clone/root/vda" || got.Kernel != "/jails/clone/root/vmlinux" {
		t.Errorf("loaded plan %+v: want the clone's jail", got)
	}
}
