package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/bangervm/banger/errdefs"
)

// VM is the record of one virtual machine.
type VM struct {
	ID        string
	Name      string
	Image     string
	Kernel    string
	Engine    string
	VCPU      int
	MemoryMiB int
	DiskBytes int64
	State     string
	Reason    string
	Dir       string
	SpecJSON  string // what the VM was created from (image config, boot settings)
	Net       string // none, public or full
	NetIndex  int    // address slot in banger's subnet (1-based; 0 when Net is none)
	Workspace string // guest path of the repository shipped in, if any
	Labels    map[string]string
	ExpiresAt time.Time // zero: no time-to-live
	CreatedAt time.Time
	StartedAt time.Time
}

const vmCols = `id, name, image, kernel, engine, vcpu, memory_mib, disk_bytes, state, reason, dir, spec_json, created_at, started_at, net, net_index, workspace, labels_json, expires_at`

func ts(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

func scanVM(sc interface{ Scan(...any) error }) (VM, error) {
	var v VM
	var created, started, labels string
	var expires int64
	err := sc.Scan(&v.ID, &v.Name, &v.Image, &v.Kernel, &v.Engine, &v.VCPU, &v.MemoryMiB, &v.DiskBytes, &v.State, &v.Reason, &v.Dir, &v.SpecJSON, &created, &started, &v.Net, &v.NetIndex, &v.Workspace, &labels, &expires)
	if err != nil {
		return v, err
	}
	if err := json.Unmarshal([]byte(labels), &v.Labels); err != nil {
		return v, fmt.Errorf("vm %s labels: %w", v.Name, err)
	}
	if len(v.Labels) == 0 {
		v.Labels = nil
	}
	if expires > 0 {
		v.ExpiresAt = time.UnixMilli(expires)
	}
	v.CreatedAt, _ = time.Parse(time.RFC3339Nano, created)
	v.StartedAt, _ = time.Parse(time.RFC3339Nano, started)
	return v, nil
}

// PutVM inserts a new VM; its name and id must be free.
func (s *Store) PutVM(ctx context.Context, v VM) error {
	if v.Net == "" {
		v.Net = "none"
	}
	labels, err := json.Marshal(v.Labels)
	if err != nil || v.Labels == nil {
		labels = []byte("{}")
	}
	_, err = s.db.ExecContext(ctx, `INSERT INTO vms(`+vmCols+`) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`,
		v.ID, v.Name, v.Image, v.Kernel, v.Engine, v.VCPU, v.MemoryMiB, v.DiskBytes, v.State, v.Reason, v.Dir, v.SpecJSON, ts(v.CreatedAt), ts(v.StartedAt), v.Net, v.NetIndex, v.Workspace, string(labels), unixMilli(v.ExpiresAt))
	if err != nil && strings.Contains(err.Error(), "UNIQUE") {
		return fmt.Errorf("vm %q: %w", v.Name, errdefs.ErrAlreadyExists)
	}
	if err != nil {
		return fmt.Errorf("put vm %s: %w", v.Name, err)
	}
	return nil
}

func unixMilli(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// UpdateVM rewrites a VM's mutable fields.
func (s *Store) UpdateVM(ctx context.Context, v VM) error {
	res, err := s.db.ExecContext(ctx, `UPDATE vms SET vcpu=?, memory_mib=?, state=?, reason=?, spec_json=?, started_at=?, workspace=? WHERE id=?`,
		v.VCPU, v.MemoryMiB, v.State, v.Reason, v.SpecJSON, ts(v.StartedAt), v.Workspace, v.ID)
	if err != nil {
		return fmt.Errorf("update vm %s: %w", v.Name, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return notFound("vm", v.Name)
	}
	return nil
}

// GetVM returns the VM whose name is ref exactly, or else whose id is ref
// or starts with it, provided only one does. Names never match by prefix.
func (s *Store) GetVM(ctx context.Context, ref string) (VM, error) {
	v, err := scanVM(s.db.QueryRowContext(ctx, `SELECT `+vmCols+` FROM vms WHERE name = ? OR id = ?`, ref, ref))
	if err == nil {
		return v, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return v, fmt.Errorf("get vm %s: %w", ref, err)
	}
	if len(ref) < 4 || strings.ContainsAny(ref, "%_") {
		return v, notFound("vm", ref)
	}
	rows, err := s.db.QueryContext(ctx, `SELECT `+vmCols+` FROM vms WHERE id LIKE ? LIMIT 2`, ref+"%")
	if err != nil {
		return v, err
	}
	defer rows.Close()
	var found []VM
	for rows.Next() {
		v, err := scanVM(rows)
		if err != nil {
			return v, err
		}
		found = append(found, v)
	}
	switch len(found) {
	case 0:
		return VM{}, notFound("vm", ref)
	case 1:
		return found[0], nil
	}
	return VM{}, fmt.Errorf("vm id prefix %q matches several VMs: give more of the id: %w", ref, errdefs.ErrInvalidArgument)
}

// ListVMs returns every VM, oldest first.
func (s *Store) ListVMs(ctx context.Context) ([]VM, error) {
	return s.queryVMs(ctx, `SELECT `+vmCols+` FROM vms ORDER BY created_at, name`)
}

// ExpiredVMs returns the VMs whose time-to-live ended at or before now,
// soonest first.
func (s *Store) ExpiredVMs(ctx context.Context, now time.Time) ([]VM, error) {
	return s.queryVMs(ctx, `SELECT `+vmCols+` FROM vms WHERE expires_at > 0 AND expires_at <= ? ORDER BY expires_at`, now.UnixMilli())
}

func (s *Store) queryVMs(ctx context.Context, q string, args ...any) ([]VM, error) {
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list vms: %w", err)
	}
	defer rows.Close()
	var out []VM
	for rows.Next() {
		v, err := scanVM(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// DeleteVM removes a VM's record.
func (s *Store) DeleteVM(ctx context.Context, id string) error {
	_, err := s.db.ExecContext(ctx, `DELETE FROM vms WHERE id = ?`, id)
	return err
}

// VMsUsingImage lists the names of VMs built from image.
func (s *Store) VMsUsingImage(ctx context.Context, image string) ([]string, error) {
	return s.names(ctx, `SELECT name FROM vms WHERE image = ? ORDER BY name`, image)
}

// VMsUsingKernel lists the names of VMs that boot kernel.
func (s *Store) VMsUsingKernel(ctx context.Context, kernel string) ([]string, error) {
	return s.names(ctx, `SELECT name FROM vms WHERE kernel = ? ORDER BY name`, kernel)
}

func (s *Store) names(ctx context.Context, q string, arg any) ([]string, error) {
	rows, err := s.db.QueryContext(ctx, q, arg)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, rows.Err()
}

// FreeNetIndex returns the lowest address slot (from 1) no VM holds, so
// addresses are reused only after the VM that had one is deleted.
func (s *Store) FreeNetIndex(ctx context.Context) (int, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT net_index FROM vms WHERE net_index > 0 ORDER BY net_index`)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	next := 1
	for rows.Next() {
		var i int
		if err := rows.Scan(&i); err != nil {
			return 0, err
		}
		if i == next {
			next++
		} else if i > next {
			break
		}
	}
	return next, rows.Err()
}

// Setting returns a daemon-wide setting, or "" when unset.
func (s *Store) Setting(ctx context.Context, key string) (string, error) {
	var v string
	err := s.db.QueryRowContext(ctx, `SELECT value FROM settings WHERE key = ?`, key).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	return v, err
}

// SetSetting records a daemon-wide setting.
func (s *Store) SetSetting(ctx context.Context, key, value string) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO settings(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value`, key, value)
	return err
}

// Forward is a host port relayed to a VM's port.
type Forward struct {
	VM        string
	HostAddr  string
	HostPort  int
	GuestPort int
}

// PutForward records a forward; the host address and port must be free.
func (s *Store) PutForward(ctx context.Context, f Forward) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO forwards(vm, host_addr, host_port, guest_port) VALUES (?,?,?,?)`, f.VM, f.HostAddr, f.HostPort, f.GuestPort)
	if err != nil && strings.Contains(err.Error(), "UNIQUE") {
		return fmt.Errorf("host port %s:%d is already forwarded: %w", f.HostAddr, f.HostPort, errdefs.ErrAlreadyExists)
	}
	return err
}

// Forwards lists the forwards of a VM, or of all VMs when vm is "".
func (s *Store) Forwards(ctx context.Context, vm string) ([]Forward, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT vm, host_addr, host_port, guest_port FROM forwards WHERE ? = '' OR vm = ? ORDER BY host_port`, vm, vm)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Forward
	for rows.Next() {
		var f Forward
		if err := rows.Scan(&f.VM, &f.HostAddr, &f.HostPort, &f.GuestPort); err != nil {
			return nil, err
		}
		out = append(out, f)
	}
	return out, rows.Err()
}

// DeleteForward removes a VM's forward of hostPort.
func (s *Store) DeleteForward(ctx context.Context, vm string, hostPort int) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM forwards WHERE vm = ? AND host_port = ?`, vm, hostPort)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("no forward of host port %d: %w", hostPort, errdefs.ErrNotFound)
	}
	return nil
}
