package network

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"

	"github.com/bangervm/banger/internal/hostcmd"
)

// linkExists reports whether the interface name exists.
func linkExists(ctx context.Context, name string) (bool, error) {
	var links []struct {
		Name string `json:"ifname"`
	}
	if err := hostcmd.IPJSON(ctx, &links, "link", "show"); err != nil {
		return false, err
	}
	for _, l := range links {
		if l.Name == name {
			return true, nil
		}
	}
	return false, nil
}

// EnsureBridge creates bridge name if it is missing, gives it the gateway
// address (e.g. 172.30.0.1/24, see Gateway) and brings it up. It is
// idempotent; an existing bridge keeps any other address it has. It
// refuses (CheckSubnetFree) a gateway whose subnet overlaps a network of
// another interface, so that not even a compromised daemon can make the
// root helper shadow the user's LAN.
func EnsureBridge(ctx context.Context, name string, gateway netip.Prefix) error {
	if err := ValidateBridgeName(name); err != nil {
		return err
	}
	if err := ValidateGateway(gateway); err != nil {
		return err
	}
	if err := CheckSubnetFree(ctx, name, gateway.Masked()); err != nil {
		return err
	}
	ok, err := linkExists(ctx, name)
	if err != nil {
		return fmt.Errorf("bridge %s: %w", name, err)
	}
	if !ok {
		if _, err := hostcmd.IP(ctx, "link", "add", "name", name, "type", "bridge"); err != nil {
			return fmt.Errorf("create bridge %s: %w", name, err)
		}
	}
	if _, err := hostcmd.IP(ctx, "addr", "replace", gateway.String(), "dev", name); err != nil {
		return fmt.Errorf("address bridge %s: %w", name, err)
	}
	if _, err := hostcmd.IP(ctx, "link", "set", "dev", name, "up"); err != nil {
		return fmt.Errorf("bring up bridge %s: %w", name, err)
	}
	return nil
}

// DeleteBridge deletes bridge name; a missing bridge is not an error.
func DeleteBridge(ctx context.Context, name string) error {
	if err := ValidateBridgeName(name); err != nil {
		return err
	}
	ok, err := linkExists(ctx, name)
	if err != nil || !ok {
		return err
	}
	if _, err := hostcmd.IP(ctx, "link", "del", "dev", name); err != nil {
		return fmt.Errorf("delete bridge %s: %w", name, err)
	}
	return nil
}

// CreateTap creates the persistent tap device tap owned by uid (so that an
// engine running as that user opens it by name without privileges),
// attaches it to bridge as an isolated port (it cannot exchange frames with
// the bridge's other isolated ports, i.e. other VMs) and brings it up. An
// existing tap is reattached and brought up.
func CreateTap(ctx context.Context, tap, bridge string, uid int) error {
	if err := ValidateTapName(tap); err != nil {
		return err
	}
	if err := ValidateBridgeName(bridge); err != nil {
		return err
	}
	if uid < 0 {
		return invalid("tap %s: owner uid %d", tap, uid)
	}
	ok, err := linkExists(ctx, tap)
	if err != nil {
		return fmt.Errorf("tap %s: %w", tap, err)
	}
	if !ok {
		if _, err := hostcmd.IP(ctx, "tuntap", "add", "dev", tap, "mode", "tap", "user", strconv.Itoa(uid)); err != nil {
			return fmt.Errorf("create tap %s: %w", tap, err)
		}
	}
	return AttachPort(ctx, tap, bridge)
}

// AttachPort makes the existing interface port (a tap name) an isolated
// port of bridge and brings it up. CreateTap calls it; tests use it to
// attach veth stand-ins for VMs.
func AttachPort(ctx context.Context, port, bridge string) error {
	if err := ValidateTapName(port); err != nil {
		return err
	}
	if err := ValidateBridgeName(bridge); err != nil {
		return err
	}
	if _, err := hostcmd.IP(ctx, "link", "set", "dev", port, "master", bridge); err != nil {
		return fmt.Errorf("attach %s to bridge %s: %w", port, bridge, err)
	}
	if _, err := hostcmd.IP(ctx, "link", "set", "dev", port, "type", "bridge_slave", "isolated", "on"); err != nil {
		return fmt.Errorf("isolate bridge port %s: %w", port, err)
	}
	if _, err := hostcmd.IP(ctx, "link", "set", "dev", port, "up"); err != nil {
		return fmt.Errorf("bring up %s: %w", port, err)
	}
	return nil
}

// DeleteTaps deletes the banger taps attached to bridge: persistent taps
// outlive their engine, and a VM stopped without the daemon (system
// uninstall --force with no daemon) leaves its tap behind. Other ports,
// and a missing bridge, are left alone.
func DeleteTaps(ctx context.Context, bridge string) error {
	if err := ValidateBridgeName(bridge); err != nil {
		return err
	}
	var links []struct {
		Name   string `json:"ifname"`
		Master string `json:"master"`
	}
	if err := hostcmd.IPJSON(ctx, &links, "link", "show"); err != nil {
		return err
	}
	var errs []error
	for _, l := range links {
		if l.Master == bridge && ValidateTapName(l.Name) == nil {
			errs = append(errs, DeleteTap(ctx, l.Name))
		}
	}
	return errors.Join(errs...)
}

// DeleteTap deletes tap; a missing tap is not an error.
func DeleteTap(ctx context.Context, tap string) error {
	if err := ValidateTapName(tap); err != nil {
		return err
	}
	ok, err := linkExists(ctx, tap)
	if err != nil || !ok {
		return err
	}
	if _, err := hostcmd.IP(ctx, "link", "del", "dev", tap); err != nil {
		return fmt.Errorf("delete tap %s: %w", tap, err)
	}
	return nil
}
