// Package config reads banger's config.toml. Every key has a default, so a
// missing file is a valid, empty config; an unknown key is an error naming
// the key and the file, because a typo silently ignored is a setting the
// user believes in and does not have.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"

	"github.com/bangervm/banger/errdefs"
)

// Config is the whole of config.toml.
type Config struct {
	// LogLevel is the daemon's slog level: debug, info, warn or error.
	LogLevel string `toml:"log_level"`
	// DefaultImage and DefaultKernel are used when a command names none.
	DefaultImage  string `toml:"default_image"`
	DefaultKernel string `toml:"default_kernel"`
	// DebianMirror overrides the mirror mmdebstrap uses for catalog
	// images; empty means the host's own apt sources.
	DebianMirror string `toml:"debian_mirror"`
	// Engine is qemu or firecracker; empty chooses Firecracker when it is
	// installed and KVM works, else QEMU.
	Engine string `toml:"engine"`
	// FirecrackerBin and JailerBin are the Firecracker binaries; empty
	// looks them up in PATH.
	FirecrackerBin string `toml:"firecracker_bin"`
	JailerBin      string `toml:"jailer_bin"`
	// Jailer runs Firecracker under its jailer (chroot, dropped uid,
	// cgroups).
	Jailer bool `toml:"jailer"`
	// QEMUBin is the qemu-system-x86_64 to run; empty looks it up in PATH.
	QEMUBin string `toml:"qemu_bin"`
	// Network turns host networking (bridge, taps, NAT) on; it needs root.
	// The environment variable BANGER_NETWORK=off|on overrides it (tests
	// use it so that no daemon outside a test namespace touches the
	// host's network).
	Network bool `toml:"network"`
	// RootHelper is the root helper's socket, used when bangerd is not
	// root.
	RootHelper string `toml:"root_helper"`
	// Bridge is the host bridge VMs attach to.
	Bridge string `toml:"bridge"`
	// Subnet is banger's IPv4 /24; empty means one chosen on first start
	// that overlaps no existing route or address, then kept.
	Subnet string `toml:"subnet"`
	// DNSAddr is where the .vm DNS server listens.
	DNSAddr string `toml:"dns_addr"`
	// AutoStop stops a running VM after it has been idle this long (a Go
	// duration: "30m", "2h"); empty or "0" never does. See vm.StopIdle
	// for what counts as activity.
	AutoStop string `toml:"auto_stop"`
	// ConsoleLogMax caps each VM's console.log (and the engine's own
	// log); past it the file is rotated to console.log.1. A size such as
	// "8M".
	ConsoleLogMax string `toml:"console_log_max"`
	// TemplateCacheMax caps the disk space VM templates take (a size such
	// as "4G"); past it, making a template removes the least recently
	// used others. "0" turns templates off.
	TemplateCacheMax string     `toml:"template_cache_max"`
	VM               VMDefaults `toml:"vm"`
}

// DefaultTemplateCacheMax: a template takes its guest's touched memory
// plus device state, 80-150 MiB for a default 512 MiB VM (bench/README.md),
// so 4 GiB keeps a few dozen shapes (every image, size and engine a user
// commonly runs) at the size of one default VM disk.
const DefaultTemplateCacheMax = "4G"

// MinAutoStop is the shortest auto_stop accepted.
const MinAutoStop = time.Second

// AutoStopAfter is AutoStop as a duration, 0 when off. validate has
// checked it.
func (c Config) AutoStopAfter() time.Duration {
	d, _ := time.ParseDuration(c.AutoStop)
	return d
}

// ConsoleLogBytes is ConsoleLogMax in bytes. validate has checked it.
func (c Config) ConsoleLogBytes() int64 {
	n, _ := ParseSize(c.ConsoleLogMax)
	return n
}

// TemplateCacheBytes is TemplateCacheMax in bytes, 0 when templates are
// off. validate has checked it.
func (c Config) TemplateCacheBytes() int64 {
	if strings.TrimSpace(c.TemplateCacheMax) == "0" {
		return 0
	}
	n, _ := ParseSize(c.TemplateCacheMax)
	return n
}

// VMDefaults sizes VMs when a command gives no flags.
type VMDefaults struct {
	VCPU     int    `toml:"vcpu"`
	MemoryMB int    `toml:"memory"`
	DiskSize string `toml:"disk_size"`
}

// Default returns the built-in settings.
func Default() Config {
	return Config{
		LogLevel:         "info",
		DefaultImage:     "debian-bookworm",
		DefaultKernel:    "debian-cloud",
		Network:          true,
		Jailer:           true,
		RootHelper:       "/run/banger/root.sock",
		Bridge:           "banger0",
		DNSAddr:          "127.0.0.1:42069",
		ConsoleLogMax:    "8M",
		TemplateCacheMax: DefaultTemplateCacheMax,
		VM:               VMDefaults{VCPU: 1, MemoryMB: 512, DiskSize: "4G"},
	}
}

