package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

const defaultID = "anonymous-instance"

// maxPayload is Firecracker's default --http-api-max-payload-size.
const maxPayload = 51200

// Firecracker's fault messages for requests in the wrong VM state.
const (
	errPostBoot     = "The requested operation is not supported after starting the microVM."
	errPreBoot      = "The requested operation is not supported before starting the microVM."
	errNoKernel     = "Start microvm error: Cannot start microvm without kernel configuration."
	errIDMismatch   = "The id from the path does not match the id from the body!"
	errRootExists   = "A root block device already exists!"
	errMetricsAgain = "Reinitialization of metrics not allowed."
)

// defaultBootArgs is Firecracker's kernel command line when boot_args is
// not given.
const defaultBootArgs = "reboot=k panic=1 pci=off nomodule 8250.nr_uarts=0 i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd"

// Request bodies. Pointer fields tell a missing field from a zero value;
// decoding rejects unknown fields and wrong types, as Firecracker's serde
// structs (deny_unknown_fields) do.

type bootSourceBody struct {
	KernelImagePath *string `json:"kernel_image_path"`
	BootArgs        *string `json:"boot_args"`
	InitrdPath      *string `json:"initrd_path"`
}

type machineConfigBody struct {
	VcpuCount       *int64  `json:"vcpu_count"`
	MemSizeMib      *int64  `json:"mem_size_mib"`
	Smt             *bool   `json:"smt"`
	TrackDirtyPages *bool   `json:"track_dirty_pages"`
	CPUTemplate     *string `json:"cpu_template"`
	HugePages       *string `json:"huge_pages"`
}

type tokenBucket struct {
	Size         *int64 `json:"size"`
	OneTimeBurst *int64 `json:"one_time_burst"`
	RefillTime   *int64 `json:"refill_time"`
}

type rateLimiter struct {
	Bandwidth *tokenBucket `json:"bandwidth"`
	Ops       *tokenBucket `json:"ops"`
}

type driveBody struct {
	DriveID      *string      `json:"drive_id"`
	IsRootDevice *bool        `json:"is_root_device"`
	PathOnHost   *string      `json:"path_on_host"`
	IsReadOnly   *bool        `json:"is_read_only"`
	Partuuid     *string      `json:"partuuid"`
	CacheType    *string      `json:"cache_type"`
	IoEngine     *string      `json:"io_engine"`
	RateLimiter  *rateLimiter `json:"rate_limiter"`
	Socket       *string      `json:"socket"`
}

type netBody struct {
	IfaceID       *string      `json:"iface_id"`
	HostDevName   *string      `json:"host_dev_name"`
	GuestMAC      *string      `json:"guest_mac"`
	MTU           *int64       `json:"mtu"`
	RxRateLimiter *rateLimiter `json:"rx_rate_limiter"`
	TxRateLimiter *rateLimiter `json:"tx_rate_limiter"`
}

type vsockBody struct {
	GuestCID *int64  `json:"guest_cid"`
	UDSPath  *string `json:"uds_path"`
	VsockID  *string `json:"vsock_id"`
}

type loggerBody struct {
	LogPath       *string `json:"log_path"`
	Level         *string `json:"level"`
	ShowLevel     *bool   `json:"show_level"`
	ShowLogOrigin *bool   `json:"show_log_origin"`
	Module        *string `json:"module"`
}

type metricsBody struct {
	MetricsPath *string           `json:"metrics_path"`
	EmitID      *bool             `json:"emit_id"`
	Properties  map[string]string `json:"properties"`
}

type actionBody struct {
	ActionType *string `json:"action_type"`
}

// machineConfig is GET /machine-config's answer.
type machineConfig struct {
	VcpuCount       int64   `json:"vcpu_count"`
	MemSizeMib      int64   `json:"mem_size_mib"`
	Smt             bool    `json:"smt"`
	TrackDirtyPages bool    `json:"track_dirty_pages"`
	CPUTemplate     *string `json:"cpu_template,omitempty"`
	HugePages       string  `json:"huge_pages"`
}

// Boot plan: what InstanceStart hands to the machine.

