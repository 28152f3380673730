package workspace

import (
	"bufio"
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Bounds on an exported patch, which comes from the guest.
const (
	// MaxPatchSize bounds the patch itself. git apply refuses patches
	// of 1023 MiB and more anyway.
	MaxPatchSize = 1 << 30
	// MaxInflatedSize bounds the sum of the sizes binary hunks declare,
	// inflated, and of the results binary deltas declare: git apply
	// holds them in memory, so a small patch could otherwise make it
	// allocate terabytes.
	MaxInflatedSize = 4 << 30
	// maxHeaderLine bounds a header line: two quoted names of PATH_MAX
	// bytes, each byte quoted as up to four.
	maxHeaderLine = 64 << 10
)

// ErrPatchTooLarge is returned for a patch over MaxPatchSize bytes.
var ErrPatchTooLarge = fmt.Errorf("patch is larger than %d MiB", MaxPatchSize>>20)

// CheckPatch reads a patch exported from a guest and checks it before it
// is written anywhere or applied: at most MaxPatchSize bytes; exactly the
// syntax `git diff --binary` writes (a "diff --git" header per file,
// known extended header lines with plain file modes, unified hunks whose
// line counts match, binary hunks in base-85 within MaxInflatedSize),
// with nothing else in between; and every path it names, however git apply would read it,
// relative and inside the repository: no absolute path, no "." or ".."
// component, no ".git" component (in any case), no empty component, no
// NUL. Nothing may be written under a path the patch makes a symbolic
// link. An empty patch is valid.
//
// Errors name the patch line and quote what was refused (with %q, so a
// hostile name cannot reach a terminal as control sequences).
func CheckPatch(r io.Reader) error {
	c := &patchChecker{lr: lineReader{br: bufio.NewReaderSize(r, 64<<10)}, symlinks: map[string]bool{}}
	if err := c.check(); err != nil {
		if errors.Is(err, ErrPatchTooLarge) {
			return err
		}
		return fmt.Errorf("patch line %d: %w", c.lr.num, err)
	}
	return nil
}

// lineReader reads lines of any length, keeping at most maxHeaderLine
// bytes of each, and counts them.
type lineReader struct {
	br     *bufio.Reader
	n      int64 // bytes read
	num    int   // number of the current line, from 1
	buf    []byte
	long   bool // the current line was longer than buf
	unread bool // next returns the current line again
}

// next returns the next line without its newline (its first maxHeaderLine
// bytes when lr.long), or io.EOF after the last. A last line without a
// newline is an error: git diff ends every line.
func (lr *lineReader) next() ([]byte, error) {
	if lr.unread {
		lr.unread = false
		return lr.buf, nil
	}
	lr.buf, lr.long = lr.buf[:0], false
	for {
		chunk, err := lr.br.ReadSlice('\n')
		lr.n += int64(len(chunk))
		if lr.n > MaxPatchSize {
			return nil, ErrPatchTooLarge
		}
		if room := maxHeaderLine - len(lr.buf); len(chunk) > room {
			lr.buf, lr.long = append(lr.buf, chunk[:room]...), true
		} else {
			lr.buf = append(lr.buf, chunk...)
		}
		switch {
		case err == nil:
			lr.num++
			if !lr.long {
				lr.buf = lr.buf[:len(lr.buf)-1]
			}
			return lr.buf, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF):
			if len(lr.buf) == 0 {
				return nil, io.EOF
			}
			lr.num++
			return nil, errors.New("the last line has no newline")
		default:
			return nil, err
		}
	}
}

// header reads the next line for a header, which must fit in the buffer.
func (lr *lineReader) header() ([]byte, error) {
	line, err := lr.next()
	if err == nil && lr.long {
		return nil, fmt.Errorf("header line longer than %d bytes", maxHeaderLine)
	}
	return line, err
}

