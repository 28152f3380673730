package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bangervm/banger/errdefs"
)

func TestLoad(t *testing.T) {
	tests := []struct {
		name    string
		toml    string
		wantErr string // substring; "" means success
		check   func(t *testing.T, c Config)
	}{
		{name: "empty", toml: "", check: func(t *testing.T, c Config) {
			if c != Default() {
				t.Errorf("got %+v, want defaults", c)
			}
		}},
		{name: "values", toml: "log_level = \"debug\"\ndefault_image = \"dev\"\n[vm]\nmemory = 1024\n", check: func(t *testing.T, c Config) {
			if c.LogLevel != "debug" || c.DefaultImage != "dev" || c.VM.MemoryMB != 1024 || c.VM.VCPU != 1 {
				t.Errorf("got %+v", c)
			}
		}},
		{name: "unknown top-level key", toml: "log_levle = \"debug\"\n", wantErr: `unknown key "log_levle" (line 1)`},
		{name: "unknown nested key", toml: "[vm]\nvcpus = 2\n", wantErr: `unknown key "vm.vcpus" (line 2)`},
		{name: "bad type", toml: "[vm]\nmemory = \"lots\"\n", wantErr: "line 2"},
		{name: "bad level", toml: "log_level = \"loud\"\n", wantErr: `log_level "loud"`},
		{name: "bad syntax", toml: "log_level = \n", wantErr: "line 1"},
		{name: "auto_stop", toml: "auto_stop = \"30m\"\n", check: func(t *testing.T, c Config) {
			if c.AutoStopAfter() != 30*time.Minute {
				t.Errorf("AutoStopAfter = %s", c.AutoStopAfter())
			}
		}},
		{name: "auto_stop off", toml: "auto_stop = \"0\"\n", check: func(t *testing.T, c Config) {
			if c.AutoStopAfter() != 0 || Default().AutoStopAfter() != 0 {
				t.Errorf("AutoStopAfter = %s", c.AutoStopAfter())
			}
		}},
		{name: "auto_stop not a duration", toml: "auto_stop = \"soon\"\n", wantErr: `auto_stop "soon": want a duration`},
		{name: "auto_stop too short", toml: "auto_stop = \"10ms\"\n", wantErr: `auto_stop "10ms"`},
		{name: "auto_stop negative", toml: "auto_stop = \"-1h\"\n", wantErr: `auto_stop "-1h"`},
		{name: "console_log_max", toml: "console_log_max = \"1M\"\n", check: func(t *testing.T, c Config) {
			if c.ConsoleLogBytes() != 1<<20 || Default().ConsoleLogBytes() != 8<<20 {
				t.Errorf("ConsoleLogBytes = %d", c.ConsoleLogBytes())
			}
		}},
		{name: "console_log_max too small", toml: "console_log_max = \"1K\"\n", wantErr: `console_log_max "1K"`},
		{name: "template_cache_max", toml: "template_cache_max = \"1G\"\n", check: func(t *testing.T, c Config) {
			if c.TemplateCacheBytes() != 1<<30 || Default().TemplateCacheBytes() != 4<<30 {
				t.Errorf("TemplateCacheBytes = %d", c.TemplateCacheBytes())
			}
		}},
		{name: "template_cache_max off", toml: "template_cache_max = \"0\"\n", check: func(t *testing.T, c Config) {
			if c.TemplateCacheBytes() != 0 {
				t.Errorf("TemplateCacheBytes = %d", c.TemplateCacheBytes())
			}
		}},
		{name: "template_cache_max too small", toml: "template_cache_max = \"1M\"\n", wantErr: `template_cache_max "1M"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "config.toml")
			if err := os.WriteFile(path, []byte(tt.toml), 0o600); err != nil {
				t.Fatal(err)
			}
			c, err := Load(path)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), path) {
					t.Fatalf("err = %v, want it to name %q and the file", err, tt.wantErr)
				}
				if !errdefs.IsInvalidArgument(err) {
					t.Errorf("err class = %v, want invalid argument", errdefs.Class(err))
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, c)
		})
	}
}

func TestNetworkEnv(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.toml")
	os.WriteFile(path, []byte("network = true\n"), 0o600)
	t.Setenv("BANGER_NETWORK", "off")
	if c, err := Load(path); err != nil || c.Network {
		t.Errorf("BANGER_NETWORK=off: %+v %v", c.Network, err)
	}
	t.Setenv("BANGER_NETWORK", "maybe")
	if _, err := Load(path); err == nil {
		t.Error("bad BANGER_NETWORK accepted")
	}
}

func TestLoadMissingFile(t *testing.T) {
	t.Setenv("BANGER_NETWORK", "")
	c, err := Load(filepath.Join(t.TempDir(), "nope.toml"))
	if err != nil || c != Default() {
		t.Fatalf("Load(missing) = %+v, %v; want defaults", c, err)
	}
}
