package agent

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// The engines press the ACPI power button (QEMU's system_powerdown, also
// what the Firecracker test double does for SendCtrlAltDel) when they
// cannot ask the agent to stop: an agent that hangs, or one speaking a
// protocol version the daemon does not. The kernel's button driver turns
// the press into a KEY_POWER input event, read here through evdev, and
// the agent then stops as cleanly as when asked. Without this the guest
// ignores the button and the engine kills it, losing recent writes.

// Linux input event codes (include/uapi/linux/input-event-codes.h).
const (
	evKey    = 0x01
	keyPower = 116
)

// inputEventSize is struct input_event on a 64-bit guest: a timeval
// (16 bytes), type and code (u16 each), value (s32).
const inputEventSize = 24

// powerButtonWait is how long to look for the button's input device after
// the modules are loaded: devtmpfs creates the node shortly after the
// device registers.
const powerButtonWait = 3 * time.Second

// watchPowerButtons calls pressed once KEY_POWER is pressed on any input
// device that has that key. It returns at once when no such device shows
// up (a kernel without the button or evdev module: the engine's force
// stop is then all that is left, as before).
func watchPowerButtons(log *slog.Logger, sysInput, devInput string, pressed func()) {
	var devs []string
	for deadline := time.Now().Add(powerButtonWait); ; time.Sleep(50 * time.Millisecond) {
		if devs = powerButtons(sysInput); len(devs) > 0 || time.Now().After(deadline) {
			break
		}
	}
	if len(devs) == 0 {
		log.Warn("no power button input device (modules button and evdev); the host cannot stop this VM cleanly without the agent")
		return
	}
	press := make(chan string, len(devs))
	for _, d := range devs {
		go func() {
			f, err := openRetry(filepath.Join(devInput, d))
			if err != nil {
				log.Warn("power button", "err", err)
				return
			}
			defer f.Close()
			if err := waitPowerKey(f); err != nil {
				log.Warn("power button", "device", d, "err", err)
				return
			}
			press <- d
		}()
	}
	log.Info("watching the power button", "devices", devs)
	d := <-press
	log.Info("power button pressed", "device", d)
	pressed()
}

// powerButtons names the evdev nodes (event0, ...) under sysInput
// (/sys/class/input) whose device can send KEY_POWER.
func powerButtons(sysInput string) []string {
	evs, _ := filepath.Glob(filepath.Join(sysInput, "event*"))
	var out []string
	for _, ev := range evs {
		b, err := os.ReadFile(filepath.Join(ev, "device", "capabilities", "key"))
		if err == nil && hasKey(string(b), keyPower) {
			out = append(out, filepath.Base(ev))
		}
	}
	return out
}

// hasKey reports whether a capabilities bitmap as sysfs prints it (hex
// words of the kernel's long, most significant first, space-separated)
// has bit code set.
func hasKey(caps string, code int) bool {
	words := strings.Fields(caps)
	i := len(words) - 1 - code/64
	if i < 0 || i >= len(words) {
		return false
	}
	w, err := strconv.ParseUint(words[i], 16, 64)
	return err == nil && w&(1<<(code%64)) != 0
}

// waitPowerKey reads input events from r until KEY_POWER is pressed.
func waitPowerKey(r io.Reader) error {
	var ev [inputEventSize]byte
	for {
		if _, err := io.ReadFull(r, ev[:]); err != nil {
			return fmt.Errorf("read input event: %w", err)
		}
		typ := binary.NativeEndian.Uint16(ev[16:])
		code := binary.NativeEndian.Uint16(ev[18:])
		value := int32(binary.NativeEndian.Uint32(ev[20:]))
		if typ == evKey && code == keyPower && value == 1 {
			return nil
		}
	}
}

// openRetry opens a device node that devtmpfs may not have created yet.
func openRetry(path string) (*os.File, error) {
	for i := 0; ; i++ {
		f, err := os.Open(path)
		if err == nil || !errors.Is(err, os.ErrNotExist) || i == 40 {
			return f, err
		}
		time.Sleep(50 * time.Millisecond)
	}
}
