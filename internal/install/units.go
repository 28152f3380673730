package install

import (
	"bytes"
	"embed"
	"fmt"
	"path/filepath"
	"strings"
	"text/template"

	"github.com/bangervm/banger/errdefs"
)

//go:embed bangerd.service.tmpl bangerd-root.service.tmpl
var unitFS embed.FS

var units = template.Must(template.New("").Option("missingkey=error").ParseFS(unitFS, "*.tmpl"))

// unitData is what the unit templates see.
type unitData struct {
	Record
	OwnerDirs        []string // read-write for the daemon; the rest of /home is read-only
	HelperRuntimeDir string   // RuntimeDirectory= of the helper: the socket's directory under /run
	DaemonRuntimeDir string   // RuntimeDirectory= of the daemon
	// OwnerState and OwnerVMs are the owner's state directory and VM
	// directories, where the helper builds Firecracker's jails.
	OwnerState, OwnerVMs string
	// OwnerTemplates is the owner's template cache: jailed VMs start
	// from templates the helper sealed there.
	OwnerTemplates string
}

// Units renders the daemon's and the helper's unit files for r.
func Units(r Record) (daemon, helper []byte, err error) {
	if err := r.Owner.Check(); err != nil {
		return nil, nil, err
	}
	if r.KVMGroup != "" && !userName.MatchString(r.KVMGroup) {
		return nil, nil, fmt.Errorf("kvm group %q: not a plain group name: %w", r.KVMGroup, errdefs.ErrInvalidArgument)
	}
	p := r.Paths
	for _, path := range []string{p.CLI, p.Daemon, p.Agent, p.HelperSocket, p.DaemonRuntime} {
		if !safePath.MatchString(path) || filepath.Clean(path) != path {
			return nil, nil, fmt.Errorf("install path %q: must be absolute, clean and of plain characters: %w", path, errdefs.ErrInvalidArgument)
		}
	}
	helperRT, err := underRun(filepath.Dir(p.HelperSocket))
	if err != nil {
		return nil, nil, fmt.Errorf("helper socket %s: %w", p.HelperSocket, err)
	}
	daemonRT, err := underRun(p.DaemonRuntime)
	if err != nil {
		return nil, nil, fmt.Errorf("daemon runtime directory %s: %w", p.DaemonRuntime, err)
	}
	if helperRT == daemonRT || strings.HasPrefix(daemonRT, helperRT+"/") || strings.HasPrefix(helperRT, daemonRT+"/") {
		// The helper's directory is root's (0755), the daemon's the
		// owner's (0700): neither may contain the other.
		return nil, nil, fmt.Errorf("helper socket %s and daemon runtime %s share a directory: %w", p.HelperSocket, p.DaemonRuntime, errdefs.ErrInvalidArgument)
	}
	if r.Jailer != "" || r.Firecracker != "" {
		for _, b := range []string{r.Jailer, r.Firecracker} {
			if !safePath.MatchString(b) || filepath.Clean(b) != b {
				return nil, nil, fmt.Errorf("jailer and firecracker %q: both needed, absolute, clean and of plain characters: %w", b, errdefs.ErrInvalidArgument)
			}
		}
	}
	l := r.Owner.Layout(p)
	d := unitData{Record: r, OwnerDirs: []string{l.Config, l.State, l.Cache}, HelperRuntimeDir: helperRT, DaemonRuntimeDir: daemonRT,
		OwnerState: l.State, OwnerVMs: filepath.Join(l.State, "vms"), OwnerTemplates: l.Templates()}
	var db, hb bytes.Buffer
	if err := units.ExecuteTemplate(&db, "bangerd.service.tmpl", d); err != nil {
		return nil, nil, err
	}
	if err := units.ExecuteTemplate(&hb, "bangerd-root.service.tmpl", d); err != nil {
		return nil, nil, err
	}
	return db.Bytes(), hb.Bytes(), nil
}

// underRun returns dir relative to /run, as RuntimeDirectory= takes it.
func underRun(dir string) (string, error) {
	rel, ok := strings.CutPrefix(dir, "/run/")
	if !ok || rel == "" {
		return "", fmt.Errorf("not under /run: %w", errdefs.ErrInvalidArgument)
	}
	return rel, nil
}
