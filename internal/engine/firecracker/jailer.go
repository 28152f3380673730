package firecracker

import (
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/consolelog"
	"github.com/bangervm/banger/internal/engine"
)

// JailerConfig is everything JailerArgs needs; plain data so the command
// line can be table-tested. Field meanings follow jailer.md.
type JailerConfig struct {
	ID              string   `json:"id"`                        // --id: alphanumerics and hyphens, at most 64
	ExecFile        string   `json:"execFile"`                  // --exec-file: the firecracker binary
	UID             int      `json:"uid"`                       // --uid
	GID             int      `json:"gid"`                       // --gid
	ChrootBase      string   `json:"chrootBase,omitempty"`      // --chroot-base-dir; "" leaves the jailer's default
	CgroupVersion   int      `json:"cgroupVersion,omitempty"`   // --cgroup-version when non-zero (1 or 2)
	Cgroups         []string `json:"cgroups,omitempty"`         // --cgroup <file>=<value>, repeated
	ParentCgroup    string   `json:"parentCgroup,omitempty"`    // --parent-cgroup when non-empty
	NetNS           string   `json:"netns,omitempty"`           // --netns <path> when non-empty
	ResourceLimits  []string `json:"resourceLimits,omitempty"`  // --resource-limit <resource>=<value>, repeated
	FirecrackerArgs []string `json:"firecrackerArgs,omitempty"` // after "--", passed to firecracker
}

// JailerArgs returns the jailer's arguments (without argv[0]). It never
// passes --daemonize (the caller detaches, and the console is firecracker's
// stdout) nor --new-pid-ns (so the jailer's pid is firecracker's).
func JailerArgs(c JailerConfig) []string {
	a := []string{
		"--id", c.ID,
		"--exec-file", c.ExecFile,
		"--uid", strconv.Itoa(c.UID),
		"--gid", strconv.Itoa(c.GID),
	}
	if c.CgroupVersion != 0 {
		a = append(a, "--cgroup-version", strconv.Itoa(c.CgroupVersion))
	}
	for _, cg := range c.Cgroups {
		a = append(a, "--cgroup", cg)
	}
	if c.ParentCgroup != "" {
		a = append(a, "--parent-cgroup", c.ParentCgroup)
	}
	if c.ChrootBase != "" {
		a = append(a, "--chroot-base-dir", c.ChrootBase)
	}
	if c.NetNS != "" {
		a = append(a, "--netns", c.NetNS)
	}
	for _, rl := range c.ResourceLimits {
		a = append(a, "--resource-limit", rl)
	}
	if len(c.FirecrackerArgs) > 0 {
		a = append(a, "--")
		a = append(a, c.FirecrackerArgs...)
	}
	return a
}

// JailID maps a VM id to a jailer id: alphanumerics and hyphens, at most 64
// characters. Ids that need changing get a hash suffix so they stay unique.
func JailID(id string) string {
	var b strings.Builder
	for _, r := range id {
		if r < 128 && (r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			b.WriteRune(r)
		} else {
			b.WriteByte('-')
		}
	}
	s := b.String()
	if s == id && len(s) <= 64 {
		return s
	}
	h := fnv.New32a()
	h.Write([]byte(id))
	suffix := fmt.Sprintf("-%08x", h.Sum32())
	if len(s) > 64-len(suffix) {
		s = s[:64-len(suffix)]
	}
	return s + suffix
}

// apiPaths are the file paths as Firecracker sees them (chroot-relative
// under the jailer).
type apiPaths struct {
	kernel, initrd              string
	disks                       []string
	logFile, metricsFile, vsock string
}

// JailDirName is the jail's directory in a VM's directory when a Launcher
// builds it (the chroot base it gives the jailer is <vm dir>/jail).
const JailDirName = "jail"

// JailFile is a file the VM needs inside its jail: Name in the chroot
// (the API's path is "/"+Name), Path on the host, Writable for the VM's
// read-write disks. A Launcher places them; stageJail does without one.
type JailFile struct {
	Name     string `json:"name"`
	Path     string `json:"path"`
	Writable bool   `json:"writable,omitempty"`
}

