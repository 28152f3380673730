package workspace

import (
	"bytes"
	"compress/zlib"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// gitPatches makes patches with git diff, as the guest's export script
// does, over names git quotes and names it does not: spaces, " b/" inside
// a name, tabs, newlines, quotes, backslashes, non-ASCII; renames, copies
// of modes, binary files, symlinks, deletions, empty files.
func gitPatches(t testing.TB) [][]byte {
	t.Helper()
	dir := t.TempDir()
	g := func(args ...string) []byte {
		t.Helper()
		out, err := git2(context.Background(), dir, []string{"GIT_CONFIG_NOSYSTEM=1", "HOME=" + dir}, nil, nil, args...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	put := func(name, content string, mode os.FileMode) { write(t, dir, name, []byte(content), mode) }
	g("init", "-q", ".")
	names := []string{"plain", "with space", "x b/y", "a b/c b/d", "tab\there", "new\nline", `quo"te`, `back\slash`,
		"ünï cödé", "dir/sub dir/f", "-- a/x", "trailing space ", "+++ b", "@@ -1 +1 @@"}
	for i, n := range names {
		put(n, strings.Repeat("line\n", i+3), 0o644)
	}
	put("bin.dat", "\x00\x01\x02binary\xff", 0o644)
	big := make([]byte, 64<<10)
	for i := range big {
		big[i] = byte(i * 7919 >> 3)
	}
	put("big.bin", string(big), 0o644)
	put("gone", "", 0o644)
	if err := os.Symlink("plain", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	g("add", "-A")
	g("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")

	for i, n := range names {
		switch i % 4 {
		case 0: // edit, with content lines that look like headers
			put(n, "--- a/../etc/passwd\n+++ b/../etc/passwd\n"+strings.Repeat("line\n", i+2)+"\\ no", 0o644)
		case 1: // rename
			if err := os.Rename(filepath.Join(dir, n), filepath.Join(dir, n+" moved")); err != nil {
				t.Fatal(err)
			}
		case 2: // mode change
			if err := os.Chmod(filepath.Join(dir, n), 0o755); err != nil {
				t.Fatal(err)
			}
		case 3: // delete
			if err := os.Remove(filepath.Join(dir, n)); err != nil {
				t.Fatal(err)
			}
		}
	}
	put("bin.dat", "\x00\x01\x02binary\xff changed", 0o644)
	big[100] ^= 0xff
	put("big.bin", string(big), 0o644)
	put("new bin", "\x00\xfe", 0o755)
	put("empty new", "", 0o644)
	os.Remove(filepath.Join(dir, "gone"))
	os.Remove(filepath.Join(dir, "link"))
	if err := os.Symlink("with space", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../outside", filepath.Join(dir, "new link")); err != nil {
		t.Fatal(err)
	}
	g("add", "-A")
	var patches [][]byte
	for _, quote := range []string{"true", "false"} {
		patches = append(patches, g(append([]string{"-c", "core.quotePath=" + quote}, append(diffArgs, "--cached", "-M", "HEAD", "--")...)...))
	}
	return patches
}

func TestCheckPatchAcceptsGitDiff(t *testing.T) {
	setupEnv(t)
	for _, p := range gitPatches(t) {
		if err := CheckPatch(bytes.NewReader(p)); err != nil {
			t.Errorf("CheckPatch: %v\n%s", err, p)
		}
		for _, want := range []string{"rename from", "GIT binary patch", "\ndelta ", "\nliteral ", "new file mode 120000", "deleted file mode", "old mode"} {
			if !bytes.Contains(p, []byte(want)) {
				t.Errorf("the test patch lacks %q", want)
			}
		}
	}
	if err := CheckPatch(strings.NewReader("")); err != nil {
		t.Errorf("empty patch: %v", err)
	}
}

// hostilePatches are patches a guest could send, each refused.
var hostilePatches = []struct{ name, patch, want string }{
	{"dotdot", "diff --git a/../x b/../x\nnew file mode 100644\n--- /dev/null\n+++ b/../x\n@@ -0,0 +1 @@\n+x\n", "leaves the repository"},
	{"dotdot deep", "diff --git a/d/../../x b/d/../../x\nindex 1..2 100644\n--- a/d/../../x\n+++ b/d/../../x\n@@ -1 +1 @@\n-a\n+b\n", "leaves the repository"},
	{"absolute", "diff --git a//etc/passwd b//etc/passwd\nindex 1..2 100644\n--- a//etc/passwd\n+++ b//etc/passwd\n@@ -1 +1 @@\n-a\n+b\n", "absolute"},
	{"git dir", "diff --git a/.git/hooks/pre-commit b/.git/hooks/pre-commit\nnew file mode 100755\n--- /dev/null\n+++ b/.git/hooks/pre-commit\n@@ -0,0 +1 @@\n+x\n", "inside .git"},
	{"git dir case", "diff --git a/sub/.GiT/config b/sub/.GiT/config\nnew file mode 100644\n--- /dev/null\n+++ b/sub/.GiT/config\n@@ -0,0 +1 @@\n+x\n", "inside .git"},
	{"git dir dot", "diff --git a/.git./config b/.git./config\nnew file mode 100644\n--- /dev/null\n+++ b/.git./config\n@@ -0,0 +1 @@\n+x\n", "inside .git"},
	{"quoted dotdot", "diff --git \"a/\\056\\056/x\" \"b/\\056\\056/x\"\nnew file mode 100644\n--- /dev/null\n+++ \"b/\\056\\056/x\"\n@@ -0,0 +1 @@\n+x\n", "leaves the repository"},
	{"empty file only on diff line", "diff --git a/../x b/../x\nnew file mode 100644\nindex 0000000..e69de29\n", "leaves the repository"},
	{"rename to", "diff --git a/x b/y\nsimilarity index 100%\nrename from x\nrename to ../y\n", "leaves the repository"},
	{"copy from absolute", "diff --git a/x b/y\nsimilarity index 100%\ncopy from /etc/shadow\ncopy to y\n", "absolute"},
	{"rename carriage return", "diff --git a/x b/y\nsimilarity index 100%\nrename from x\nrename to .git\rfoo\n", "control characters"},
	{"minus tab", "diff --git a/x b/x\nindex 1..2 100644\n--- a/.git\tx\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n", "control characters"},
	{"names disagree", "diff --git a/x b/x\nindex 1..2 100644\n--- a/x\n+++ b/y\n@@ -1 +1 @@\n-a\n+b\n", "disagree"},
	{"header order", "diff --git a/x b/x\n--- a/x\n+++ /dev/null\ndeleted file mode 100644\n", "after the +++ line"},
	{"minus alone", "diff --git a/x b/x\n--- a/x\nindex 1..2\n", "followed by +++"},
	{"traditional patch", "--- a/../x\n+++ b/../x\n@@ -1 +1 @@\n-a\n+b\n", "expected a \"diff --git\" line"},
	{"garbage between files", "diff --git a/x b/x\nindex 1..2 100644\n--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\nhello\n--- a/../y\n+++ b/../y\n@@ -1 +1 @@\n-a\n+b\n", "expected a \"diff --git\" line"},
	{"hunk overrun", "diff --git a/x b/x\nindex 1..2 100644\n--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n+c\n", "expected a \"diff --git\" line"},
	{"hunk short", "diff --git a/x b/x\nindex 1..2 100644\n--- a/x\n+++ b/x\n@@ -1,2 +1,2 @@\n-a\n+b\n", "ends inside a hunk"},
	{"hunk bad line", "diff --git a/x b/x\nindex 1..2 100644\n--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n*b\n", "bad line in a hunk"},
	{"hunk no change", "diff --git a/x b/x\nindex 1..2 100644\n--- a/x\n+++ b/x\n@@ -1 +1 @@\n a\n", "changes nothing"},
	{"hunk without names", "diff --git a/x b/x\nindex 1..2 100644\n@@ -1 +1 @@\n-a\n+b\n", "without ---/+++"},
	{"hunk header", "diff --git a/x b/x\nindex 1..2 100644\n--- a/x\n+++ b/x\n@@ -1 +x @@\n-a\n+b\n", "bad hunk header"},
	{"submodule", "diff --git a/sub b/sub\nnew file mode 160000\nindex 0000000..1234567\n--- /dev/null\n+++ b/sub\n@@ -0,0 +1 @@\n+Subproject commit 1234567\n", "submodule"},
	{"odd mode", "diff --git a/x b/x\nold mode 100644\nnew mode 104755\n", "not a plain file"},
	{"symlink then write under it", "diff --git a/l b/l\nnew file mode 120000\nindex 0000000..1234567\n--- /dev/null\n+++ b/l\n@@ -0,0 +1 @@\n+/home\n\\ No newline at end of file\ndiff --git a/l/x b/l/x\nnew file mode 100644\nindex 0000000..1234567\n--- /dev/null\n+++ b/l/x\n@@ -0,0 +1 @@\n+x\n", "symbolic link"},
	{"binary without data", "diff --git a/x b/x\nindex 1..2 100644\nBinary files a/x and b/x differ\n", "unexpected line"},
	{"binary corrupt", "diff --git a/x b/x\nindex 1..2 100644\nGIT binary patch\nliteral 5\nMcmZQb%FHtY00Y(mYybc\n\n", "bad binary hunk line"},
	{"binary bomb", "diff --git a/x b/x\nindex 1..2 100644\nGIT binary patch\nliteral 5000000000\nMcmZQb%FHtY00Y(mYybcN\n\n", "inflate"},
	{"new and deleted", "diff --git a/x b/x\nnew file mode 100644\ndeleted file mode 100644\n", "mixes"},
	{"dev null mismatch", "diff --git a/x b/x\nindex 1..2 100644\n--- /dev/null\n+++ b/x\n@@ -0,0 +1 @@\n+x\n", "/dev/null"},
	{"no names", "diff --git a/x b/y\nnew file mode 100644\n", "lacks file names"},
	{"no newline", "diff --git a/x b/x\nold mode 100644\nnew mode 100755", "no newline"},
	{"nul", "diff --git a/x\x00y b/x\x00y\nold mode 100644\nnew mode 100755\n", "NUL"},
}

func TestCheckPatchRefuses(t *testing.T) {
	for _, tc := range hostilePatches {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckPatch(strings.NewReader(tc.patch))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("CheckPatch = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// endless yields head, then lines adding 32 KiB each, without end.
type endless struct{ head, line []byte }

func (e *endless) Read(p []byte) (int, error) {
	if len(e.head) > 0 {
		n := copy(p, e.head)
		e.head = e.head[n:]
		return n, nil
	}
	if e.line == nil {
		e.line = append(append([]byte("+"), bytes.Repeat([]byte("x"), 32<<10)...), '\n')
	}
	return copy(p, e.line), nil
}

// base85Lines encodes data as the lines of a binary hunk.
func base85Lines(data []byte) string {
	var b strings.Builder
	for len(data) > 0 {
		n := min(len(data), 52)
		if n <= 26 {
			b.WriteByte(byte('A' + n - 1))
		} else {
			b.WriteByte(byte('a' + n - 27))
		}
		chunk := append([]byte(nil), data[:n]...)
		for len(chunk)%4 != 0 {
			chunk = append(chunk, 0)
		}
		for i := 0; i < len(chunk); i += 4 {
			v := uint32(chunk[i])<<24 | uint32(chunk[i+1])<<16 | uint32(chunk[i+2])<<8 | uint32(chunk[i+3])
			var g [5]byte
			for j := 4; j >= 0; j-- {
				g[j] = base85[v%85]
				v /= 85
			}
			b.Write(g[:])
		}
		b.WriteByte('\n')
		data = data[n:]
	}
	return b.String()
}

func TestCheckPatchBounds(t *testing.T) {
	// A delta whose header claims an 8 GiB result: git apply would
	// allocate it.
	var z bytes.Buffer
	zw := zlib.NewWriter(&z)
	zw.Write(binary.AppendUvarint(binary.AppendUvarint(nil, 1), 8<<30))
	zw.Close()
	delta := "diff --git a/x b/x\nindex 1..2 100644\nGIT binary patch\ndelta 20\n" + base85Lines(z.Bytes()) + "\n"
	if err := CheckPatch(strings.NewReader(delta)); err == nil || !strings.Contains(err.Error(), "inflate") {
		t.Errorf("delta bomb: %v", err)
	}
	z.Reset()
	zw = zlib.NewWriter(&z)
	zw.Write(binary.AppendUvarint(binary.AppendUvarint(nil, 1), 2))
	zw.Close()
	small := "diff --git a/x b/x\nindex 1..2 100644\nGIT binary patch\ndelta 20\n" + base85Lines(z.Bytes()) + "\n"
	if err := CheckPatch(strings.NewReader(small)); err != nil {
		t.Errorf("small delta: %v", err)
	}

	r := &endless{head: []byte("diff --git a/x b/x\nnew file mode 100644\n--- /dev/null\n+++ b/x\n@@ -0,0 +1,2000000000 @@\n")}
	if err := CheckPatch(r); !errors.Is(err, ErrPatchTooLarge) {
		t.Errorf("endless patch: %v, want ErrPatchTooLarge", err)
	}
	long := "diff --git a/" + strings.Repeat("x", maxHeaderLine) + " b/x\n"
	if err := CheckPatch(strings.NewReader(long)); err == nil || !strings.Contains(err.Error(), "longer than") {
		t.Errorf("long header: %v", err)
	}
	// A long content line is fine.
	p := "diff --git a/x b/x\nnew file mode 100644\n--- /dev/null\n+++ b/x\n@@ -0,0 +1 @@\n+" + strings.Repeat("y", 3*maxHeaderLine) + "\n"
	if err := CheckPatch(strings.NewReader(p)); err != nil {
		t.Errorf("long content line: %v", err)
	}
}

// FuzzCheckPatchSyntax checks that CheckPatch never panics and that for
// every patch it accepts, every path git apply itself reads from it (old
// and new names, through --numstat and --numstat -R) is one CheckPatch
// allows: git is the oracle for how names are read.
func FuzzCheckPatchSyntax(f *testing.F) {
	setupEnv(f)
	for _, p := range gitPatches(f) {
		f.Add(p)
	}
	for _, tc := range hostilePatches {
		f.Add([]byte(tc.patch))
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, patch []byte) {
		if CheckPatch(bytes.NewReader(patch)) != nil {
			return
		}
		for _, reverse := range []bool{false, true} {
			args := []string{"apply", "--numstat", "-z"}
			if reverse {
				args = append(args, "-R")
			}
			out, err := git2(context.Background(), dir, nil, nil, bytes.NewReader(patch), args...)
			if err != nil {
				return // git refuses it too
			}
			for _, rec := range bytes.Split(bytes.TrimSuffix(out, []byte{0}), []byte{0}) {
				f := bytes.SplitN(rec, []byte{'\t'}, 3)
				if len(f) != 3 {
					t.Fatalf("numstat record %q", rec)
				}
				if err := checkPath(string(f[2])); err != nil {
					t.Fatalf("CheckPatch accepted a patch in which git apply reads the path %q (%v):\n%q", f[2], err, patch)
				}
			}
		}
	})
}