type patchChecker struct {
	lr       lineReader
	inflated int64
	// symlinks are paths the patch leaves as symbolic links; written are
	// the paths it leaves as anything else. None of written may be under
	// one of symlinks.
	symlinks map[string]bool
	written  []string
}

func (c *patchChecker) check() error {
	for {
		line, err := c.lr.header()
		if errors.Is(err, io.EOF) {
			return c.checkSymlinks()
		}
		if err != nil {
			return err
		}
		if !bytes.HasPrefix(line, []byte("diff --git ")) {
			return fmt.Errorf("expected a \"diff --git\" line, got %.80q", line)
		}
		if err := c.file(line); err != nil {
			return err
		}
	}
}

// filePatch is what the header of one file's patch says.
type filePatch struct {
	def                 string // the name on the "diff --git" line, as git apply reads it; "" if none
	minus, plus         *string
	minusNull, plusNull bool
	from, to            *string // rename or copy
	isNew, isDelete     bool
	isRename, isCopy    bool
	newMode, mode       uint32 // mode: from the index line
	seen                map[string]bool
}

// file checks one file's patch, from its "diff --git" line to the line
// before the next one.
func (c *patchChecker) file(diffLine []byte) error {
	f := filePatch{seen: map[string]bool{}}
	if name, ok := gitHeaderName(diffLine[len("diff --git "):]); ok {
		if err := checkPath(name); err != nil {
			return err
		}
		f.def = name
	}
	var line []byte
	var err error
	for {
		line, err = c.lr.header()
		if errors.Is(err, io.EOF) {
			line = nil
			break
		}
		if err != nil {
			return err
		}
		if bytes.HasPrefix(line, []byte("diff --git ")) || bytes.HasPrefix(line, []byte("@@ -")) || string(line) == "GIT binary patch" {
			break
		}
		if err := f.headerLine(string(line)); err != nil {
			return err
		}
	}
	if err := f.finish(); err != nil {
		return err
	}
	switch {
	case f.isDelete: // nothing is written
	case f.resultMode() == modeSymlink:
		c.symlinks[f.newName()] = true
	default:
		c.written = append(c.written, f.newName())
	}

	switch {
	case line == nil:
		return nil
	case bytes.HasPrefix(line, []byte("@@ -")):
		if f.minus == nil && !f.minusNull || f.plus == nil && !f.plusNull {
			return errors.New("hunk without ---/+++ lines")
		}
		for {
			if err := c.hunk(line); err != nil {
				return err
			}
			line, err = c.lr.next()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return err
			}
			if !bytes.HasPrefix(line, []byte("@@ -")) {
				c.lr.unread = true
				return nil
			}
		}
	case string(line) == "GIT binary patch":
		if f.minus != nil || f.plus != nil || f.minusNull || f.plusNull {
			return errors.New("binary patch after ---/+++ lines")
		}
		return c.binary()
	default: // the next file's "diff --git"
		c.lr.unread = true
		return nil
	}
}

const (
	modeFile    = 0o100644
	modeExec    = 0o100755
	modeSymlink = 0o120000
)

func (f *filePatch) headerLine(line string) error {
	key, rest, ok := cutHeader(line)
	if !ok {
		return fmt.Errorf("unexpected line in a file header: %.80q", line)
	}
	if f.seen[key] {
		return fmt.Errorf("%q twice in one file header", key)
	}
	// "--- " and "+++ " come last, as git diff writes them: git apply
	// reads some names differently depending on what came before.
	switch {
	case f.seen["+++ "]:
		return fmt.Errorf("%.80q after the +++ line", line)
	case f.seen["--- "] != (key == "+++ "):
		return fmt.Errorf("%.80q: a --- line must come last but one, followed by +++", line)
	}
	f.seen[key] = true
	err := f.headerValue(key, rest)
	if errors.Is(err, errGitlink) && f.def != "" {
		return fmt.Errorf("%q is %w", f.def, err)
	}
	return err
}

