// Package ext4test reads ext4 images for tests without mounting them, by
// parsing debugfs output, and checks them with e2fsck.
package ext4test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/bangervm/banger/internal/hostcmd"
	"github.com/bangervm/banger/internal/testutil"
)

// RequireTools skips the test when e2fsprogs is not installed.
func RequireTools(t testing.TB) {
	t.Helper()
	for _, tool := range []string{"mke2fs", "debugfs", "e2fsck"} {
		testutil.RequireTool(t, tool, "e2fsprogs")
	}
}

// Inode is what debugfs's stat shows of one inode.
type Inode struct {
	Ino      uint64
	Type     string // "regular", "directory", "symlink", ...
	Perm     uint32 // permission and special bits
	UID, GID uint32
	Size     int64
	Links    int
	Mtime    int64
	FastLink string // target of a symbolic link stored in the inode
}

var (
	reInode = regexp.MustCompile(`Inode: (\d+)\s+Type: (\S+)\s+Mode:\s+(\d+)`)
	reUser  = regexp.MustCompile(`User:\s+(\d+)\s+Group:\s+(\d+).*Size: (\d+)`)
	reLinks = regexp.MustCompile(`Links: (\d+)`)
	reMtime = regexp.MustCompile(`(?m)^\s*mtime: 0x([0-9a-f]+)`)
	reFast  = regexp.MustCompile(`(?m)^Fast link dest: "(.*)"$`)
)

// ParseStat parses the output of debugfs's stat command.
func ParseStat(out string) (Inode, error) {
	var in Inode
	m := reInode.FindStringSubmatch(out)
	if m == nil {
		return in, fmt.Errorf("no inode in debugfs stat output %q", out)
	}
	in.Ino, _ = strconv.ParseUint(m[1], 10, 64)
	in.Type = m[2]
	perm, _ := strconv.ParseUint(m[3], 8, 32)
	in.Perm = uint32(perm)
	if m = reUser.FindStringSubmatch(out); m == nil {
		return in, fmt.Errorf("no owner in debugfs stat output %q", out)
	}
	uid, _ := strconv.ParseUint(m[1], 10, 32)
	gid, _ := strconv.ParseUint(m[2], 10, 32)
	in.UID, in.GID = uint32(uid), uint32(gid)
	in.Size, _ = strconv.ParseInt(m[3], 10, 64)
	if m = reLinks.FindStringSubmatch(out); m != nil {
		in.Links, _ = strconv.Atoi(m[1])
	}
	if m = reMtime.FindStringSubmatch(out); m != nil {
		mt, _ := strconv.ParseUint(m[1], 16, 32)
		in.Mtime = int64(int32(uint32(mt)))
	}
	if m = reFast.FindStringSubmatch(out); m != nil {
		in.FastLink = m[1]
	}
	return in, nil
}

func request(ctx context.Context, image, cmd string, args ...string) ([]byte, error) {
	line := cmd
	for _, a := range args {
		q, err := hostcmd.DebugfsQuote(a)
		if err != nil {
			return nil, err
		}
		line += " " + q
	}
	return hostcmd.DebugfsRequest(ctx, image, line)
}

// Stat returns the inode at path in image. A path that does not exist is
// an error.
func Stat(ctx context.Context, image, path string) (Inode, error) {
	out, err := request(ctx, image, "stat", path)
	if err != nil {
		return Inode{}, err
	}
	in, err := ParseStat(string(out))
	if err != nil {
		return in, fmt.Errorf("stat %s: %w", path, err)
	}
	return in, nil
}

// Exists reports whether path exists in image.
func Exists(ctx context.Context, image, path string) bool {
	_, err := Stat(ctx, image, path)
	return err == nil
}

// Cat returns the content of the file (or slow symbolic link) at path.
func Cat(ctx context.Context, image, path string) ([]byte, error) {
	if _, err := Stat(ctx, image, path); err != nil {
		return nil, err
	}
	return request(ctx, image, "cat", path)
}