// Load reads path over the defaults. A missing file gives the defaults.
func Load(path string) (Config, error) {
	c := Default()
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return c, c.ApplyEnv()
	}
	if err != nil {
		return c, fmt.Errorf("read config: %w", err)
	}
	if err := Parse(data, &c); err != nil {
		return c, fmt.Errorf("config %s: %w", path, err)
	}
	return c, c.ApplyEnv()
}

// ApplyEnv applies environment overrides to c.
func (c *Config) ApplyEnv() error {
	if v := os.Getenv("BANGER_ROOT_HELPER"); v != "" {
		c.RootHelper = v
	}
	switch v := os.Getenv("BANGER_NETWORK"); v {
	case "":
	case "on":
		c.Network = true
	case "off":
		c.Network = false
	default:
		return fmt.Errorf("BANGER_NETWORK=%q: want on or off: %w", v, errdefs.ErrInvalidArgument)
	}
	return nil
}

// Parse decodes TOML data over c, refusing unknown keys and bad values.
func Parse(data []byte, c *Config) error {
	dec := toml.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(c); err != nil {
		var strict *toml.StrictMissingError
		if errors.As(err, &strict) {
			var keys []string
			for _, e := range strict.Errors {
				row, _ := e.Position()
				keys = append(keys, fmt.Sprintf("%q (line %d)", strings.Join(e.Key(), "."), row))
			}
			return fmt.Errorf("unknown key %s: remove it or check its spelling: %w", strings.Join(keys, ", "), errdefs.ErrInvalidArgument)
		}
		var de *toml.DecodeError
		if errors.As(err, &de) {
			row, col := de.Position()
			return fmt.Errorf("line %d column %d: %s: %w", row, col, de.Error(), errdefs.ErrInvalidArgument)
		}
		return fmt.Errorf("%v: %w", err, errdefs.ErrInvalidArgument)
	}
	return c.validate()
}

func (c *Config) validate() error {
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("log_level %q: want debug, info, warn or error: %w", c.LogLevel, errdefs.ErrInvalidArgument)
	}
	if c.VM.VCPU < 1 {
		return fmt.Errorf("vm.vcpu %d: want at least 1: %w", c.VM.VCPU, errdefs.ErrInvalidArgument)
	}
	if c.VM.MemoryMB < 64 {
		return fmt.Errorf("vm.memory %d MiB: want at least 64: %w", c.VM.MemoryMB, errdefs.ErrInvalidArgument)
	}
	if n, err := ParseSize(c.ConsoleLogMax); err != nil || n < 64<<10 {
		return fmt.Errorf("console_log_max %q: want a size of at least 64K, such as \"8M\": %w", c.ConsoleLogMax, errdefs.ErrInvalidArgument)
	}
	if strings.TrimSpace(c.TemplateCacheMax) != "0" {
		if n, err := ParseSize(c.TemplateCacheMax); err != nil || n < 64<<20 {
			return fmt.Errorf("template_cache_max %q: want a size of at least 64M, such as \"4G\", or \"0\" to turn templates off: %w", c.TemplateCacheMax, errdefs.ErrInvalidArgument)
		}
	}
	if c.AutoStop != "" {
		d, err := time.ParseDuration(c.AutoStop)
		if err != nil || (d != 0 && d < MinAutoStop) || d < 0 {
			return fmt.Errorf("auto_stop %q: want a duration such as \"30m\" or \"2h\" (at least %s), or \"0\" for never: %w", c.AutoStop, MinAutoStop, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

// ParseSize reads sizes like 4G, 512M, 1.5GiB or a plain byte count.
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(strings.ToUpper(s))
	t = strings.TrimSuffix(strings.TrimSuffix(t, "IB"), "B")
	mult := int64(1)
	if t != "" {
		switch t[len(t)-1] {
		case 'K':
			mult = 1 << 10
		case 'M':
			mult = 1 << 20
		case 'G':
			mult = 1 << 30
		case 'T':
			mult = 1 << 40
		}
		if mult > 1 {
			t = t[:len(t)-1]
		}
	}
	// The whole rest must be the number: "4X" is not 4 bytes.
	f, err := strconv.ParseFloat(t, 64)
	if err != nil || f <= 0 || math.IsInf(f, 0) || math.IsNaN(f) || f*float64(mult) >= math.MaxInt64 {
		return 0, fmt.Errorf("size %q: want a positive number with an optional unit K, M, G or T (binary: 1K = 1024 bytes), such as 4G or 512M: %w", s, errdefs.ErrInvalidArgument)
	}
	return int64(f * float64(mult)), nil
}