func (f *filePatch) headerValue(key, rest string) error {
	var err error
	switch key {
	case "old mode ":
		_, err = parseMode(rest)
	case "new mode ":
		f.newMode, err = parseMode(rest)
	case "deleted file mode ":
		f.isDelete = true
		_, err = parseMode(rest)
	case "new file mode ":
		f.isNew = true
		f.newMode, err = parseMode(rest)
	case "similarity index ", "dissimilarity index ":
		n, perr := strconv.ParseUint(strings.TrimSuffix(rest, "%"), 10, 8)
		if perr != nil || n > 100 || !strings.HasSuffix(rest, "%") {
			err = fmt.Errorf("bad %s%q", key, rest)
		}
	case "index ":
		err = f.index(rest)
	case "rename from ", "rename to ", "copy from ", "copy to ":
		var name string
		if name, err = nameOnLine(rest, ""); err == nil {
			err = checkPath(name)
		}
		switch key {
		case "rename from ":
			f.isRename, f.from = true, &name
		case "rename to ":
			f.isRename, f.to = true, &name
		case "copy from ":
			f.isCopy, f.from = true, &name
		case "copy to ":
			f.isCopy, f.to = true, &name
		}
	case "--- ", "+++ ":
		prefix, null, name := "a/", &f.minusNull, &f.minus
		if key == "+++ " {
			prefix, null, name = "b/", &f.plusNull, &f.plus
		}
		if rest == "/dev/null" {
			*null = true
			break
		}
		// git diff ends a name holding a space with a tab.
		rest = strings.TrimSuffix(rest, "\t")
		var n string
		if n, err = nameOnLine(rest, prefix); err == nil {
			err = checkPath(n)
		}
		*name = &n
	}
	return err
}

// headerKeys are the extended header lines git diff writes, with "--- "
// and "+++ ". git apply also knows "rename old"/"rename new", which git
// has not written since 2005.
var headerKeys = []string{"old mode ", "new mode ", "deleted file mode ", "new file mode ",
	"similarity index ", "dissimilarity index ", "index ",
	"rename from ", "rename to ", "copy from ", "copy to ", "--- ", "+++ "}

func cutHeader(line string) (key, rest string, ok bool) {
	for _, k := range headerKeys {
		if r, ok := strings.CutPrefix(line, k); ok {
			return k, r, true
		}
	}
	return "", "", false
}

// errGitlink refuses a submodule, or a repository the guest made inside
// the workspace, which git diff shows as a commit id.
var errGitlink = errors.New("a submodule or nested repository (mode 160000), which export does not carry; remove it in the guest or list it in .gitignore there")

func parseMode(s string) (uint32, error) {
	m, err := strconv.ParseUint(s, 8, 32)
	if err != nil {
		return 0, fmt.Errorf("bad file mode %.20q", s)
	}
	switch m {
	case modeFile, modeExec, modeSymlink:
		return uint32(m), nil
	case modeGitlink:
		return 0, errGitlink
	}
	return 0, fmt.Errorf("file mode %o is not a plain file, executable or symbolic link", m)
}

// index checks "HASH..HASH" with an optional " MODE".
func (f *filePatch) index(rest string) error {
	hashes, mode, hasMode := strings.Cut(rest, " ")
	a, b, ok := strings.Cut(hashes, "..")
	if !ok || !isHex(a) || !isHex(b) {
		return fmt.Errorf("bad index line %.100q", rest)
	}
	if hasMode {
		m, err := parseMode(mode)
		if err != nil {
			return err
		}
		f.mode = m
	}
	return nil
}

func isHex(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !('0' <= s[i] && s[i] <= '9' || 'a' <= s[i] && s[i] <= 'f') {
			return false
		}
	}
	return true
}

