package agent

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// Capability bitmaps as a Debian cloud guest's sysfs shows them.
const (
	capsPowerButton = "10000000000000 0"                                            // ACPI "Power Button": KEY_POWER only
	capsSleepButton = "4000 0 0"                                                    // KEY_SLEEP (142) only
	capsATKeyboard  = "402000000 3803078f800d001 feffffdfffefffff fffffffffffffffe" // AT keyboard: KEY_POWER among many
	capsNoKeys      = "0"                                                           // a device without keys
)

func TestHasKey(t *testing.T) {
	for _, tc := range []struct {
		caps string
		want bool
	}{
		{capsPowerButton, true},
		{capsSleepButton, false},
		{capsATKeyboard, true},
		{capsNoKeys, false},
		{"", false},
		{"not-hex 0", false},
	} {
		if got := hasKey(tc.caps, keyPower); got != tc.want {
			t.Errorf("hasKey(%q, KEY_POWER) = %v, want %v", tc.caps, got, tc.want)
		}
	}
	if !hasKey(capsSleepButton, 142) {
		t.Errorf("hasKey(%q, KEY_SLEEP) = false", capsSleepButton)
	}
}

func TestPowerButtons(t *testing.T) {
	sys := t.TempDir()
	for ev, caps := range map[string]string{
		"event0": capsPowerButton, "event1": capsSleepButton, "event2": capsNoKeys, "event3": capsATKeyboard,
	} {
		d := filepath.Join(sys, ev, "device", "capabilities")
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "key"), []byte(caps+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	os.MkdirAll(filepath.Join(sys, "mouse0"), 0o755) // not an evdev node
	if got, want := powerButtons(sys), []string{"event0", "event3"}; !slices.Equal(got, want) {
		t.Errorf("powerButtons = %v, want %v", got, want)
	}
}

func inputEvent(typ, code uint16, value int32) []byte {
	b := make([]byte, inputEventSize)
	binary.NativeEndian.PutUint16(b[16:], typ)
	binary.NativeEndian.PutUint16(b[18:], code)
	binary.NativeEndian.PutUint32(b[20:], uint32(value))
	return b
}

func TestWaitPowerKey(t *testing.T) {
	const evSyn, keyA = 0, 30
	var noise []byte
	for _, ev := range [][]byte{
		inputEvent(evKey, keyA, 1),     // another key
		inputEvent(evSyn, 0, 0),        // a sync report
		inputEvent(evKey, keyPower, 0), // a release without a press
		inputEvent(evKey, keyPower, 2), // autorepeat
	} {
		noise = append(noise, ev...)
	}
	if err := waitPowerKey(bytes.NewReader(noise)); err == nil {
		t.Error("waitPowerKey returned without a press")
	}
	press := append(slices.Clone(noise), inputEvent(evKey, keyPower, 1)...)
	if err := waitPowerKey(bytes.NewReader(press)); err != nil {
		t.Errorf("waitPowerKey on a press: %v", err)
	}
	// A short read (a truncated event) is an error, not a press.
	if err := waitPowerKey(bytes.NewReader(inputEvent(evKey, keyPower, 1)[:20])); err == nil {
		t.Error("waitPowerKey on a truncated event returned nil")
	}
}
