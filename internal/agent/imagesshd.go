package agent

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"

	"github.com/bangervm/banger/internal/agentproto"
)

// An image that runs its own init and ships OpenSSH keeps its sshd: its
// init starts it and the agent serves no SSH. So that `ssh root@<vm>.vm`
// still works with banger's key and is checked against the host key banger
// pinned for the VM, PID 1 installs both into the VM's root before it hands
// over: the VM's own copy-on-write root, so the shared image never changes.
// The image's sshd_config is not rewritten; settings that would refuse
// banger are logged.

const (
	// imageHostKey is where OpenSSH's sshd looks for its ed25519 host key
	// by default.
	imageHostKey = "/etc/ssh/ssh_host_ed25519_key"
	// imageSSHDConfig is OpenSSH's server configuration.
	imageSSHDConfig = "/etc/ssh/sshd_config"
	// maxConfigFile bounds what is read of an image's passwd, sshd_config
	// and authorized_keys: anything larger is not one.
	maxConfigFile = 1 << 20
	// maxIncludeDepth bounds nested sshd_config Include directives (sshd's
	// own limit is 16).
	maxIncludeDepth = 16
)

// prepareImageSSHD installs cfg's host key and authorized keys for the
// image's own sshd into the tree at root: the host key (and its public
// half) as imageHostKey, and the authorized keys appended to root's
// ~/.ssh/authorized_keys (root's home from the image's /etc/passwd).
// Nothing is written through a symbolic link: directories are resolved
// inside root and on its file system only, and files are replaced by
// rename, so a link planted in the image (to another file, or into /proc
// or the image's disk) is replaced, never followed.
func prepareImageSSHD(log *slog.Logger, root string, cfg agentproto.SSHConfig) error {
	signer, err := ssh.ParsePrivateKey([]byte(cfg.HostKey))
	if err != nil {
		return fmt.Errorf("ssh host key: %w", err)
	}
	if t := signer.PublicKey().Type(); t != ssh.KeyAlgoED25519 {
		return fmt.Errorf("ssh host key: type %s, want %s", t, ssh.KeyAlgoED25519)
	}
	keys, err := authorizedKeyLines(cfg.AuthorizedKeys)
	if err != nil {
		return err
	}
	r, err := openTree(root)
	if err != nil {
		return err
	}
	defer r.Close()

	etc, err := r.openDir(path.Dir(imageHostKey), 0o755)
	if err != nil {
		return fmt.Errorf("install the host key: %w", err)
	}
	defer etc.Close()
	pub := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey()))) + " banger\n"
	name := path.Base(imageHostKey)
	wroteKey, err := replaceFileAt(log, etc, imageHostKey, name, []byte(cfg.HostKey), 0o600, 0, 0)
	if err != nil {
		return fmt.Errorf("install the host key: %w", err)
	}
	wrotePub, err := replaceFileAt(log, etc, imageHostKey+".pub", name+".pub", []byte(pub), 0o644, 0, 0)
	if err != nil {
		return fmt.Errorf("install the host key: %w", err)
	}
	log.Info("image sshd: the VM's host key is in place", "path", imageHostKey,
		"fingerprint", ssh.FingerprintSHA256(signer.PublicKey()), "written", wroteKey || wrotePub)

	u := r.rootUser()
	added, file, err := r.authorize(log, u, keys)
	if err != nil {
		return fmt.Errorf("authorize banger's key for %s: %w", u.name, err)
	}
	log.Info("image sshd: banger's key is authorized", "user", u.name, "path", file, "added", added)

	for _, p := range sshdConfigProblems(r.sshdSettings(log), u.home, sshPort(cfg)) {
		log.Warn("image sshd: its configuration may refuse banger's ssh; banger does not change it", "problem", p)
	}
	if fi, err := r.stat(u.home); err == nil && fi.Mode&0o022 != 0 {
		log.Warn("image sshd: root's home is group- or world-writable; sshd (StrictModes) refuses its authorized_keys", "home", u.home)
	}
	return nil
}

// authorizedKey is one key to authorize and the line that does.
type authorizedKey struct {
	key  ssh.PublicKey
	line string
}

