package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/errdefs"
)

func vmPath(ref string, action ...string) string {
	p := api.PathVM + url.PathEscape(ref)
	for _, a := range action {
		p += "/" + a
	}
	return p
}

// VMs lists VMs.
func (c *Client) VMs(ctx context.Context) ([]api.VM, error) {
	return get[[]api.VM](ctx, c, api.PathVMs)
}

// VMsLabeled lists the VMs carrying every label of sel.
func (c *Client) VMsLabeled(ctx context.Context, sel map[string]string) ([]api.VM, error) {
	if len(sel) == 0 {
		return c.VMs(ctx)
	}
	q := url.Values{}
	for _, k := range api.SortedKeys(sel) {
		q.Add(api.QueryLabel, k+"="+sel[k])
	}
	return get[[]api.VM](ctx, c, api.PathVMs+"?"+q.Encode())
}

// VM returns one VM by name, id or unique id prefix.
func (c *Client) VM(ctx context.Context, ref string) (api.VM, error) {
	return get[api.VM](ctx, c, vmPath(ref))
}

// CreateVM creates and (unless req.NoStart) boots a VM.
func (c *Client) CreateVM(ctx context.Context, req api.CreateVMRequest, progress func(api.Event)) (api.VM, error) {
	return stream[api.VM](ctx, c, api.PathVMs, req, progress)
}

// StartVM boots a stopped VM.
func (c *Client) StartVM(ctx context.Context, ref string, progress func(api.Event)) (api.VM, error) {
	return stream[api.VM](ctx, c, vmPath(ref, api.ActionStart), struct{}{}, progress)
}

// RestartVM stops and starts a VM.
func (c *Client) RestartVM(ctx context.Context, ref string, progress func(api.Event)) (api.VM, error) {
	return stream[api.VM](ctx, c, vmPath(ref, api.ActionRestart), struct{}{}, progress)
}

// StopVM stops a VM with its data flushed.
func (c *Client) StopVM(ctx context.Context, ref string) (api.StopResult, error) {
	return post[api.StopResult](ctx, c, vmPath(ref, api.ActionStop), struct{}{})
}

// KillVM stops a VM at once.
func (c *Client) KillVM(ctx context.Context, ref string) (api.StopResult, error) {
	return post[api.StopResult](ctx, c, vmPath(ref, api.ActionKill), struct{}{})
}

// DeleteVM deletes a VM; force kills a running one first.
func (c *Client) DeleteVM(ctx context.Context, ref string, force bool) error {
	p := vmPath(ref)
	if force {
		p += "?force=1"
	}
	return c.delete(ctx, p)
}

// UpdateVM changes a stopped VM's size.
func (c *Client) UpdateVM(ctx context.Context, ref string, req api.UpdateVMRequest) (api.VM, error) {
	resp, err := c.do(ctx, http.MethodPatch, vmPath(ref), req)
	if err != nil {
		return api.VM{}, err
	}
	defer resp.Body.Close()
	return decode[api.VM](resp.Body)
}

// PruneVMs deletes every VM that is not running and carries every label
// of sel (all VMs not running when sel is empty).
func (c *Client) PruneVMs(ctx context.Context, sel map[string]string) (api.PruneVMsResult, error) {
	return post[api.PruneVMsResult](ctx, c, api.PathVMPrune, api.PruneVMsRequest{Labels: sel})
}

// VMStats returns a running VM's resource use.
func (c *Client) VMStats(ctx context.Context, ref string) (api.VMStats, error) {
	return get[api.VMStats](ctx, c, vmPath(ref, api.ActionStats))
}

