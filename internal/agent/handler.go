package agent

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/agentproto"
	"github.com/bangervm/banger/internal/buildinfo"
)

// HandlerConfig configures a Handler.
type HandlerConfig struct {
	Logger  *slog.Logger
	Version string   // agent version; default buildinfo.Version
	Env     []string // the image's environment
	Dir     string   // default working directory
	User    string   // default user
	// EtcDir holds passwd and group; default /etc.
	EtcDir string
	// DiskPath is where the VM's own disk is mounted, for Stats; empty
	// when there is none.
	DiskPath string
	// ProcDir is /proc; tests point it elsewhere.
	ProcDir string
	// Shutdown makes the guest's data safe and PowerOff ends the guest.
	// Nil Shutdown only syncs; nil PowerOff does nothing (tests, and an
	// agent that does not own the machine).
	Shutdown func(ctx context.Context) error
	PowerOff func()
	// SetClock sets the machine's wall clock; nil refuses (tests, and an
	// agent that does not own the machine's clock).
	SetClock func(t time.Time) error

	waiter waiter // nil: directWaiter
}

// Handler implements agentproto.Handler on the machine it runs on.
type Handler struct {
	cfg    HandlerConfig
	log    *slog.Logger
	waiter waiter
}

var _ agentproto.Handler = (*Handler)(nil)
var _ agentproto.ClockSetter = (*Handler)(nil)

// clockRange bounds the times SetClock accepts: a host clock outside it
// is broken, and setting the guest's to it helps nobody.
var clockRange = [2]time.Time{time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC)}

// SetClock implements agentproto.ClockSetter.
func (h *Handler) SetClock(ctx context.Context, t time.Time) error {
	if h.cfg.SetClock == nil {
		return fmt.Errorf("set clock: this agent does not own the clock: %w", errdefs.ErrFailedPrecondition)
	}
	if t.Before(clockRange[0]) || t.After(clockRange[1]) {
		return fmt.Errorf("set clock: %s is out of range: %w", t.UTC().Format(time.RFC3339), errdefs.ErrInvalidArgument)
	}
	if err := h.cfg.SetClock(t); err != nil {
		return fmt.Errorf("set clock: %w", err)
	}
	return nil
}

// NewHandler returns a Handler for cfg.
func NewHandler(cfg HandlerConfig) *Handler {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.Version == "" {
		cfg.Version = buildinfo.Version
	}
	if cfg.EtcDir == "" {
		cfg.EtcDir = "/etc"
	}
	if cfg.ProcDir == "" {
		cfg.ProcDir = "/proc"
	}
	w := cfg.waiter
	if w == nil {
		w = directWaiter{}
	}
	return &Handler{cfg: cfg, log: cfg.Logger, waiter: w}
}

// Health implements agentproto.Handler.
func (h *Handler) Health(ctx context.Context) (agentproto.Info, error) {
	host, _ := os.Hostname()
	up, _ := h.uptime()
	return agentproto.Info{
		AgentVersion:    h.cfg.Version,
		ProtocolVersion: agentproto.ProtocolVersion,
		Hostname:        host,
		Uptime:          up,
		PID:             os.Getpid(),
	}, nil
}

func (h *Handler) uptime() (time.Duration, error) {
	b, err := os.ReadFile(filepath.Join(h.cfg.ProcDir, "uptime"))
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0, fmt.Errorf("parse uptime %q", b)
	}
	s, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return 0, fmt.Errorf("parse uptime: %w", err)
	}
	return time.Duration(s * float64(time.Second)), nil
}

// Stats implements agentproto.Handler.
func (h *Handler) Stats(ctx context.Context) (agentproto.Stats, error) {
	var s agentproto.Stats
	var err error
	if s.MemTotal, s.MemAvailable, err = readMeminfo(filepath.Join(h.cfg.ProcDir, "meminfo")); err != nil {
		return s, err
	}
	b, err := os.ReadFile(filepath.Join(h.cfg.ProcDir, "loadavg"))
	if err != nil {
		return s, fmt.Errorf("read loadavg: %w", err)
	}
	if f := strings.Fields(string(b)); len(f) >= 3 {
		s.Load1, _ = strconv.ParseFloat(f[0], 64)
		s.Load5, _ = strconv.ParseFloat(f[1], 64)
		s.Load15, _ = strconv.ParseFloat(f[2], 64)
	}
	if s.Uptime, err = h.uptime(); err != nil {
		return s, fmt.Errorf("read uptime: %w", err)
	}
	if s.Root, err = diskUsage("/"); err != nil {
		return s, err
	}
	if h.cfg.DiskPath != "" {
		if d, err := diskUsage(h.cfg.DiskPath); err == nil {
			s.Disk = &d
		}
	}
	// Counters are extras: a guest kernel without them still reports the
	// rest.
	s.Block, _ = readDiskstats(filepath.Join(h.cfg.ProcDir, "diskstats"))
	s.Net, _ = readNetDev(filepath.Join(h.cfg.ProcDir, "net", "dev"))
	return s, nil
}

// virtioDisk matches whole virtio block devices (vda, not vda1), the only
// disks banger gives a guest.
var virtioDisk = regexp.MustCompile(`^vd[a-z]+$`)