// authorizedKeyLines parses cfg's authorized keys (each entry may hold
// several lines and comments) into one line per key.
func authorizedKeyLines(entries []string) ([]authorizedKey, error) {
	if _, err := parseAuthorizedKeys(entries); err != nil { // refuses options
		return nil, err
	}
	var out []authorizedKey
	for _, e := range entries {
		rest := []byte(e)
		for len(bytes.TrimSpace(stripComments(rest))) > 0 {
			key, comment, _, r, err := ssh.ParseAuthorizedKey(rest)
			if err != nil {
				break // only comments left; parseAuthorizedKeys checked the rest
			}
			line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(key)))
			if comment != "" {
				line += " " + comment
			}
			out = append(out, authorizedKey{key: key, line: line})
			rest = r
		}
	}
	if len(out) == 0 {
		return nil, errors.New("ssh: no authorized keys")
	}
	return out, nil
}

// passwdUser is root as the image's /etc/passwd describes it.
type passwdUser struct {
	name string
	gid  int
	home string
}

// rootUser returns uid 0's name, group and home, defaulting to root's.
func (r *tree) rootUser() passwdUser {
	u := passwdUser{name: "root", home: "/root"}
	b, err := r.readFile("/etc/passwd")
	if err != nil {
		return u
	}
	pw, ok := scanPasswd(bytes.NewReader(b), "0")
	if !ok {
		return u
	}
	u.name = pw[0]
	if gid, err := strconv.Atoi(pw[3]); err == nil && gid >= 0 {
		u.gid = gid
	}
	if path.IsAbs(pw[5]) {
		u.home = path.Clean(pw[5])
	}
	return u
}

// authorize appends the keys root lacks to its ~/.ssh/authorized_keys,
// keeping every line already there, and returns how many it added and the
// file's path. A key counts as present on a line without options: with
// options (from=, command=...) sshd may refuse or restrict it.
func (r *tree) authorize(log *slog.Logger, u passwdUser, keys []authorizedKey) (int, string, error) {
	dirPath := path.Join(u.home, ".ssh")
	file := path.Join(dirPath, "authorized_keys")
	home, err := r.openDir(u.home, 0o700)
	if err != nil {
		return 0, file, err
	}
	home.Close()
	dir, err := r.openDir(dirPath, 0o700)
	if err != nil {
		return 0, file, err
	}
	defer dir.Close()
	// sshd's StrictModes refuses keys in a directory others may write.
	if err := dir.Chown(0, u.gid); err != nil {
		return 0, file, fmt.Errorf("%s: %w", dirPath, err)
	}
	if err := dir.Chmod(0o700); err != nil {
		return 0, file, fmt.Errorf("%s: %w", dirPath, err)
	}
	old, err := readRegularAt(dir, file, "authorized_keys")
	if err != nil {
		return 0, file, err
	}
	have, options := map[string]bool{}, map[string]bool{}
	rest := old
	for len(rest) > 0 {
		var line []byte
		line, rest, _ = bytes.Cut(rest, []byte("\n"))
		key, _, opts, _, err := ssh.ParseAuthorizedKey(line)
		if err != nil {
			continue // comments, blank lines and keys this library does not know
		}
		if len(opts) == 0 {
			have[string(key.Marshal())] = true
		} else {
			options[string(key.Marshal())] = true
		}
	}
	out := slices.Clip(old)
	if len(out) > 0 && out[len(out)-1] != '\n' {
		out = append(out, '\n')
	}
	added := 0
	for _, k := range keys {
		w := string(k.key.Marshal())
		if have[w] {
			continue
		}
		if options[w] {
			log.Warn("image sshd: authorized_keys already has banger's key with options, which apply first", "path", file)
		}
		have[w] = true
		out = append(out, k.line+"\n"...)
		added++
	}
	if _, err := replaceFileAt(log, dir, file, "authorized_keys", out, 0o600, 0, u.gid); err != nil {
		return 0, file, err
	}
	return added, file, nil
}

// sshdSettings reads the image's sshd_config the way sshd does: the first
// value of a keyword wins (HostKey, Port and ListenAddress accumulate),
// Include pulls files in where it stands, and the conditional Match blocks
// that end a file are skipped. Keywords are lower case.
func (r *tree) sshdSettings(log *slog.Logger) map[string][]string {
	s := map[string][]string{}
	r.readSSHDConfig(log, s, imageSSHDConfig, 0)
	return s
}