type drive struct {
	ID       string
	Path     string
	Root     bool
	ReadOnly bool
	PartUUID string
}

type netIface struct {
	ID      string
	HostDev string
	MAC     string
}

type bootPlan struct {
	Kernel   string
	Initrd   string
	BootArgs string // final kernel command line, before engine additions
	VCPU     int
	MemMiB   int
	Drives   []drive // in guest order (root first)
	Net      *netIface
	Vsock    bool // a vsock device: expose the agent's serial port
	// tap is Net's tap, opened by the double itself (in a jail, through
	// the jail's /dev/net/tun, as Firecracker does); nil lets QEMU open
	// it by name.
	tap *os.File
}

// machine boots and controls the guest; the QEMU one in production, a fake
// in the API tests.
type machine interface {
	// Start boots the guest; it returns once the VM runs.
	Start(plan bootPlan) error
	// CtrlAltDel asks the guest to stop.
	CtrlAltDel() error
	// AgentSocket is the unix socket of the guest agent's serial port, ""
	// before Start.
	AgentSocket() string
	// Pause and Resume stop and restart the guest's vCPUs.
	Pause() error
	Resume() error
	// Snapshot saves the paused guest: header, then its device state, in
	// state; its RAM in mem.
	Snapshot(state, mem string, header []byte) error
	// Restore starts the guest p describes from a snapshot: its RAM mapped
	// privately from mem, its device state from state after offset bytes
	// (the header); paused unless resume.
	Restore(p bootPlan, state, mem string, offset int64, resume bool) error
	// Abort ends the double shortly, after a failed snapshot load (the
	// machine may be half restored: Firecracker ends the process too).
	Abort()
}

// vmm holds the API state: the pre-boot configuration and whether the VM
// has started.
type vmm struct {
	id  string
	log *logger
	m   machine

	mu         sync.Mutex
	started    bool
	paused     bool
	configured bool     // a boot resource was set: /snapshot/load is refused
	plan       bootPlan // what the VM was booted or restored with
	machine    machineConfig
	boot       *bootSourceBody
	drives     []drive
	nets       []netIface
	vsock      *bridge
	vsockCID   int64
	metrics    *os.File
}

func newVMM(id string, log *logger, m machine) *vmm {
	return &vmm{
		id: id, log: log, m: m,
		machine: machineConfig{VcpuCount: 1, MemSizeMib: 128, HugePages: "None"},
	}
}

// close releases the vsock listener and files.
func (v *vmm) close() {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.vsock != nil {
		v.vsock.close()
	}
	if v.metrics != nil {
		v.metrics.Close()
	}
}

// apiError is a 400 with a fault message.
type apiError struct{ msg string }

func (e *apiError) Error() string { return e.msg }

func badRequest(format string, args ...any) error {
	return &apiError{fmt.Sprintf(format, args...)}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", fmt.Sprint(len(b)))
	w.WriteHeader(code)
	w.Write(b)
}

func writeFault(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"fault_message": msg})
}

func (v *vmm) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Server", "Firecracker API")
	err := v.route(w, r)
	if err == nil {
		return
	}
	var ae *apiError
	if !errors.As(err, &ae) {
		v.log.Error(err.Error())
		writeFault(w, http.StatusInternalServerError, err.Error())
		return
	}
	v.log.Warn(fmt.Sprintf("%s %s: %s", r.Method, r.URL.Path, ae.msg))
	writeFault(w, http.StatusBadRequest, ae.msg)
}