// finish checks that the header is consistent and names both sides in
// one way, so that git apply cannot pick a name this check did not see.
func (f *filePatch) finish() error {
	kinds := 0
	for _, b := range []bool{f.isNew, f.isDelete, f.isRename, f.isCopy} {
		if b {
			kinds++
		}
	}
	if kinds > 1 {
		return errors.New("file header mixes new, deleted, rename and copy")
	}
	if (f.isRename || f.isCopy) && (f.from == nil || f.to == nil) {
		return errors.New("rename or copy without both names")
	}
	if f.minusNull != f.isNew || f.plusNull != f.isDelete {
		if f.minus != nil || f.plus != nil || f.minusNull || f.plusNull {
			return errors.New("/dev/null does not match new or deleted file")
		}
	}
	if f.seen["old mode "] != f.seen["new mode "] {
		return errors.New("old mode without new mode, or the reverse")
	}
	oldName, newName := f.def, f.def
	if f.from != nil {
		oldName, newName = *f.from, *f.to
	}
	if oldName == "" && !f.isNew && f.minus == nil || newName == "" && !f.isDelete && f.plus == nil {
		return errors.New("file header lacks file names")
	}
	for _, n := range []struct {
		name *string
		want string
	}{{f.minus, oldName}, {f.plus, newName}} {
		if n.name != nil && n.want != "" && *n.name != n.want {
			return fmt.Errorf("file names disagree: %q and %q", *n.name, n.want)
		}
	}
	return nil
}

// newName is the path the file has after the patch.
func (f *filePatch) newName() string {
	switch {
	case f.to != nil:
		return *f.to
	case f.plus != nil:
		return *f.plus
	}
	return f.def
}

func (f *filePatch) resultMode() uint32 {
	if f.newMode != 0 {
		return f.newMode
	}
	return f.mode
}

// hunk checks one unified hunk: its header and exactly the lines it
// counts, as git apply reads them.
func (c *patchChecker) hunk(header []byte) error {
	if c.lr.long {
		return errors.New("hunk header too long")
	}
	oldN, newN, err := parseHunkHeader(string(header))
	if err != nil {
		return err
	}
	changed := false
	for oldN > 0 || newN > 0 {
		line, err := c.lr.next()
		if errors.Is(err, io.EOF) {
			return errors.New("the patch ends inside a hunk")
		}
		if err != nil {
			return err
		}
		op := byte(' ')
		if len(line) > 0 {
			op = line[0]
		}
		switch op {
		case ' ':
			if oldN == 0 || newN == 0 {
				return errors.New("more lines than the hunk header counts")
			}
			oldN, newN = oldN-1, newN-1
		case '-':
			if oldN == 0 {
				return errors.New("more removed lines than the hunk header counts")
			}
			oldN, changed = oldN-1, true
		case '+':
			if newN == 0 {
				return errors.New("more added lines than the hunk header counts")
			}
			newN, changed = newN-1, true
		case '\\':
			if len(line) < 11 || line[1] != ' ' {
				return fmt.Errorf("bad line in a hunk: %.80q", line)
			}
		default:
			return fmt.Errorf("bad line in a hunk: %.80q", line)
		}
	}
	if !changed {
		return errors.New("hunk changes nothing")
	}
	// A "\ No newline at end of file" after the last counted line.
	line, err := c.lr.next()
	if errors.Is(err, io.EOF) {
		return nil
	}
	if err != nil {
		return err
	}
	if !bytes.HasPrefix(line, []byte(`\ `)) || len(line) < 11 {
		c.lr.unread = true
	}
	return nil
}

// parseHunkHeader parses "@@ -A[,B] +C[,D] @@[ text]" and returns B and D.
func parseHunkHeader(h string) (oldN, newN uint64, err error) {
	rest := strings.TrimPrefix(h, "@@ -")
	oldN, rest, err1 := parseRange(rest, " +")
	newN, rest, err2 := parseRange(rest, " @@")
	if err1 != nil || err2 != nil || rest != "" && rest[0] != ' ' {
		return 0, 0, fmt.Errorf("bad hunk header %.80q", h)
	}
	return oldN, newN, nil
}

