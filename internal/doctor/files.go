package doctor

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/bangervm/banger/internal/sshconf"
)

// checkSSHConfig looks for banger's fenced Include in ~/.ssh/config, which
// only banger ssh-config --install (or doctor --fix, doing the same) adds:
// user files are never changed unasked.
func checkSSHConfig(_ context.Context, f *facts) Result {
	if f.SSHConfig == "" {
		return skip("no home directory, so no ~/.ssh/config (is $HOME set?)")
	}
	inc, err := sshconf.Included(f.SSHConfig)
	if err != nil {
		return warn(fmt.Sprintf("read %s: %v", f.SSHConfig, err), "check the owner and mode of "+f.SSHConfig)
	}
	var r Result
	switch {
	case inc == "":
		r = warn(f.SSHConfig+" does not include banger's ssh config: plain ssh NAME.vm, scp and sftp do not work (banger vm ssh does)", "banger ssh-config --install")
	case filepath.Clean(inc) != filepath.Clean(f.SSHInclude):
		// Another installation's (another BANGER_HOME): not ours to
		// rewrite automatically.
		return warn(fmt.Sprintf("%s includes %s, not this installation's %s", f.SSHConfig, inc, f.SSHInclude), "banger ssh-config --uninstall && banger ssh-config --install")
	default:
		if _, err := os.Stat(f.SSHInclude); err != nil {
			r = warn(fmt.Sprintf("%s includes %s, which is missing", f.SSHConfig, f.SSHInclude), "banger ssh-config --install")
		} else {
			return pass("%s includes %s", f.SSHConfig, f.SSHInclude)
		}
	}
	r.autofix = f.InstallSSH
	return r
}

const (
	gib          = 1 << 30
	diskWarnFree = 5 * gib
	diskFailFree = 1 * gib
)

// checkDisk reports the free space for images, VM disks and kernels (the
// state dir) and for layer blobs (the cache dir).
func checkDisk(_ context.Context, f *facts) Result {
	status := Pass
	var parts, low []string
	seen := map[uint64]string{}
	for _, d := range []struct{ what, dir string }{{"state", f.Layout.State}, {"cache", f.Layout.Cache}} {
		sp, err := f.Statfs(existingParent(d.dir))
		if err != nil {
			parts = append(parts, fmt.Sprintf("%s %s: %v", d.what, d.dir, err))
			status = worse(status, Warn)
			continue
		}
		if other, ok := seen[sp.Dev]; ok {
			parts = append(parts, fmt.Sprintf("%s %s: same file system as %s", d.what, d.dir, other))
			continue
		}
		seen[sp.Dev] = d.what
		parts = append(parts, fmt.Sprintf("%s %s: %s free of %s", d.what, d.dir, gibs(sp.Free), gibs(sp.Total)))
		switch {
		case sp.Free < diskFailFree:
			status = worse(status, Fail)
			low = append(low, d.dir)
		case sp.Free < diskWarnFree:
			status = worse(status, Warn)
			low = append(low, d.dir)
		}
	}
	detail := strings.Join(parts, "; ")
	switch status {
	case Pass:
		return pass("%s", detail)
	case Fail:
		detail += " (under 1 GiB: pulls and new VMs will fail)"
	default:
		if len(low) > 0 {
			detail += " (under 5 GiB)"
		}
	}
	fix := "free space on the file system of " + strings.Join(low, " and ") + ", or: banger vm prune; banger image cache prune"
	if len(low) == 0 {
		fix = "check that the directories are readable"
	}
	return Result{Status: status, Detail: detail, Fix: fix}
}

// existingParent is dir, or its nearest ancestor that exists: a dir not
// made yet will be made on that file system.
func existingParent(dir string) string {
	for {
		if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
			return dir
		}
		up := filepath.Dir(dir)
		if up == dir {
			return dir
		}
		dir = up
	}
}

func gibs(b uint64) string { return fmt.Sprintf("%.1f GiB", float64(b)/gib) }

var rank = map[Status]int{Skip: 0, Pass: 1, Warn: 2, Fail: 3}

func worse(a, b Status) Status {
	if rank[b] > rank[a] {
		return b
	}
	return a
}