func (r *tree) readSSHDConfig(log *slog.Logger, s map[string][]string, file string, depth int) {
	if depth > maxIncludeDepth {
		return
	}
	b, err := r.readFile(file)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			log.Warn("image sshd: read its configuration", "path", file, "err", err)
		}
		return
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		kw, args := sshdConfigLine(sc.Text())
		switch kw {
		case "":
			continue
		case "match":
			return
		case "include":
			for _, pat := range args {
				if !path.IsAbs(pat) {
					pat = path.Join(path.Dir(imageSSHDConfig), pat)
				}
				for _, f := range r.glob(pat) {
					r.readSSHDConfig(log, s, f, depth+1)
				}
			}
		case "hostkey", "port", "listenaddress":
			s[kw] = append(s[kw], args...)
		default:
			if _, ok := s[kw]; !ok {
				s[kw] = args
			}
		}
	}
}

// sshdConfigLine splits a line into its lower-case keyword and arguments
// ("Keyword arg..." or "Keyword=arg..."; double quotes group words).
func sshdConfigLine(line string) (string, []string) {
	line = strings.TrimSpace(line)
	if line == "" || line[0] == '#' {
		return "", nil
	}
	kw, rest := line, ""
	if i := strings.IndexAny(line, " \t="); i >= 0 {
		kw, rest = line[:i], strings.TrimLeft(line[i:], " \t")
		rest = strings.TrimPrefix(rest, "=")
	}
	var args []string
	for {
		rest = strings.TrimLeft(rest, " \t")
		if rest == "" || rest[0] == '#' {
			break
		}
		var a string
		if rest[0] == '"' {
			a, rest, _ = strings.Cut(rest[1:], `"`)
		} else if i := strings.IndexAny(rest, " \t"); i >= 0 {
			a, rest = rest[:i], rest[i:]
		} else {
			a, rest = rest, ""
		}
		args = append(args, a)
	}
	return strings.ToLower(kw), args
}

// sshdConfigProblems returns what in the settings s would make the image's
// sshd refuse banger: root's login with banger's key, from home's
// .ssh/authorized_keys, checked against imageHostKey, on port.
func sshdConfigProblems(s map[string][]string, home string, port int) []string {
	var out []string
	first := func(kw string) string {
		if v := s[kw]; len(v) > 0 {
			return strings.ToLower(v[0])
		}
		return ""
	}
	switch v := first("permitrootlogin"); v {
	case "no", "forced-commands-only":
		out = append(out, "PermitRootLogin "+v+": root cannot log in with banger's key")
	}
	if first("pubkeyauthentication") == "no" {
		out = append(out, "PubkeyAuthentication no: banger's key is not accepted")
	}
	if hk := s["hostkey"]; len(hk) > 0 && !slices.Contains(hk, imageHostKey) {
		out = append(out, fmt.Sprintf("HostKey %s: sshd does not present %s, the VM's pinned key, so ssh refuses it", strings.Join(hk, " "), imageHostKey))
	}
	if ak, ok := s["authorizedkeysfile"]; ok {
		found := false
		for _, f := range ak {
			f = strings.ReplaceAll(strings.ReplaceAll(f, "%h", home), "%%", "%")
			if !path.IsAbs(f) {
				f = path.Join(home, f)
			}
			found = found || path.Clean(f) == path.Join(home, ".ssh/authorized_keys")
		}
		if !found {
			out = append(out, fmt.Sprintf("AuthorizedKeysFile %s: sshd does not read %s", strings.Join(ak, " "), path.Join(home, ".ssh/authorized_keys")))
		}
	}
	if ports := s["port"]; len(ports) > 0 && !slices.Contains(ports, strconv.Itoa(port)) {
		out = append(out, fmt.Sprintf("Port %s: banger's ssh connects to port %d", strings.Join(ports, " "), port))
	}
	return out
}

