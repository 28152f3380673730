package errdefs

import (
	"errors"
	"fmt"
	"testing"
)

func TestCodeRoundTrip(t *testing.T) {
	seen := map[string]bool{}
	for _, class := range Classes() {
		err := fmt.Errorf("vm %q: %w", "web", class)
		code := Code(err)
		if code == "" || seen[code] {
			t.Fatalf("class %v: code %q empty or shared", class, code)
		}
		seen[code] = true
		back := FromCode(code, err.Error())
		if !errors.Is(back, class) || back.Error() != err.Error() {
			t.Errorf("class %v: back %v (%q)", class, back, back.Error())
		}
		// What older root helpers and agents sent.
		if legacy := FromCode(class.Error(), "x"); !errors.Is(legacy, class) {
			t.Errorf("class text %q not accepted", class.Error())
		}
	}
	if Code(errors.New("plain")) != "" {
		t.Error("a plain error has a code")
	}
	if err := FromCode("", "plain"); Class(err) != nil || err.Error() != "plain" {
		t.Errorf("no code: %v", err)
	}
	if err := FromCode("bogus", "m"); Class(err) != nil {
		t.Errorf("unknown code: %v", err)
	}
}