// readDiskstats returns the bytes read and written of each virtio disk.
// A line is "major minor name reads merged sectors-read ms writes merged
// sectors-written ..."; sectors are 512 bytes whatever the device's block
// size (Documentation/admin-guide/iostats.rst).
func readDiskstats(path string) ([]agentproto.IOCounter, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []agentproto.IOCounter
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 10 || !virtioDisk.MatchString(f[2]) {
			continue
		}
		rd, err1 := strconv.ParseUint(f[5], 10, 64)
		wr, err2 := strconv.ParseUint(f[9], 10, 64)
		if err1 != nil || err2 != nil {
			continue
		}
		out = append(out, agentproto.IOCounter{Name: f[2], In: rd * 512, Out: wr * 512})
	}
	return out, nil
}

// readNetDev returns the bytes received and sent of each interface but lo.
// After two header lines, a line is "name: rx-bytes packets errs drop fifo
// frame compressed multicast tx-bytes ...".
func readNetDev(path string) ([]agentproto.IOCounter, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []agentproto.IOCounter
	for _, line := range strings.Split(string(b), "\n") {
		name, rest, ok := strings.Cut(line, ":")
		name = strings.TrimSpace(name)
		f := strings.Fields(rest)
		if !ok || name == "lo" || len(f) < 9 {
			continue
		}
		rx, err1 := strconv.ParseUint(f[0], 10, 64)
		tx, err2 := strconv.ParseUint(f[8], 10, 64)
		if err1 != nil || err2 != nil {
			continue
		}
		out = append(out, agentproto.IOCounter{Name: name, In: rx, Out: tx})
	}
	return out, nil
}

// readMeminfo returns MemTotal and MemAvailable in bytes.
func readMeminfo(path string) (total, avail uint64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, fmt.Errorf("read meminfo: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fields := strings.Fields(v)
		if len(fields) == 0 {
			continue
		}
		n, err := strconv.ParseUint(fields[0], 10, 64)
		if err != nil {
			continue
		}
		if len(fields) > 1 && fields[1] == "kB" {
			n *= 1024
		}
		switch k {
		case "MemTotal":
			total = n
		case "MemAvailable":
			avail = n
		}
	}
	return total, avail, sc.Err()
}

func diskUsage(path string) (agentproto.DiskUsage, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return agentproto.DiskUsage{}, fmt.Errorf("statfs %s: %w", path, err)
	}
	bs := uint64(st.Bsize)
	return agentproto.DiskUsage{
		Path:  path,
		Total: st.Blocks * bs,
		Used:  (st.Blocks - st.Bfree) * bs,
		Free:  st.Bavail * bs,
	}, nil
}

func checkAbs(path string) error {
	if !filepath.IsAbs(path) {
		return fmt.Errorf("path %q is not absolute: %w", path, errdefs.ErrInvalidArgument)
	}
	return nil
}

// Open implements agentproto.Handler.
func (h *Handler) Open(ctx context.Context, path string) (io.ReadCloser, agentproto.FileInfo, error) {
	if err := checkAbs(path); err != nil {
		return nil, agentproto.FileInfo{}, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, agentproto.FileInfo{}, errdefs.FromFS(err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, agentproto.FileInfo{}, err
	}
	if fi.IsDir() {
		f.Close()
		return nil, agentproto.FileInfo{}, fmt.Errorf("read %s: is a directory: %w", path, errdefs.ErrInvalidArgument)
	}
	return f, agentproto.FileInfo{Name: fi.Name(), Size: fi.Size(), Mode: fi.Mode(), ModTime: fi.ModTime()}, nil
}

// Create implements agentproto.Handler: a temporary file beside path,
// renamed over it on Commit after fsync.
func (h *Handler) Create(ctx context.Context, path string, mode fs.FileMode) (agentproto.PendingFile, error) {
	if err := checkAbs(path); err != nil {
		return nil, err
	}
	path = filepath.Clean(path)
	dir := filepath.Dir(path)
	if fi, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("write %s: parent directory: %w", path, errdefs.FromFS(err))
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("write %s: parent %s is not a directory: %w", path, dir, errdefs.ErrInvalidArgument)
	}
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		return nil, fmt.Errorf("write %s: is a directory: %w", path, errdefs.ErrInvalidArgument)
	}
	f, err := os.CreateTemp(dir, ".banger-write-*")
	if err != nil {
		return nil, fmt.Errorf("write %s: %w", path, errdefs.FromFS(err))
	}
	// Chmod, not the create mode, so the umask does not change it.
	if err := f.Chmod(mode.Perm()); err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, fmt.Errorf("write %s: %w", path, err)
	}
	return &pendingFile{f: f, path: path}, nil
}

type pendingFile struct {
	f    *os.File
	path string
}

func (p *pendingFile) Write(b []byte) (int, error) { return p.f.Write(b) }

func (p *pendingFile) Commit() error {
	if err := p.f.Sync(); err != nil {
		p.Abort()
		return fmt.Errorf("write %s: sync: %w", p.path, err)
	}
	if err := p.f.Close(); err != nil {
		os.Remove(p.f.Name())
		return fmt.Errorf("write %s: %w", p.path, err)
	}
	if err := os.Rename(p.f.Name(), p.path); err != nil {
		os.Remove(p.f.Name())
		return fmt.Errorf("write %s: %w", p.path, err)
	}
	// Make the rename itself durable.
	if d, err := os.Open(filepath.Dir(p.path)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

func (p *pendingFile) Abort() {
	p.f.Close()
	os.Remove(p.f.Name())
}

// Shutdown implements agentproto.Handler.
func (h *Handler) Shutdown(ctx context.Context) error {
	if h.cfg.Shutdown != nil {
		return h.cfg.Shutdown(ctx)
	}
	unix.Sync()
	return nil
}

// PowerOff implements agentproto.Handler.
func (h *Handler) PowerOff() {
	if h.cfg.PowerOff != nil {
		h.cfg.PowerOff()
	}
}
