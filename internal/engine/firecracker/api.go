package firecracker

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"

	"github.com/bangervm/banger/internal/engine"
)

// APIError is a non-2xx answer of the Firecracker API, with the request
// that caused it and Firecracker's fault_message.
type APIError struct {
	Method, Path string
	Status       int
	Fault        string
}

func (e *APIError) Error() string {
	f := e.Fault
	if f == "" {
		f = "(no fault_message)"
	}
	return fmt.Sprintf("firecracker API %s %s: %d %s: %s", e.Method, e.Path, e.Status, http.StatusText(e.Status), f)
}

// apiClient speaks HTTP/1.1 over Firecracker's API unix socket.
type apiClient struct {
	sock string
	hc   *http.Client
}

func newAPIClient(sock string) *apiClient {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
		DisableKeepAlives: true,
	}
	return &apiClient{sock: sock, hc: &http.Client{Transport: tr}}
}

// do sends method path with body (JSON-encoded unless nil) and decodes a
// 200 answer into out when non-nil.
func (c *apiClient) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://localhost"+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("firecracker API %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	rb, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("firecracker API %s %s: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		var fe struct {
			FaultMessage string `json:"fault_message"`
		}
		if json.Unmarshal(rb, &fe) != nil || fe.FaultMessage == "" {
			fe.FaultMessage = strings.TrimSpace(string(rb))
		}
		return &APIError{Method: method, Path: path, Status: resp.StatusCode, Fault: fe.FaultMessage}
	}
	if out != nil {
		if err := json.Unmarshal(rb, out); err != nil {
			return fmt.Errorf("firecracker API %s %s: decode answer: %w", method, path, err)
		}
	}
	return nil
}

// instanceInfo is the answer of GET / (InstanceInfo).
type instanceInfo struct {
	AppName    string `json:"app_name"`
	ID         string `json:"id"`
	State      string `json:"state"` // "Not started", "Running", "Paused"
	VMMVersion string `json:"vmm_version"`
}

func (c *apiClient) instanceInfo(ctx context.Context) (instanceInfo, error) {
	var ii instanceInfo
	err := c.do(ctx, http.MethodGet, "/", nil, &ii)
	return ii, err
}

func (c *apiClient) action(ctx context.Context, typ string) error {
	return c.do(ctx, http.MethodPut, "/actions", actionBody{ActionType: typ}, nil)
}

// Request bodies, named after the OpenAPI definitions.
type (
	loggerBody struct {
		LogPath string `json:"log_path"`
		Level   string `json:"level,omitempty"`
	}
	machineConfigBody struct {
		VCPUCount  int `json:"vcpu_count"`
		MemSizeMiB int `json:"mem_size_mib"`
	}
	bootSourceBody struct {
		KernelImagePath string `json:"kernel_image_path"`
		InitrdPath      string `json:"initrd_path,omitempty"`
		BootArgs        string `json:"boot_args,omitempty"`
	}
	driveBody struct {
		DriveID      string `json:"drive_id"`
		PathOnHost   string `json:"path_on_host"`
		IsRootDevice bool   `json:"is_root_device"`
		IsReadOnly   bool   `json:"is_read_only"`
	}
	networkInterfaceBody struct {
		IfaceID     string `json:"iface_id"`
		HostDevName string `json:"host_dev_name"`
		GuestMAC    string `json:"guest_mac,omitempty"`
	}
	vsockBody struct {
		GuestCID uint32 `json:"guest_cid"`
		UDSPath  string `json:"uds_path"`
	}
	actionBody struct {
		ActionType string `json:"action_type"`
	}
)

// request is one configuration call.
type request struct {
	Method, Path string
	Body         any
}

// metricsBody is PUT /metrics.
type metricsBody struct {
	MetricsPath string `json:"metrics_path"`
}

// driveID names disk i: vda, vdb, ... as the guest sees them.
func driveID(i int) string { return "vd" + string(rune('a'+i)) }

// ConfigRequests returns the API calls that configure and boot spec, in
// order. No drive is the root device: the initramfs mounts the disks
// itself (initrd.md: no is_root_device drive with an initrd).
func configRequests(spec engine.Spec, st state, p apiPaths) []request {
	args := BaseBootArgs
	if c := strings.TrimSpace(spec.Cmdline); c != "" {
		args += " " + c
	}
	rs := []request{
		{"PUT", "/logger", loggerBody{LogPath: p.logFile, Level: "Info"}},
		{"PUT", "/metrics", metricsBody{MetricsPath: p.metricsFile}},
		{"PUT", "/machine-config", machineConfigBody{VCPUCount: spec.VCPU, MemSizeMiB: spec.MemoryMiB}},
		{"PUT", "/boot-source", bootSourceBody{KernelImagePath: p.kernel, InitrdPath: p.initrd, BootArgs: args}},
	}
	for i, d := range spec.Disks {
		rs = append(rs, request{"PUT", "/drives/" + driveID(i), driveBody{
			DriveID: driveID(i), PathOnHost: p.disks[i], IsReadOnly: d.ReadOnly,
		}})
	}
	if n := spec.Net; n != nil {
		rs = append(rs, request{"PUT", "/network-interfaces/eth0", networkInterfaceBody{
			IfaceID: "eth0", HostDevName: n.TapName, GuestMAC: n.MAC,
		}})
	}
	rs = append(rs,
		request{"PUT", "/vsock", vsockBody{GuestCID: st.VsockCID, UDSPath: p.vsock}},
		request{"PUT", "/actions", actionBody{ActionType: "InstanceStart"}},
	)
	return rs
}

// configure sends configRequests; the first error stops it.
func configure(ctx context.Context, c *apiClient, spec engine.Spec, st state, p apiPaths) error {
	for _, r := range configRequests(spec, st, p) {
		if err := c.do(ctx, r.Method, r.Path, r.Body, nil); err != nil {
			return err
		}
	}
	return nil
}