// Readlink returns the target of the symbolic link at path.
func Readlink(ctx context.Context, image, path string) (string, error) {
	in, err := Stat(ctx, image, path)
	if err != nil {
		return "", err
	}
	if in.Type != "symlink" {
		return "", fmt.Errorf("%s is a %s, not a symlink", path, in.Type)
	}
	if in.FastLink != "" {
		return in.FastLink, nil
	}
	b, err := request(ctx, image, "cat", path)
	return string(b), err
}

var reEA = regexp.MustCompile(`^  (.+?) \((\d+)\)(?: = |$)`)

// Xattrs returns the extended attributes of path with their exact values.
func Xattrs(ctx context.Context, image, path string) (map[string][]byte, error) {
	if _, err := Stat(ctx, image, path); err != nil {
		return nil, err
	}
	out, err := request(ctx, image, "ea_list", path)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "ext4test-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	xs := map[string][]byte{}
	for i, l := range strings.Split(string(out), "\n") {
		m := reEA.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		name := unprint(m[1])
		vf := filepath.Join(dir, strconv.Itoa(i))
		q, _ := hostcmd.DebugfsQuote(vf)
		if _, err := request(ctx, image, "ea_get -f "+q, path, name); err != nil {
			return nil, err
		}
		v, err := os.ReadFile(vf)
		if err != nil {
			return nil, fmt.Errorf("read xattr %s of %s: %w", name, path, err)
		}
		xs[name] = v
	}
	return xs, nil
}

var reHex = regexp.MustCompile(`^([0-9a-f]{2} ?)+$`)

// unprint undoes debugfs's printing of an xattr name: hex bytes when the
// name is mostly unprintable, else C escapes.
func unprint(s string) string {
	if reHex.MatchString(s) {
		var b []byte
		for _, h := range strings.Fields(s) {
			v, _ := strconv.ParseUint(h, 16, 8)
			b = append(b, byte(v))
		}
		return string(b)
	}
	var b []byte
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' || i+1 == len(s) {
			b = append(b, s[i])
			continue
		}
		i++
		switch c := s[i]; c {
		case 'a':
			b = append(b, '\a')
		case 'b':
			b = append(b, '\b')
		case 'f':
			b = append(b, '\f')
		case 'n':
			b = append(b, '\n')
		case 'r':
			b = append(b, '\r')
		case 't':
			b = append(b, '\t')
		case 'v':
			b = append(b, '\v')
		case '0', '1', '2', '3':
			if i+2 < len(s) {
				if v, err := strconv.ParseUint(s[i:i+3], 8, 8); err == nil {
					b = append(b, byte(v))
					i += 2
					continue
				}
			}
			b = append(b, c)
		default:
			b = append(b, c)
		}
	}
	return string(b)
}

// Entry is one line of debugfs's "ls -p".
type Entry struct {
	Ino  uint64
	Name string
}

// List returns the entries of the directory at path, without "." and "..".
func List(ctx context.Context, image, path string) ([]Entry, error) {
	if _, err := Stat(ctx, image, path); err != nil {
		return nil, err
	}
	out, err := request(ctx, image, "ls -p", path)
	if err != nil {
		return nil, err
	}
	var es []Entry
	for _, l := range strings.Split(string(out), "\n") {
		// /ino/mode/uid/gid/name/size/
		f := strings.Split(l, "/")
		if len(f) < 7 {
			continue
		}
		name := strings.Join(f[5:len(f)-2], "/")
		if name == "." || name == ".." {
			continue
		}
		ino, _ := strconv.ParseUint(f[1], 10, 64)
		es = append(es, Entry{Ino: ino, Name: name})
	}
	return es, nil
}

// Fsck runs e2fsck -fn on image and returns an error holding its report
// if the file system is not clean.
func Fsck(ctx context.Context, image string) error {
	var out bytes.Buffer
	if _, err := hostcmd.Run(ctx, hostcmd.Cmd{Name: "e2fsck", Args: []string{"-fn", image}, Stdout: &out, Package: "e2fsprogs"}); err != nil {
		return fmt.Errorf("%w\n%s", err, out.String())
	}
	return nil
}