// replaceFileAt makes name in dir a regular file holding data with mode
// perm, owned by uid:gid, unless it already is one; what was there (a file,
// or a symbolic link, whose target is left alone) is replaced atomically.
// show is the path for messages. It reports whether it wrote.
func replaceFileAt(log *slog.Logger, dir *os.File, show, name string, data []byte, perm uint32, uid, gid int) (bool, error) {
	dfd := int(dir.Fd())
	var st unix.Stat_t
	switch err := unix.Fstatat(dfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); {
	case err == nil && st.Mode&unix.S_IFMT == unix.S_IFREG:
		if st.Mode&0o7777 == perm && int(st.Uid) == uid && int(st.Gid) == gid && st.Size == int64(len(data)) {
			if b, err := readRegularAt(dir, show, name); err == nil && bytes.Equal(b, data) {
				return false, nil
			}
		}
	case err == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR:
		return false, fmt.Errorf("%s is a directory", show)
	case err == nil:
		log.Warn("image sshd: replacing what is not a regular file (a symbolic link's target is left alone)", "path", show, "type", fileType(st.Mode))
	case !errors.Is(err, unix.ENOENT):
		return false, fmt.Errorf("%s: %w", show, err)
	}
	tmp, f, err := createTempAt(dfd, name)
	if err != nil {
		return false, fmt.Errorf("%s: %w", show, err)
	}
	err = writeAndSync(f, data, perm, uid, gid)
	if err == nil {
		err = unix.Renameat(dfd, tmp, dfd, name)
	}
	if err != nil {
		_ = unix.Unlinkat(dfd, tmp, 0)
		return false, fmt.Errorf("write %s: %w", show, err)
	}
	_ = unix.Fsync(dfd)
	return true, nil
}

// createTempAt creates a new file in dfd beside name, under a name no one
// can guess in advance, never through a link.
func createTempAt(dfd int, name string) (string, *os.File, error) {
	for range 8 {
		var b [6]byte
		_, _ = rand.Read(b[:])
		tmp := "." + name + ".banger-" + hex.EncodeToString(b[:])
		fd, err := unix.Openat(dfd, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if errors.Is(err, unix.EEXIST) {
			continue
		}
		if err != nil {
			return "", nil, err
		}
		return tmp, os.NewFile(uintptr(fd), tmp), nil
	}
	return "", nil, errors.New("cannot create a temporary file")
}

// writeAndSync writes data to f, sets its owner and mode, syncs and closes
// it.
func writeAndSync(f *os.File, data []byte, perm uint32, uid, gid int) error {
	defer f.Close()
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := f.Chown(uid, gid); err != nil {
		return err
	}
	// After chown, which may clear mode bits; explicit, so umask does not
	// matter.
	if err := f.Chmod(os.FileMode(perm)); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	return f.Close()
}

// readRegularAt returns the contents of name in dir when it is a regular
// file, and nothing when it is missing or something else (a symbolic link
// is not followed: its target is none of the agent's business).
func readRegularAt(dir *os.File, show, name string) ([]byte, error) {
	// O_NONBLOCK: opening a FIFO planted there must not hang the boot.
	fd, err := unix.Openat(int(dir.Fd()), name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	switch {
	case errors.Is(err, unix.ENOENT):
		return nil, nil
	case errors.Is(err, unix.ELOOP):
		return nil, nil // replaceFileAt replaces it, and says so
	case err != nil:
		return nil, fmt.Errorf("%s: %w", show, err)
	}
	f := os.NewFile(uintptr(fd), show)
	defer f.Close()
	return readRegular(f, show)
}

func readRegular(f *os.File, show string) ([]byte, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, nil
	}
	if fi.Size() > maxConfigFile {
		return nil, fmt.Errorf("%s: larger than %d bytes", show, maxConfigFile)
	}
	return io.ReadAll(io.LimitReader(f, maxConfigFile))
}

func fileType(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFLNK:
		return "symlink"
	case unix.S_IFIFO:
		return "fifo"
	case unix.S_IFSOCK:
		return "socket"
	case unix.S_IFCHR, unix.S_IFBLK:
		return "device"
	}
	return "other"
}

// tree is a directory tree, the root of an image, whose paths are resolved
// as a chroot into it would, and more strictly: symbolic links are
// followed only inside the tree and on its file system (not into /proc,
// /dev, the image's or disk's mounts), and never magic links.
type tree struct {
	path string
	fd   int
	dev  uint64
}

// resolveInTree is openat2's version of a chroot, bounded to one mount.
const resolveInTree = unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_XDEV | unix.RESOLVE_NO_MAGICLINKS

func openTree(dir string) (*tree, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", dir, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("stat %s: %w", dir, err)
	}
	return &tree{path: dir, fd: fd, dev: st.Dev}, nil
}

func (r *tree) Close() error { return unix.Close(r.fd) }

// rel turns an image path into one relative to the tree.
func rel(p string) string {
	p = strings.TrimPrefix(path.Clean("/"+p), "/")
	if p == "" {
		return "."
	}
	return p
}