// route dispatches one request; a nil error means the handler wrote the
// response (or a 204 is due).
func (v *vmm) route(w http.ResponseWriter, r *http.Request) error {
	path := strings.TrimSuffix(r.URL.Path, "/")
	invalid := badRequest("Invalid request method and/or path: %s %s.", r.Method, r.URL.Path)
	resource, id, _ := strings.Cut(strings.TrimPrefix(path, "/"), "/")
	if strings.Contains(id, "/") {
		return invalid
	}
	switch r.Method {
	case http.MethodGet:
		if id != "" {
			return invalid
		}
		switch resource {
		case "":
			v.mu.Lock()
			state := "Not started"
			if v.started {
				state = "Running"
			}
			if v.paused {
				state = "Paused"
			}
			v.mu.Unlock()
			writeJSON(w, http.StatusOK, map[string]string{
				"id": v.id, "state": state, "vmm_version": Version, "app_name": "Firecracker",
			})
			return nil
		case "version":
			writeJSON(w, http.StatusOK, map[string]string{"firecracker_version": Version})
			return nil
		case "machine-config":
			v.mu.Lock()
			mc := v.machine
			v.mu.Unlock()
			writeJSON(w, http.StatusOK, mc)
			return nil
		}
		return invalid
	case http.MethodPatch:
		if resource != "vm" || id != "" {
			return invalid
		}
		if err := v.patchVM(r); err != nil {
			return err
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	case http.MethodPut:
	default:
		return invalid
	}

	var h func(r *http.Request, id string) error
	switch resource {
	case "logger":
		h = v.putLogger
	case "metrics":
		h = v.putMetrics
	case "machine-config":
		h = v.putMachineConfig
	case "boot-source":
		h = v.putBootSource
	case "drives":
		h = v.putDrive
	case "network-interfaces":
		h = v.putNet
	case "vsock":
		h = v.putVsock
	case "actions":
		h = v.putAction
	case "snapshot":
		switch id {
		case "create":
			h = v.putSnapshotCreate
		case "load":
			h = v.putSnapshotLoad
		default:
			return invalid
		}
		id = ""
	default:
		return invalid
	}
	if (resource == "drives" || resource == "network-interfaces") != (id != "") {
		return invalid
	}
	if err := h(r, id); err != nil {
		return err
	}
	switch resource {
	case "machine-config", "boot-source", "drives", "network-interfaces", "vsock":
		v.mu.Lock()
		v.configured = true
		v.mu.Unlock()
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// decode reads a JSON body strictly into v.
func decode(r *http.Request, v any) error {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxPayload+1))
	if err != nil {
		return badRequest("Cannot read the request body: %v", err)
	}
	if len(body) > maxPayload {
		return badRequest("Request payload with size %d is larger than the limit of %d allowed by server.", r.ContentLength, maxPayload)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return badRequest("Empty PUT request.")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return badRequest("An error occurred when deserializing the json body of a request: %s.", jsonErr(err))
	}
	if _, err := dec.Token(); err != io.EOF {
		return badRequest("An error occurred when deserializing the json body of a request: trailing characters.")
	}
	return nil
}

// jsonErr phrases a decoding error like serde does where it matters: the
// offending field's name.
func jsonErr(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Sprintf("invalid type for field `%s`: expected %s, found JSON %s", te.Field, te.Type, te.Value)
	}
	msg := strings.TrimPrefix(err.Error(), "json: ")
	if f, ok := strings.CutPrefix(msg, "unknown field "); ok {
		return "unknown field `" + strings.Trim(f, `"`) + "`"
	}
	return msg
}

func missing(field string) error {
	return badRequest("An error occurred when deserializing the json body of a request: missing field `%s`.", field)
}

// preBoot takes the lock and refuses the request after InstanceStart.
func (v *vmm) preBoot() (unlock func(), err error) {
	v.mu.Lock()
	if v.started {
		v.mu.Unlock()
		return nil, badRequest(errPostBoot)
	}
	return v.mu.Unlock, nil
}

func oneOf(field, val string, allowed ...string) error {
	for _, a := range allowed {
		if val == a {
			return nil
		}
	}
	return badRequest("An error occurred when deserializing the json body of a request: unknown variant `%s` for field `%s`, expected one of `%s`.", val, field, strings.Join(allowed, "`, `"))
}

func (v *vmm) putLogger(r *http.Request, _ string) error {
	var b loggerBody
	if err := decode(r, &b); err != nil {
		return err
	}
	unlock, err := v.preBoot()
	if err != nil {
		return err
	}
	defer unlock()
	level := "info"
	if b.Level != nil {
		level = *b.Level
	}
	l, err := parseLevel(level)
	if err != nil {
		return badRequest("Cannot initialize logging system! Invalid log level: %s", level)
	}
	var out io.Writer = os.Stderr
	if b.LogPath != nil {
		f, err := openLogFile(inJail(*b.LogPath))
		if err != nil {
			return badRequest("Cannot initialize logging system! %v", err)
		}
		out = f
	}
	v.log.set(out, l)
	return nil
}