// parseRange parses "START[,COUNT]" followed by sep and returns COUNT
// (1 when absent) and what follows sep.
func parseRange(s, sep string) (uint64, string, error) {
	r, rest, ok := strings.Cut(s, sep)
	if !ok {
		return 0, "", errors.New("no range")
	}
	start, count, hasCount := strings.Cut(r, ",")
	if _, err := strconv.ParseUint(start, 10, 31); err != nil || !isDigits(start) {
		return 0, "", errors.New("bad range")
	}
	if !hasCount {
		return 1, rest, nil
	}
	n, err := strconv.ParseUint(count, 10, 31)
	if err != nil || !isDigits(count) {
		return 0, "", errors.New("bad range")
	}
	return n, rest, nil
}

func isDigits(s string) bool {
	return s != "" && strings.Trim(s, "0123456789") == ""
}

// binary checks a "GIT binary patch": a forward hunk and an optional
// reverse one.
func (c *patchChecker) binary() error {
	if err := c.binaryHunk(true); err != nil {
		return err
	}
	return c.binaryHunk(false)
}

// binaryHunk checks "literal N" or "delta N", base-85 lines and the empty
// line that ends them. An optional hunk that is not there is no error.
// N is the size of the hunk's data inflated; a delta's data starts with
// the size of its result, which git apply also holds in memory: both
// count against MaxInflatedSize.
func (c *patchChecker) binaryHunk(required bool) error {
	line, err := c.lr.header()
	if errors.Is(err, io.EOF) && !required {
		return nil
	}
	if err != nil {
		return err
	}
	size, isLiteral := strings.CutPrefix(string(line), "literal ")
	size, isDelta := strings.CutPrefix(size, "delta ")
	if !isLiteral && !isDelta {
		if required {
			return fmt.Errorf("expected \"literal N\" or \"delta N\", got %.80q", line)
		}
		c.lr.unread = true
		return nil
	}
	n, err := strconv.ParseInt(size, 10, 64)
	if err != nil || !isDigits(size) {
		return fmt.Errorf("bad binary hunk size %.30q", size)
	}
	if err := c.inflate(n); err != nil {
		return err
	}
	var deflated []byte // the start of a delta's data, for its header
	for {
		line, err := c.lr.next()
		if errors.Is(err, io.EOF) {
			return errors.New("the patch ends inside a binary hunk")
		}
		if err != nil {
			return err
		}
		if len(line) == 0 {
			break
		}
		if err := checkBase85Line(line, c.lr.long); err != nil {
			return err
		}
		if isDelta && len(deflated) < maxDeltaPrefix {
			deflated = decodeBase85Line(deflated, line)
		}
	}
	if !isDelta {
		return nil
	}
	result, err := deltaResultSize(deflated)
	if err != nil {
		return err
	}
	return c.inflate(result)
}

func (c *patchChecker) inflate(n int64) error {
	if c.inflated += n; n < 0 || c.inflated > MaxInflatedSize {
		return fmt.Errorf("binary hunks inflate to more than %d MiB", MaxInflatedSize>>20)
	}
	return nil
}

// maxDeltaPrefix is how much of a delta's deflated data is decoded to
// read the sizes at its start; a deflate stream yields its first bytes
// long before that.
const maxDeltaPrefix = 64 << 10

// deltaResultSize reads the result size from the header of a git delta
// (two little-endian base-128 numbers: source size, result size) at the
// start of zlib data.
func deltaResultSize(deflated []byte) (int64, error) {
	zr, err := zlib.NewReader(bytes.NewReader(deflated))
	if err != nil {
		return 0, fmt.Errorf("binary delta: %w", err)
	}
	defer zr.Close()
	br := bufio.NewReaderSize(zr, 16)
	var sizes [2]uint64
	for i := range sizes {
		if sizes[i], err = binary.ReadUvarint(br); err != nil {
			return 0, fmt.Errorf("binary delta header: %w", err)
		}
	}
	if sizes[1] > MaxInflatedSize {
		return 0, fmt.Errorf("binary hunks inflate to more than %d MiB", MaxInflatedSize>>20)
	}
	return int64(sizes[1]), nil
}