// open opens p (an image path) in the tree with flags.
func (r *tree) open(p string, flags int) (*os.File, error) {
	how := &unix.OpenHow{Flags: uint64(flags | unix.O_CLOEXEC), Resolve: resolveInTree}
	for range 16 {
		fd, err := unix.Openat2(r.fd, rel(p), how)
		switch {
		case err == nil:
			return os.NewFile(uintptr(fd), p), nil
		case errors.Is(err, unix.EAGAIN): // a rename raced the lookup
			continue
		case errors.Is(err, unix.ENOSYS):
			return r.openNoLinks(p, flags)
		case errors.Is(err, unix.EXDEV):
			return nil, fmt.Errorf("%s: leads out of the root file system: %w", p, err)
		}
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	return nil, fmt.Errorf("%s: %w", p, unix.EAGAIN)
}

// openNoLinks is open for kernels without openat2 (before 5.6): it walks
// the path itself and refuses every symbolic link on the way.
func (r *tree) openNoLinks(p string, flags int) (*os.File, error) {
	parts := strings.Split(rel(p), "/")
	fd, err := unix.Dup(r.fd)
	if err != nil {
		return nil, err
	}
	for i, part := range parts {
		fl := unix.O_PATH | unix.O_DIRECTORY
		if i == len(parts)-1 {
			fl = flags
		}
		next, err := unix.Openat(fd, part, fl|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		unix.Close(fd)
		if err != nil {
			if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
				return nil, fmt.Errorf("%s: symbolic links are not followed on this kernel (no openat2): %w", p, err)
			}
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		fd = next
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil || st.Dev != r.dev {
			unix.Close(fd)
			return nil, fmt.Errorf("%s: leads out of the root file system: %w", p, unix.EXDEV)
		}
	}
	return os.NewFile(uintptr(fd), p), nil
}

// openDir opens directory p in the tree, creating it and missing parents
// with mode perm (when perm is not zero).
func (r *tree) openDir(p string, perm os.FileMode) (*os.File, error) {
	d, err := r.open(p, unix.O_RDONLY|unix.O_DIRECTORY)
	if err == nil || perm == 0 || !errors.Is(err, unix.ENOENT) || rel(p) == "." {
		return d, err
	}
	parent, err := r.openDir(path.Dir(path.Clean("/"+p)), perm)
	if err != nil {
		return nil, err
	}
	defer parent.Close()
	name := path.Base(p)
	if err := unix.Mkdirat(int(parent.Fd()), name, uint32(perm)); err != nil && !errors.Is(err, unix.EEXIST) {
		return nil, fmt.Errorf("create %s: %w", p, err)
	}
	// What exists there now (a link that led nowhere, say) must be the
	// directory just made: no link is followed from here.
	fd, err := unix.Openat(int(parent.Fd()), name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("%s: not a directory in the root file system: %w", p, err)
	}
	return os.NewFile(uintptr(fd), p), nil
}

// readFile reads the regular file p in the tree, following links inside.
func (r *tree) readFile(p string) ([]byte, error) {
	f, err := r.open(p, unix.O_RDONLY|unix.O_NONBLOCK)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, fmt.Errorf("%s: %w", p, os.ErrNotExist)
		}
		return nil, err
	}
	defer f.Close()
	b, err := readRegular(f, p)
	if err == nil && b == nil {
		return nil, fmt.Errorf("%s: not a regular file", p)
	}
	return b, err
}

// stat returns p's status in the tree.
func (r *tree) stat(p string) (unix.Stat_t, error) {
	var st unix.Stat_t
	f, err := r.open(p, unix.O_PATH)
	if err != nil {
		return st, err
	}
	defer f.Close()
	err = unix.Fstat(int(f.Fd()), &st)
	return st, err
}

// glob returns the files matching pat, an image path whose last element
// may hold a pattern (as in sshd_config's Include), in lexical order.
func (r *tree) glob(pat string) []string {
	dir, base := path.Split(path.Clean(pat))
	d, err := r.open(dir, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return nil
	}
	defer d.Close()
	names, _ := d.Readdirnames(-1)
	var out []string
	for _, n := range names {
		if ok, _ := path.Match(base, n); ok {
			out = append(out, path.Join(dir, n))
		}
	}
	slices.Sort(out)
	return out
}