func (v *vmm) putMetrics(r *http.Request, _ string) error {
	var b metricsBody
	if err := decode(r, &b); err != nil {
		return err
	}
	if b.MetricsPath == nil {
		return missing("metrics_path")
	}
	unlock, err := v.preBoot()
	if err != nil {
		return err
	}
	defer unlock()
	if v.metrics != nil {
		return badRequest(errMetricsAgain)
	}
	f, err := openLogFile(inJail(*b.MetricsPath))
	if err != nil {
		return badRequest("Cannot initialize the metrics system due to: %v", err)
	}
	v.metrics = f
	return nil
}

func (v *vmm) putMachineConfig(r *http.Request, _ string) error {
	var b machineConfigBody
	if err := decode(r, &b); err != nil {
		return err
	}
	if b.VcpuCount == nil {
		return missing("vcpu_count")
	}
	if b.MemSizeMib == nil {
		return missing("mem_size_mib")
	}
	smt := b.Smt != nil && *b.Smt
	if n := *b.VcpuCount; n < 1 || n > 32 || (smt && n > 1 && n%2 != 0) {
		return badRequest("The vCPU number is invalid! The vCPU number can only be 1 or an even number when SMT is enabled.")
	}
	if *b.MemSizeMib <= 0 {
		return badRequest("The memory size (MiB) is invalid.")
	}
	hp := "None"
	if b.HugePages != nil {
		hp = *b.HugePages
		if err := oneOf("huge_pages", hp, "None", "Transparent", "2M"); err != nil {
			return err
		}
		if hp == "2M" && *b.MemSizeMib%2 != 0 {
			return badRequest("The memory size (MiB) is invalid.")
		}
	}
	unlock, err := v.preBoot()
	if err != nil {
		return err
	}
	defer unlock()
	v.machine = machineConfig{
		VcpuCount: *b.VcpuCount, MemSizeMib: *b.MemSizeMib, Smt: smt,
		TrackDirtyPages: b.TrackDirtyPages != nil && *b.TrackDirtyPages,
		CPUTemplate:     b.CPUTemplate, HugePages: hp,
	}
	return nil
}

// readable checks that a host file can be opened, as Firecracker does when
// the resource is configured.
func readable(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	return f.Close()
}

func (v *vmm) putBootSource(r *http.Request, _ string) error {
	var b bootSourceBody
	if err := decode(r, &b); err != nil {
		return err
	}
	if b.KernelImagePath == nil {
		return missing("kernel_image_path")
	}
	*b.KernelImagePath = inJail(*b.KernelImagePath)
	if b.InitrdPath != nil {
		*b.InitrdPath = inJail(*b.InitrdPath)
	}
	if err := readable(*b.KernelImagePath); err != nil {
		return badRequest("The kernel file cannot be opened: %v", err)
	}
	if b.InitrdPath != nil {
		if err := readable(*b.InitrdPath); err != nil {
			return badRequest("The initrd file cannot be opened due to invalid path or invalid permissions. %v", err)
		}
	}
	unlock, err := v.preBoot()
	if err != nil {
		return err
	}
	defer unlock()
	v.boot = &b
	return nil
}

func checkBucket(field string, tb *tokenBucket) error {
	if tb == nil {
		return nil
	}
	if tb.Size == nil {
		return missing("size")
	}
	if tb.RefillTime == nil {
		return missing("refill_time")
	}
	if *tb.Size < 0 || *tb.RefillTime < 0 || (tb.OneTimeBurst != nil && *tb.OneTimeBurst < 0) {
		return badRequest("An error occurred when deserializing the json body of a request: invalid value for field `%s`: negative token bucket value.", field)
	}
	return nil
}