// checkBase85Line checks one line of a binary hunk: a length character
// (A-Z for 1-26 bytes, a-z for 27-52) and groups of five base-85 digits.
func checkBase85Line(line []byte, long bool) error {
	if long || len(line) < 6 || (len(line)-1)%5 != 0 {
		return fmt.Errorf("bad binary hunk line %.80q", line)
	}
	n := base85LineLen(line[0])
	if max := (len(line) - 1) / 5 * 4; n > max || n <= max-4 {
		return fmt.Errorf("bad binary hunk line %.80q", line)
	}
	for _, b := range line[1:] {
		if strings.IndexByte(base85, b) < 0 {
			return fmt.Errorf("bad binary hunk line %.80q", line)
		}
	}
	return nil
}

// base85LineLen is the number of bytes a binary hunk line encodes, 0 for
// a bad length character.
func base85LineLen(l byte) int {
	switch {
	case 'A' <= l && l <= 'Z':
		return int(l-'A') + 1
	case 'a' <= l && l <= 'z':
		return int(l-'a') + 27
	}
	return 0
}

// decodeBase85Line appends the bytes of a line checkBase85Line accepted.
func decodeBase85Line(dst, line []byte) []byte {
	n := base85LineLen(line[0])
	for g := line[1:]; len(g) >= 5 && n > 0; g = g[5:] {
		var v uint32
		for _, d := range g[:5] {
			v = v*85 + uint32(strings.IndexByte(base85, d))
		}
		b := binary.BigEndian.AppendUint32(nil, v)
		k := min(n, 4)
		dst, n = append(dst, b[:k]...), n-k
	}
	return dst
}

const base85 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz!#$%&()*+-;<=>?@^_`{|}~"

// checkSymlinks refuses a patch that writes a path under one it makes a
// symbolic link: applied in order, the write would go through the link.
func (c *patchChecker) checkSymlinks() error {
	if len(c.symlinks) == 0 {
		return nil
	}
	for _, p := range c.written {
		for dir := p; ; {
			i := strings.LastIndexByte(dir, '/')
			if i < 0 {
				break
			}
			dir = dir[:i]
			if c.symlinks[dir] {
				return fmt.Errorf("%q is under %q, which the patch makes a symbolic link", p, dir)
			}
		}
	}
	return nil
}

// checkPath checks a path of the repository as the patch names it.
func checkPath(p string) error {
	switch {
	case p == "":
		return errors.New("empty path")
	case strings.IndexByte(p, 0) >= 0:
		return fmt.Errorf("path %q holds a NUL byte", p)
	case p[0] == '/':
		return fmt.Errorf("absolute path %q", p)
	}
	for comp := range strings.SplitSeq(p, "/") {
		switch {
		case comp == "" || comp == ".":
			return fmt.Errorf("path %q has an empty or \".\" component", p)
		case comp == "..":
			return fmt.Errorf("path %q leaves the repository", p)
		// Trailing dots and spaces: what NTFS and SMB would drop.
		case strings.EqualFold(strings.TrimRight(comp, ". "), ".git"):
			return fmt.Errorf("path %q is inside .git", p)
		}
	}
	return nil
}

