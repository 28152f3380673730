// Command fcdouble is a test double for Firecracker: it takes Firecracker's
// command line, serves the subset of Firecracker's HTTP API that banger uses
// on the --api-sock unix socket, and on InstanceStart boots the configured
// guest under QEMU (microvm machine, TCG where KVM is unusable). The vsock
// device is emulated with Firecracker's hybrid-vsock protocol on uds_path,
// bridged to a virtio-serial port named banger.agent that banger's guest
// agent falls back to.
//
// It exists so that banger's Firecracker engine can be tested on hosts
// without Firecracker. It is never shipped: the Makefile builds ./cmd/...
// only.
//
// Usage:
//
//	fcdouble --api-sock /tmp/fc.sock [--id ID] [--log-path FILE] [--level LEVEL]
//	fcdouble --version
//
// Environment: FCDOUBLE_QEMU overrides the qemu-system-x86_64 path.
// FCDOUBLE_CHROOT, set by the jailer double, is the jail's root: the
// double cannot chroot (QEMU lives outside the jail), so it resolves every
// absolute path it is given (--api-sock, --log-path, the API's paths)
// under it instead, which is what a jailed Firecracker sees.
package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Version is the Firecracker version the double claims to be.
const Version = "1.12.0"

// defaultAPISock is Firecracker's default --api-sock.
const defaultAPISock = "/run/firecracker.socket"

// options is the parsed command line.
type options struct {
	apiSock    string
	id         string
	logPath    string
	level      string
	version    bool
	help       bool
	configFile string
	noAPI      bool
}

// boolFlags are Firecracker's flags that take no value; any other flag not
// handled here takes one (as "--flag value" or "--flag=value").
var boolFlags = map[string]bool{
	"version": true, "help": true, "no-api": true, "boot-timer": true,
	"show-level": true, "show-log-origin": true, "no-seccomp": true,
	"enable-pci": true, "snapshot-version": true,
}

// parseArgs parses Firecracker's command line. Unknown flags are accepted
// and ignored, with their value when they take one.
func parseArgs(args []string) (options, error) {
	o := options{apiSock: defaultAPISock, id: defaultID}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") || a == "-" || a == "--" {
			return o, fmt.Errorf("unexpected argument %q", a)
		}
		name := strings.TrimLeft(a, "-")
		val, hasVal := "", false
		if k, v, ok := strings.Cut(name, "="); ok {
			name, val, hasVal = k, v, true
		}
		if boolFlags[name] {
			if hasVal {
				return o, fmt.Errorf("flag --%s takes no value", name)
			}
			switch name {
			case "version":
				o.version = true
			case "help":
				o.help = true
			case "no-api":
				o.noAPI = true
			}
			continue
		}
		if !hasVal {
			if i+1 >= len(args) {
				return o, fmt.Errorf("flag --%s needs a value", name)
			}
			i++
			val = args[i]
		}
		switch name {
		case "api-sock":
			o.apiSock = val
		case "id":
			o.id = val
		case "log-path":
			o.logPath = val
		case "level":
			o.level = val
		case "config-file":
			o.configFile = val
		}
	}
	return o, nil
}