func checkLimiter(field string, rl *rateLimiter) error {
	if rl == nil {
		return nil
	}
	if err := checkBucket(field+".bandwidth", rl.Bandwidth); err != nil {
		return err
	}
	return checkBucket(field+".ops", rl.Ops)
}

func (v *vmm) putDrive(r *http.Request, id string) error {
	var b driveBody
	if err := decode(r, &b); err != nil {
		return err
	}
	if b.DriveID == nil {
		return missing("drive_id")
	}
	if b.IsRootDevice == nil {
		return missing("is_root_device")
	}
	if *b.DriveID != id {
		return badRequest(errIDMismatch)
	}
	if b.Socket != nil {
		return badRequest("Unable to create the block device: vhost-user-block is not supported by fcdouble.")
	}
	if b.PathOnHost == nil {
		return missing("path_on_host")
	}
	*b.PathOnHost = inJail(*b.PathOnHost)
	if b.CacheType != nil {
		if err := oneOf("cache_type", *b.CacheType, "Unsafe", "Writeback"); err != nil {
			return err
		}
	}
	if b.IoEngine != nil {
		if err := oneOf("io_engine", *b.IoEngine, "Sync", "Async"); err != nil {
			return err
		}
	}
	if err := checkLimiter("rate_limiter", b.RateLimiter); err != nil {
		return err
	}
	if _, err := os.Stat(*b.PathOnHost); err != nil {
		return badRequest("Unable to create the block device: %v", err)
	}
	d := drive{ID: id, Path: *b.PathOnHost, Root: *b.IsRootDevice, ReadOnly: b.IsReadOnly != nil && *b.IsReadOnly}
	if b.Partuuid != nil {
		d.PartUUID = *b.Partuuid
	}
	unlock, err := v.preBoot()
	if err != nil {
		return err
	}
	defer unlock()
	for _, o := range v.drives {
		if o.Root && d.Root && o.ID != id {
			return badRequest(errRootExists)
		}
	}
	for i := range v.drives {
		if v.drives[i].ID == id {
			v.drives[i] = d
			return nil
		}
	}
	v.drives = append(v.drives, d)
	return nil
}

func (v *vmm) putNet(r *http.Request, id string) error {
	var b netBody
	if err := decode(r, &b); err != nil {
		return err
	}
	if b.IfaceID == nil {
		return missing("iface_id")
	}
	if b.HostDevName == nil {
		return missing("host_dev_name")
	}
	if *b.IfaceID != id {
		return badRequest(errIDMismatch)
	}
	n := netIface{ID: id, HostDev: *b.HostDevName}
	if b.GuestMAC != nil {
		hw, err := net.ParseMAC(*b.GuestMAC)
		if err != nil || len(hw) != 6 {
			return badRequest("An error occurred when deserializing the json body of a request: invalid MAC address %q.", *b.GuestMAC)
		}
		n.MAC = hw.String()
	}
	if b.MTU != nil && (*b.MTU < 68 || *b.MTU > 65535) {
		return badRequest("Could not create the network device: invalid MTU %d.", *b.MTU)
	}
	if err := checkLimiter("rx_rate_limiter", b.RxRateLimiter); err != nil {
		return err
	}
	if err := checkLimiter("tx_rate_limiter", b.TxRateLimiter); err != nil {
		return err
	}
	unlock, err := v.preBoot()
	if err != nil {
		return err
	}
	defer unlock()
	for i, o := range v.nets {
		if o.ID == id {
			v.nets[i] = n
			return nil
		}
		if o.HostDev == n.HostDev {
			return badRequest("Could not create the network device: The host device name %s is already in use.", n.HostDev)
		}
		if n.MAC != "" && o.MAC == n.MAC {
			return badRequest("The MAC address is already in use: %s", n.MAC)
		}
	}
	if len(v.nets) == 1 {
		return badRequest("Could not create the network device: fcdouble supports one network interface.")
	}
	v.nets = append(v.nets, n)
	return nil
}

