package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// fakeQMP serves one scripted QMP session per connection: greeting,
// capabilities, then reply(cmd) for each command, with an event first.
func fakeQMP(t *testing.T, reply func(cmd string) string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "qmp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "qmp.sock")
	ln, err := net.Listen("unix", sock)
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
			go func() {
				defer c.Close()
				c.Write([]byte(`{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}}, "capabilities": ["oob"]}}` + "\n"))
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					var req struct {
						Execute string `json:"execute"`
					}
					json.Unmarshal(sc.Bytes(), &req)
					if req.Execute == "qmp_capabilities" {
						c.Write([]byte(`{"return": {}}` + "\n"))
						continue
					}
					c.Write([]byte(`{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "POWERDOWN"}` + "\n"))
					r := reply(req.Execute)
					if r == "" {
						return // hang up, as QEMU may on quit
					}
					if r == "hang" {
						time.Sleep(time.Hour)
					}
					c.Write([]byte(r + "\n"))
				}
			}()
		}
	}()
	return sock
}

func TestQMP(t *testing.T) {
	sock := fakeQMP(t, func(cmd string) string {
		switch cmd {
		case "query-status":
			return `{"return": {"status": "running", "singlestep": false, "running": true}}`
		case "quit":
			return ""
		case "stuck":
			return "hang"
		}
		return `{"error": {"class": "CommandNotFound", "desc": "The command ` + cmd + ` has not been found"}}`
	})
	ctx := context.Background()
	var st qmpStatus
	if err := qmpCall(ctx, sock, "query-status", nil, &st); err != nil || !st.Running || st.Status != "running" {
		t.Errorf("query-status: %+v, %v", st, err)
	}
	if err := qmpCall(ctx, sock, "quit", nil, nil); err != nil {
		t.Errorf("quit with hang-up: %v", err)
	}
	var qe *QMPError
	if err := qmpCall(ctx, sock, "bogus", nil, nil); !errors.As(err, &qe) || qe.Class != "CommandNotFound" {
		t.Errorf("bogus: %v", err)
	}
	tctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := qmpCall(tctx, sock, "stuck", nil, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("stuck: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("stuck call took %v", d)
	}
	if err := qmpCall(ctx, filepath.Join(t.TempDir(), "none.sock"), "query-status", nil, nil); err == nil {
		t.Error("no socket: no error")
	}
}

// TestPauseReasonAndResume: a guest QEMU paused after a write found the
// host full is reported paused with the disk named; cont resumes it.
func TestPauseReasonAndResume(t *testing.T) {
	var running atomic.Bool
	sock := fakeQMP(t, func(cmd string) string {
		switch cmd {
		case "query-status":
			if running.Load() {
				return `{"return": {"status": "running", "singlestep": false, "running": true}}`
			}
			return `{"return": {"status": "io-error", "singlestep": false, "running": false}}`
		case "query-block":
			// Trimmed from QEMU 7.2's reply.
			return `{"return": [{"io-status": "ok", "device": "disk0", "locked": false, "removable": false, "inserted": {"ro": true, "drv": "raw", "file": "/img/rootfs.ext4"}, "qdev": "/machine/peripheral-anon/device[0]/virtio-backend", "type": "unknown"}, ` +
				`{"io-status": "nospace", "device": "disk1", "locked": false, "removable": false, "inserted": {"ro": false, "drv": "raw", "file": "/vm/disk.ext4"}, "type": "unknown"}]}`
		case "cont":
			running.Store(true)
			return `{"return": {}}`
		}
		return `{"error": {"class": "CommandNotFound", "desc": "no"}}`
	})
	inst := &Instance{st: state{QMPSocket: sock}}
	ctx := context.Background()
	why, err := inst.PauseReason(ctx)
	if err != nil || why != "paused by QEMU: no space left on the host's file system for disk /vm/disk.ext4" {
		t.Errorf("PauseReason = %q, %v", why, err)
	}
	if err := inst.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	if why, err := inst.PauseReason(ctx); err != nil || why != "" {
		t.Errorf("after Resume: PauseReason = %q, %v; want not paused", why, err)
	}
}