// nameOnLine reads a name from the rest of a header line: C-quoted as git
// quotes unusual names, or plain to the end of the line; prefix ("a/",
// "b/" or none) is removed.
func nameOnLine(s, prefix string) (string, error) {
	name := s
	if strings.HasPrefix(s, `"`) {
		n, rest, ok := unquoteC(s)
		if !ok || rest != "" {
			return "", fmt.Errorf("bad quoted name %.100q", s)
		}
		name = n
	} else if strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		// git quotes such names; git apply ends an unquoted name at a
		// tab or other white space but a space.
		return "", fmt.Errorf("unquoted name %.100q holds control characters", s)
	}
	n, ok := strings.CutPrefix(name, prefix)
	if !ok {
		return "", fmt.Errorf("name %.100q does not start with %s", name, prefix)
	}
	return n, nil
}

// unquoteC undoes git's C-style quoting of s, which starts with a double
// quote, and returns the rest of s after the closing quote.
func unquoteC(s string) (name, rest string, ok bool) {
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		ch := s[i]
		switch ch {
		case '"':
			return b.String(), s[i+1:], true
		case '\\':
		default:
			b.WriteByte(ch)
			continue
		}
		i++
		if i >= len(s) {
			return "", "", false
		}
		switch e := s[i]; e {
		case 'a':
			b.WriteByte('\a')
		case 'b':
			b.WriteByte('\b')
		case 'f':
			b.WriteByte('\f')
		case 'n':
			b.WriteByte('\n')
		case 'r':
			b.WriteByte('\r')
		case 't':
			b.WriteByte('\t')
		case 'v':
			b.WriteByte('\v')
		case '\\', '"':
			b.WriteByte(e)
		case '0', '1', '2', '3':
			if i+2 >= len(s) || !isOctal(s[i+1]) || !isOctal(s[i+2]) {
				return "", "", false
			}
			b.WriteByte((e-'0')<<6 | (s[i+1]-'0')<<3 | (s[i+2] - '0'))
			i += 2
		default:
			return "", "", false
		}
	}
	return "", "", false
}

func isOctal(c byte) bool { return '0' <= c && c <= '7' }

// gitHeaderName reads the name on a "diff --git" line (after that prefix)
// as git apply does: the same path under a/ and b/ (any first component,
// in fact), quoted or not. It reports false when the two differ (a rename
// or copy, whose names are on other lines) or cannot be read.
func gitHeaderName(line []byte) (string, bool) {
	s := string(line)
	if strings.HasPrefix(s, `"`) {
		first, rest, ok := unquoteC(s)
		if !ok {
			return "", false
		}
		first, ok = stripComponent(first)
		if !ok {
			return "", false
		}
		rest = strings.TrimLeft(rest, " \t\n\v\f\r")
		if rest == "" {
			return "", false
		}
		second := rest
		if strings.HasPrefix(rest, `"`) {
			if second, _, ok = unquoteC(rest); !ok {
				return "", false
			}
		}
		second, ok = stripComponent(second)
		if !ok || second != first {
			return "", false
		}
		return first, true
	}
	name, ok := stripComponent(s)
	if !ok {
		return "", false
	}
	// Unquoted first name: a double quote starts the second.
	if q := strings.IndexByte(name, '"'); q >= 0 {
		second, _, ok := unquoteC(name[q:])
		if !ok {
			return "", false
		}
		second, ok = stripComponent(second)
		if !ok {
			return "", false
		}
		if len(second) < q && strings.HasPrefix(name, second) && isSpace(name[len(second)]) {
			return second, true
		}
		return "", false
	}
	// Both unquoted: the name must show up twice, exactly.
	for i := 0; i < len(name); i++ {
		if name[i] != ' ' && name[i] != '\t' {
			continue
		}
		if i+1 == len(name) {
			return "", false
		}
		second, ok := stripComponent(name[i+1:])
		if !ok {
			continue
		}
		if second == name[:i] {
			return second, true
		}
	}
	return "", false
}

// stripComponent removes the first path component ("a/") as git apply's
// -p1 does; false when there is none or the path is absolute.
func stripComponent(p string) (string, bool) {
	i := strings.IndexByte(p, '/')
	if i <= 0 {
		return "", false
	}
	return p[i+1:], true
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'
}