func (v *vmm) putVsock(r *http.Request, _ string) error {
	var b vsockBody
	if err := decode(r, &b); err != nil {
		return err
	}
	if b.GuestCID == nil {
		return missing("guest_cid")
	}
	if b.UDSPath == nil {
		return missing("uds_path")
	}
	*b.UDSPath = inJail(*b.UDSPath)
	if *b.GuestCID < 3 || *b.GuestCID > 0xffffffff {
		return badRequest("Cannot create the vsock device: invalid guest CID %d.", *b.GuestCID)
	}
	unlock, err := v.preBoot()
	if err != nil {
		return err
	}
	defer unlock()
	if v.vsock != nil && v.vsock.path == *b.UDSPath {
		v.vsockCID = *b.GuestCID
		return nil
	}
	// Firecracker binds uds_path when the device is configured and fails
	// if the path exists.
	br, err := listenBridge(*b.UDSPath, v.m.AgentSocket, v.log)
	if err != nil {
		return badRequest("Cannot create backend for vsock device: Error binding to the host-side Unix socket: %v", err)
	}
	if v.vsock != nil {
		v.vsock.close()
	}
	v.vsock, v.vsockCID = br, *b.GuestCID
	return nil
}

func (v *vmm) putAction(r *http.Request, _ string) error {
	var b actionBody
	if err := decode(r, &b); err != nil {
		return err
	}
	if b.ActionType == nil {
		return missing("action_type")
	}
	if err := oneOf("action_type", *b.ActionType, "FlushMetrics", "InstanceStart", "SendCtrlAltDel"); err != nil {
		return err
	}
	switch *b.ActionType {
	case "InstanceStart":
		return v.start()
	case "SendCtrlAltDel":
		v.mu.Lock()
		started := v.started
		v.mu.Unlock()
		if !started {
			return badRequest(errPreBoot)
		}
		if err := v.m.CtrlAltDel(); err != nil {
			return badRequest("Failed to send CTRL+ALT+DEL: %v", err)
		}
		return nil
	default: // FlushMetrics
		v.mu.Lock()
		defer v.mu.Unlock()
		if v.metrics == nil {
			return badRequest("The metrics system is not initialized.")
		}
		line, _ := json.Marshal(map[string]any{"utc_timestamp_ms": time.Now().UnixMilli()})
		if _, err := v.metrics.Write(append(line, '\n')); err != nil {
			return badRequest("Failed to write metrics: %v", err)
		}
		return nil
	}
}

// start handles InstanceStart: it builds the boot plan from the pre-boot
// configuration and boots the machine, holding the lock so that no
// configuration races with it.
func (v *vmm) start() error {
	unlock, err := v.preBoot()
	if err != nil {
		return err
	}
	defer unlock()
	if v.boot == nil {
		return badRequest(errNoKernel)
	}
	plan := bootPlan{
		Kernel: *v.boot.KernelImagePath,
		VCPU:   int(v.machine.VcpuCount),
		MemMiB: int(v.machine.MemSizeMib),
		Vsock:  v.vsock != nil,
	}
	if v.boot.InitrdPath != nil {
		plan.Initrd = *v.boot.InitrdPath
	}
	args := defaultBootArgs
	if v.boot.BootArgs != nil {
		args = *v.boot.BootArgs
	}
	// The root device is the first drive (vda), the others follow in the
	// order they were added, and the kernel is told where root is.
	for _, d := range v.drives {
		if d.Root {
			plan.Drives = append(plan.Drives, d)
			root := "/dev/vda"
			if d.PartUUID != "" {
				root = "PARTUUID=" + d.PartUUID
			}
			mode := "rw"
			if d.ReadOnly {
				mode = "ro"
			}
			args = strings.TrimSpace(args + " root=" + root + " " + mode)
		}
	}
	for _, d := range v.drives {
		if !d.Root {
			plan.Drives = append(plan.Drives, d)
		}
	}
	plan.BootArgs = args
	if len(v.nets) > 0 {
		n := v.nets[0]
		plan.Net = &n
	}
	if err := v.m.Start(plan); err != nil {
		return badRequest("Start microvm error: %v", err)
	}
	v.started, v.plan = true, plan
	v.log.Info("Successfully started microvm")
	return nil
}