// validID is Firecracker's rule for --id.
var validID = regexp.MustCompile(`^[a-zA-Z0-9-]{1,64}$`)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	o, err := parseArgs(args)
	if err != nil {
		fmt.Fprintf(stderr, "Arguments parsing error: %v\n", err)
		return 1
	}
	if o.help {
		fmt.Fprintln(stdout, "fcdouble: a Firecracker test double (QEMU inside)\n\n"+
			"  --api-sock PATH   API unix socket (default "+defaultAPISock+")\n"+
			"  --id ID           instance id\n"+
			"  --log-path PATH   log file or FIFO (must exist)\n"+
			"  --level LEVEL     Error, Warning, Info, Debug, Trace or Off\n"+
			"  --version         print the version and exit")
		return 0
	}
	if o.version {
		fmt.Fprintf(stdout, "Firecracker v%s\n", Version)
		return 0
	}
	if !validID.MatchString(o.id) {
		fmt.Fprintf(stderr, "Invalid instance ID: %q\n", o.id)
		return 1
	}
	if o.configFile != "" || o.noAPI {
		fmt.Fprintln(stderr, "fcdouble: --config-file and --no-api are not supported")
		return 1
	}
	o.apiSock = inJail(o.apiSock)
	if o.logPath != "" {
		o.logPath = inJail(o.logPath)
	}
	log, err := newLogger(o.id, o.logPath, o.level, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "Failed to configure the logger: %v\n", err)
		return 1
	}

	ln, err := net.Listen("unix", o.apiSock)
	if err != nil {
		fmt.Fprintf(stderr, "Failed to open the API socket at %s: %v\n", o.apiSock, err)
		return 1
	}
	m := newQEMUMachine(o.id, log)
	v := newVMM(o.id, log, m)
	srv := &http.Server{Handler: v, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	log.Info("Running Firecracker v" + Version + " (fcdouble) on " + o.apiSock)

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	cleanup := func() {
		ln.Close()
		v.close()
		os.Remove(o.apiSock)
	}
	select {
	case code := <-m.exited:
		log.Info(fmt.Sprintf("Guest exited (QEMU status %d): Firecracker exiting", code))
		cleanup()
		return code
	case s := <-sigs:
		log.Info("Received " + s.String() + ": stopping the guest")
		m.kill()
		cleanup()
		sig, _ := s.(syscall.Signal)
		return 128 + int(sig)
	}
}

// inJail is p as a jailed Firecracker would see it: under FCDOUBLE_CHROOT
// when that is set.
func inJail(p string) string {
	root := os.Getenv("FCDOUBLE_CHROOT")
	if root == "" || !filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(root, p)
}

// outJail undoes inJail: a path under FCDOUBLE_CHROOT as the jailed
// Firecracker named it.
func outJail(p string) string {
	root := os.Getenv("FCDOUBLE_CHROOT")
	if root == "" {
		return p
	}
	if rel, err := filepath.Rel(root, p); err == nil && filepath.IsLocal(rel) {
		return "/" + rel
	}
	return p
}

// logger writes Firecracker-style log lines to the --log-path file (or the
// one PUT /logger names), else to stderr.
type logger struct {
	mu    sync.Mutex
	id    string
	level int
	w     io.Writer
}

var levels = map[string]int{"off": 0, "error": 1, "warning": 2, "warn": 2, "info": 3, "debug": 4, "trace": 5}

func parseLevel(s string) (int, error) {
	if s == "" {
		return levels["info"], nil
	}
	l, ok := levels[strings.ToLower(s)]
	if !ok {
		return 0, fmt.Errorf("invalid log level %q", s)
	}
	return l, nil
}

// openLogFile opens an existing file or FIFO for writing without blocking,
// as Firecracker does (it never creates the file).
func openLogFile(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDWR|os.O_APPEND|syscall.O_NONBLOCK, 0)
}

func newLogger(id, path, level string, def io.Writer) (*logger, error) {
	l, err := parseLevel(level)
	if err != nil {
		return nil, err
	}
	lg := &logger{id: id, level: l, w: def}
	if path != "" {
		f, err := openLogFile(path)
		if err != nil {
			return nil, err
		}
		lg.w = f
	}
	return lg, nil
}

func (l *logger) log(level int, tag, msg string) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if level > l.level {
		return
	}
	fmt.Fprintf(l.w, "%s [%s:%s] %s\n", time.Now().UTC().Format("2006-01-02T15:04:05.000000000"), l.id, tag, msg)
}

// set redirects the log (PUT /logger).
func (l *logger) set(w io.Writer, level int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if c, ok := l.w.(io.Closer); ok && l.w != w && c != io.Closer(os.Stderr) {
		c.Close()
	}
	l.w, l.level = w, level
}

func (l *logger) Info(msg string)  { l.log(3, "INFO", msg) }
func (l *logger) Warn(msg string)  { l.log(2, "WARN", msg) }
func (l *logger) Error(msg string) { l.log(1, "ERROR", msg) }