// jailFiles lists the files spec's VM needs in its jail and the paths the
// API gives Firecracker for them, chroot-relative.
func jailFiles(spec engine.Spec) ([]JailFile, apiPaths) {
	p := apiPaths{logFile: "/" + LogFile, metricsFile: "/" + MetricsFile, vsock: "/" + VsockSocket}
	files := []JailFile{{Name: "vmlinux", Path: spec.Kernel}}
	p.kernel = "/vmlinux"
	if spec.Initrd != "" {
		files = append(files, JailFile{Name: "initrd", Path: spec.Initrd})
		p.initrd = "/initrd"
	}
	for i, d := range spec.Disks {
		files = append(files, JailFile{Name: driveID(i), Path: d.Path, Writable: !d.ReadOnly})
		p.disks = append(p.disks, "/"+driveID(i))
	}
	files = append(files,
		JailFile{Name: LogFile, Path: filepath.Join(spec.Dir, LogPipe)},
		JailFile{Name: MetricsFile, Path: filepath.Join(spec.Dir, MetricsPipe)})
	return files, p
}

// IsPipe reports whether the jail file called name is one of Firecracker's
// log pipes (see LogPipe), which are named pipes, not regular files.
func IsPipe(name string) bool { return name == LogFile || name == MetricsFile }

// makePipes makes the VM's log and metrics pipes in dir, owned by uid:gid
// unless uid < 0, open for the copier (consolelog.MakeFIFO).
func makePipes(dir string, uid, gid int) ([]*os.File, error) {
	var pipes []*os.File
	for _, name := range []string{LogPipe, MetricsPipe} {
		f, err := consolelog.MakeFIFO(filepath.Join(dir, name), uid, gid)
		if err != nil {
			closeAll(pipes)
			return nil, err
		}
		pipes = append(pipes, f)
	}
	return pipes, nil
}

func closeAll(fs []*os.File) {
	for _, f := range fs {
		f.Close()
	}
}

// stageJail makes the chroot and links the VM's files into it: hard links,
// or copies across filesystems for read-only files (a copied writable disk
// would lose the guest's writes, so that is refused, as is a copied log
// pipe). It is for a daemon that starts the jailer itself,
// as root; a Launcher builds the jail for one that does not.
func stageJail(st state, spec engine.Spec, uid, gid int) (apiPaths, error) {
	if err := os.MkdirAll(st.ChrootDir, 0o700); err != nil {
		return apiPaths{}, err
	}
	if err := os.Chown(st.ChrootDir, uid, gid); err != nil {
		return apiPaths{}, err
	}
	files, p := jailFiles(spec)
	for _, f := range files {
		dst := filepath.Join(st.ChrootDir, f.Name)
		err := os.Link(f.Path, dst)
		if errors.Is(err, syscall.EXDEV) {
			if f.Writable || IsPipe(f.Name) {
				return apiPaths{}, fmt.Errorf("cannot hard-link %s into the jail at %s (different filesystems): put the chroot base (config chroot_base) on the filesystem of the VM directories: %w", f.Path, st.ChrootDir, errdefs.ErrFailedPrecondition)
			}
			err = copyFile(f.Path, dst)
		}
		if err != nil {
			return apiPaths{}, fmt.Errorf("stage %s in jail: %w", f.Path, err)
		}
	}
	return p, nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return err
}

// cgroupVersion is the cgroup version the jailer is told to use: the
// configured one, else 2 (the unified hierarchy of current distributions).
func cgroupVersion(v int) int {
	if v == 0 {
		return 2
	}
	return v
}

// cgroupLimits returns the jailer's --cgroup settings: the configured
// ones, else limits derived from the VM's size (cgroup v2 files): CPU time
// for vcpu CPUs, and memory for the guest plus room for Firecracker
// itself.
func cgroupLimits(configured []string, spec engine.Spec) []string {
	if len(configured) > 0 {
		return configured
	}
	const period = 100000
	const vmmOverheadMiB = 128
	return []string{
		fmt.Sprintf("cpu.max=%d %d", spec.VCPU*period, period),
		fmt.Sprintf("memory.max=%d", int64(spec.MemoryMiB+vmmOverheadMiB)<<20),
	}
}