// VMLogs copies a VM's console log to w; with follow it keeps copying
// until ctx ends or the VM stops.
func (c *Client) VMLogs(ctx context.Context, ref string, follow bool, w io.Writer) error {
	p := vmPath(ref, api.ActionLogs)
	if follow {
		p += "?follow=1"
	}
	resp, err := c.do(ctx, http.MethodGet, p, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, err = io.Copy(w, resp.Body)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// ExecIO connects a guest process to local streams. Resize and Signal,
// when set, are read until the process ends.
type ExecIO struct {
	Stdin          io.Reader // nil: empty stdin
	Stdout, Stderr io.Writer
	Resize         <-chan [2]uint16 // rows, cols
	Signal         <-chan int
}

// Exec runs a process in a VM and returns how it ended.
func (c *Client) Exec(ctx context.Context, ref string, req api.ExecRequest, stdio ExecIO) (api.ExitStatus, error) {
	conn, err := c.dial(ctx)
	if err != nil {
		return api.ExitStatus{}, fmt.Errorf("bangerd at %s: %w", c.socket, err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	body, _ := json.Marshal(req)
	hreq, _ := http.NewRequest(http.MethodPost, "http://bangerd"+vmPath(ref, api.ActionExec), bytes.NewReader(body))
	hreq.Header.Set("Connection", "Upgrade")
	hreq.Header.Set("Upgrade", api.ExecUpgrade)
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Set(api.HeaderVersion, api.Version)
	if err := hreq.Write(conn); err != nil {
		return api.ExitStatus{}, err
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, hreq)
	if err != nil {
		return api.ExitStatus{}, fmt.Errorf("exec: %w", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		defer resp.Body.Close()
		return api.ExitStatus{}, decodeError(resp)
	}

	var wmu sync.Mutex
	send := func(typ byte, p []byte) error {
		wmu.Lock()
		defer wmu.Unlock()
		return api.WriteFrame(conn, typ, p)
	}
	done := make(chan struct{})
	defer close(done)
	go func() {
		if stdio.Stdin != nil {
			buf := make([]byte, 32<<10)
			for {
				n, err := stdio.Stdin.Read(buf)
				if n > 0 && send(api.FrameStdin, buf[:n]) != nil {
					return
				}
				if err != nil {
					break
				}
			}
		}
		send(api.FrameStdinEOF, nil)
	}()
	go func() {
		for {
			select {
			case <-done:
				return
			case sz, ok := <-stdio.Resize:
				if !ok {
					stdio.Resize = nil
					continue
				}
				b, _ := json.Marshal(map[string]uint16{"rows": sz[0], "cols": sz[1]})
				send(api.FrameResize, b)
			case sig, ok := <-stdio.Signal:
				if !ok {
					stdio.Signal = nil
					continue
				}
				b, _ := json.Marshal(map[string]int{"signal": sig})
				send(api.FrameSignal, b)
			}
		}
	}()
	out, errw := stdio.Stdout, stdio.Stderr
	if out == nil {
		out = io.Discard
	}
	if errw == nil {
		errw = io.Discard
	}
	for {
		typ, p, err := api.ReadFrame(br)
		if err != nil {
			if ctx.Err() != nil {
				return api.ExitStatus{}, fmt.Errorf("%w: %w", errdefs.ErrCanceled, ctx.Err())
			}
			return api.ExitStatus{}, fmt.Errorf("exec: connection to bangerd lost: %w", err)
		}
		switch typ {
		case api.FrameStdout:
			out.Write(p)
		case api.FrameStderr:
			errw.Write(p)
		case api.FrameExit:
			var st api.ExitStatus
			err := json.Unmarshal(p, &st)
			return st, err
		case api.FrameError:
			var e api.Error
			if json.Unmarshal(p, &e) != nil {
				return api.ExitStatus{}, fmt.Errorf("exec: %s", p)
			}
			return api.ExitStatus{}, e.Err()
		}
	}
}

// VMPorts lists the TCP ports listening in a running VM.
func (c *Client) VMPorts(ctx context.Context, ref string) ([]api.Port, error) {
	return get[[]api.Port](ctx, c, vmPath(ref, api.ActionPorts))
}

// VMForwards lists a VM's port forwards.
func (c *Client) VMForwards(ctx context.Context, ref string) ([]api.Forward, error) {
	return get[[]api.Forward](ctx, c, vmPath(ref, api.ActionForwards))
}

// AddVMForward relays a host port to a VM's port.
func (c *Client) AddVMForward(ctx context.Context, ref string, f api.Forward) (api.Forward, error) {
	return post[api.Forward](ctx, c, vmPath(ref, api.ActionForwards), f)
}

// RemoveVMForward removes a VM's forward of hostPort.
func (c *Client) RemoveVMForward(ctx context.Context, ref string, hostPort int) error {
	return c.delete(ctx, vmPath(ref, api.ActionForwards, strconv.Itoa(hostPort)))
}

// Engine reports which engine new VMs get and why.
func (c *Client) Engine(ctx context.Context) (api.EngineInfo, error) {
	return get[api.EngineInfo](ctx, c, api.PathEngine)
}

// Network reports host networking and .vm DNS as the daemon set them up
// when it started.
func (c *Client) Network(ctx context.Context) (api.NetworkInfo, error) {
	return get[api.NetworkInfo](ctx, c, api.PathNetwork)
}

// SetVMWorkspace records the guest path of a VM's workspace.
func (c *Client) SetVMWorkspace(ctx context.Context, ref, path string) (api.VM, error) {
	resp, err := c.do(ctx, http.MethodPut, vmPath(ref, api.ActionWorkspace), api.WorkspaceRequest{Path: path})
	if err != nil {
		return api.VM{}, err
	}
	defer resp.Body.Close()
	return decode[api.VM](resp.Body)
}
