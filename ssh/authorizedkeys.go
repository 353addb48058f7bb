package ssh

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"strings"

	xssh "golang.org/x/crypto/ssh"
)

// Errors of the authorized_keys editing (ReadAuthorizedKeys,
// UpdateAuthorizedKeys). They name the machine, the user and the file.
var (
	// ErrHomeMissing: the login user's home directory ($HOME) does not
	// exist on the machine, so ~/.ssh/authorized_keys cannot be there.
	// Not retryable.
	ErrHomeMissing = errors.New("ssh: home directory missing")
	// ErrAuthorizedKeysNotWritable: the authorized_keys file, or its
	// directory, cannot be replaced by the login user (read-only file or
	// directory, immutable file, symbolic link, owner that cannot be kept).
	// Nothing was changed. Not retryable.
	ErrAuthorizedKeysNotWritable = errors.New("ssh: authorized_keys not writable")
	// ErrRemoteWrite: writing the new authorized_keys next to the old one
	// failed (typically a full disk or quota). The temporary file was
	// removed and the old file is untouched. Retryable once space is freed.
	ErrRemoteWrite = errors.New("ssh: writing on the machine failed")
)

// DefaultAuthorizedKeysFile is where OpenSSH's sshd looks for a user's
// keys by default (AuthorizedKeysFile .ssh/authorized_keys), relative to
// the user's home directory.
const DefaultAuthorizedKeysFile = ".ssh/authorized_keys"

// AuthorizedKeysFile is a remote user's authorized_keys file as
// ReadAuthorizedKeys found it.
type AuthorizedKeysFile struct {
	// Path is the file's absolute path on the machine (a relative path was
	// resolved against the user's $HOME).
	Path string
	// Exists is false when the file does not exist yet (Content is then
	// empty).
	Exists bool
	// Content is the file's bytes.
	Content []byte
	// Mode holds the permission bits; UID and GID the numeric owner (all
	// zero when the file does not exist).
	Mode     fs.FileMode
	UID, GID int
	// Writable reports whether the login user can replace the file: the
	// file (when it exists) and its directory are writable, and it is a
	// regular file, not a symbolic link.
	Writable bool
	// Problem says why the file cannot be replaced ("" when Writable).
	Problem string

	sum string // POSIX cksum output of the file, "missing" when absent
}

// Exit codes of the remote scripts.
const (
	akExitHome     = 90 // $HOME missing (relative path)
	akExitMkdir    = 91 // cannot create the directory
	akExitReadOnly = 92 // file or directory not writable
	akExitNotFile  = 93 // not a regular file, or a symbolic link
	akExitUnread   = 94 // not readable
	akExitChanged  = 95 // changed since it was read
	akExitTemp     = 96 // cannot create the temporary file
	akExitOwner    = 97 // cannot set mode or owner on the temporary file
	akExitWrite    = 98 // writing the temporary file failed
	akExitRename   = 99 // rename over the file failed
)

// akResolve is the shell prelude shared by the scripts: f is the file, d
// its directory. The path comes quoted as $1 of a `set --`.
const akResolve = `f=$1
case $f in
/*) ;;
*) if [ -z "${HOME:-}" ] || [ ! -d "$HOME" ]; then printf 'home directory %s does not exist\n' "${HOME:-(unset)}" >&2; exit 90; fi
   f=$HOME/$f ;;
esac
d=${f%/*}
[ -n "$d" ] || d=/
`

// akReadScript prints a header ("path", "problem", "stat", "sum" lines),
// then "data" and the file's bytes.
const akReadScript = akResolve + `printf 'path %s\n' "$f"
p=
if [ -h "$f" ]; then p="is a symbolic link"
elif [ -e "$f" ] && [ ! -f "$f" ]; then p="is not a regular file"
elif [ -e "$f" ] && [ ! -w "$f" ]; then p="is not writable"
elif [ -d "$d" ] && [ ! -w "$d" ]; then p="is in a directory that is not writable"
fi
printf 'problem %s\n' "$p"
if [ -e "$f" ]; then
  [ -r "$f" ] || { printf '%s is not readable\n' "$f" >&2; exit 94; }
  printf 'stat '; ls -lnd "$f" || exit 94
  printf 'sum '; cksum < "$f" || exit 94
  printf 'data\n'
  cat "$f" || exit 94
else
  printf 'sum missing\ndata\n'
fi
`

// akWriteScript replaces the file with stdin if it still has the checksum
// it was read with ($2), through a temporary file ($3) in the same
// directory given mode $4 and owner $5 (uid:gid, "" to keep ours), of
// $6 bytes.
const akWriteScript = akResolve + `umask 077
if [ ! -d "$d" ]; then mkdir -p -m 700 "$d" || exit 91; fi
[ -w "$d" ] || { printf 'directory %s is not writable\n' "$d" >&2; exit 92; }
if [ -h "$f" ]; then printf '%s is a symbolic link\n' "$f" >&2; exit 93; fi
if [ -e "$f" ]; then
  [ -f "$f" ] || { printf '%s is not a regular file\n' "$f" >&2; exit 93; }
  [ -w "$f" ] || { printf '%s is not writable\n' "$f" >&2; exit 92; }
  s=$(cksum < "$f") || exit 94
else
  s=missing
fi
[ "$s" = "$2" ] || { printf '%s changed since it was read\n' "$f" >&2; exit 95; }
t=$d/$3
find "$d" -name '.authorized_keys.rediacc-*' -type f -mtime +0 -exec rm -f {} + 2>/dev/null || :
trap 'rm -f "$t"' EXIT
trap 'rm -f "$t"; exit 129' HUP
trap 'rm -f "$t"; exit 130' INT
trap 'rm -f "$t"; exit 143' TERM
set -C
: > "$t" || { printf 'cannot create %s\n' "$t" >&2; trap - EXIT HUP INT TERM; exit 96; }
set +C
chmod "$4" "$t" || exit 97
if [ -n "$5" ]; then chown "$5" "$t" || exit 97; fi
cat > "$t" || { printf 'writing %s failed\n' "$t" >&2; exit 98; }
n=$(wc -c < "$t") || exit 98
[ $((n+0)) -eq "$6" ] || { printf 'wrote %s bytes of %s to %s\n' "$n" "$6" "$t" >&2; exit 98; }
sync "$t" 2>/dev/null || :
mv -f "$t" "$f" || { printf 'cannot rename %s to %s\n' "$t" "$f" >&2; exit 99; }
trap - EXIT HUP INT TERM
`

// ReadAuthorizedKeys reads the login user's authorized_keys file at path
// on t (relative paths are taken from $HOME; "" means
// DefaultAuthorizedKeysFile) with a small POSIX sh script (ls, cksum, cat:
// nothing beyond POSIX is needed on the machine).
//
// Errors: ErrHomeMissing (relative path and no $HOME directory),
// ErrAuthorizedKeysNotWritable (the file exists but cannot be read), and
// Run's errors (ErrConnect, ErrAuthFailed, …).
func (p *Pool) ReadAuthorizedKeys(ctx context.Context, t Target, path string) (*AuthorizedKeysFile, error) {
	if path == "" {
		path = DefaultAuthorizedKeysFile
	}
	res, err := p.Run(ctx, t, Command{Cmd: "set -- " + ShellQuote(path) + "\n" + akReadScript, OutputLimit: -1})
	if err != nil {
		return nil, akError(&t, path, res, err)
	}
	return parseAuthorizedKeysRead(&t, res.Stdout)
}

func parseAuthorizedKeysRead(t *Target, out []byte) (*AuthorizedKeysFile, error) {
	f := &AuthorizedKeysFile{}
	bad := func(what string) error {
		return targetErr(t, nil, nil, "reading authorized_keys: unexpected output from the machine (%s); is the login shell POSIX?", what)
	}
	// Start-up files may print before the header: skip to "path ".
	i := bytes.Index(out, []byte("path /"))
	if i < 0 || (i > 0 && out[i-1] != '\n') {
		return nil, bad("no path line")
	}
	out = out[i:]
	for {
		nl := bytes.IndexByte(out, '\n')
		if nl < 0 {
			return nil, bad("header cut short")
		}
		line := string(out[:nl])
		out = out[nl+1:]
		k, v, _ := strings.Cut(line, " ")
		switch k {
		case "path":
			f.Path = v
		case "problem":
			f.Problem = v
		case "stat":
			mode, uid, gid, err := parseLsMode(v)
			if err != nil {
				return nil, bad(err.Error())
			}
			f.Mode, f.UID, f.GID, f.Exists = mode, uid, gid, true
		case "sum":
			f.sum = v
		case "data":
			f.Content = bytes.Clone(out)
			if f.sum == "" || (f.Exists != (f.sum != "missing")) {
				return nil, bad("no checksum")
			}
			f.Writable = f.Problem == ""
			if f.Problem != "" {
				f.Problem = f.Path + " " + f.Problem
			}
			return f, nil
		default:
			return nil, bad(fmt.Sprintf("header line %q", k))
		}
	}
}

// parseLsMode reads the mode and numeric owner from `ls -lnd` output:
// "-rw------- 1 1000 1000 95 Jan  1 00:00 /home/u/.ssh/authorized_keys".
func parseLsMode(s string) (fs.FileMode, int, int, error) {
	fields := strings.Fields(s)
	if len(fields) < 4 || len(fields[0]) < 10 {
		return 0, 0, 0, fmt.Errorf("ls output %q", s)
	}
	ms := fields[0]
	var m fs.FileMode
	bits := []fs.FileMode{0o400, 0o200, 0o100, 0o040, 0o020, 0o010, 0o004, 0o002, 0o001}
	for i, b := range bits {
		c := ms[1+i]
		switch {
		case c == '-':
		case c == 'r' || c == 'w' || c == 'x':
			m |= b
		case c == 's' || c == 't': // set-id / sticky with execute
			m |= b
			m |= special(i)
		case c == 'S' || c == 'T':
			m |= special(i)
		default:
			return 0, 0, 0, fmt.Errorf("mode %q", ms)
		}
	}
	uid, err1 := strconv.Atoi(fields[2])
	gid, err2 := strconv.Atoi(fields[3])
	if err1 != nil || err2 != nil {
		return 0, 0, 0, fmt.Errorf("owner in %q", s)
	}
	return m, uid, gid, nil
}

func special(i int) fs.FileMode {
	switch i {
	case 2:
		return fs.ModeSetuid
	case 5:
		return fs.ModeSetgid
	case 8:
		return fs.ModeSticky
	}
	return 0
}

// chmodArg renders m for chmod(1): four octal digits.
func chmodArg(m fs.FileMode) string {
	v := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		v |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		v |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		v |= 0o1000
	}
	return fmt.Sprintf("%04o", v)
}

// UpdateAuthorizedKeys reads the authorized_keys file at path on t (see
// ReadAuthorizedKeys), calls edit with its content and, when edit returns
// different bytes, replaces the file atomically: the new content goes to a
// temporary file in the same directory, created exclusively, given the old
// file's mode and numeric owner (0600 and the user for a new file, in a
// directory created 0700), checked for its length, then renamed over the
// file, so sshd sees the old or the new file, never a partial one. The
// replacement happens only if the file still has the checksum it was read
// with; when someone changed it meanwhile, the read and edit are done again
// (up to three times). The temporary file is removed when the script fails
// or is stopped (HUP, INT, TERM); one left by a script killed outright is
// removed by a later edit once it is a day old. The content travels on the session's stdin; the
// scripts use only POSIX sh and utilities (ls, cksum, cat, chmod, chown,
// mkdir, wc, mv).
//
// edit must keep every line it does not mean to change byte for byte (see
// AddAuthorizedKey and RemoveAuthorizedKeys). It returns the file as it was
// before the change and as written (equal when nothing changed).
//
// Errors: ErrHomeMissing, ErrAuthorizedKeysNotWritable (nothing changed),
// ErrRemoteWrite (full disk: nothing changed), edit's error, Run's errors.
// A connection lost after the rename was sent may leave the file changed.
func (p *Pool) UpdateAuthorizedKeys(ctx context.Context, t Target, path string, edit func(content []byte) ([]byte, error)) (before, after *AuthorizedKeysFile, err error) {
	if path == "" {
		path = DefaultAuthorizedKeysFile
	}
	for attempt := 1; ; attempt++ {
		cur, err := p.ReadAuthorizedKeys(ctx, t, path)
		if err != nil {
			return nil, nil, err
		}
		next, err := edit(bytes.Clone(cur.Content))
		if err != nil {
			return cur, nil, err
		}
		if bytes.Equal(next, cur.Content) {
			return cur, cur, nil
		}
		if !cur.Writable {
			return cur, nil, targetErr(&t, ErrAuthorizedKeysNotWritable, nil,
				"%s: user %s cannot replace it: make it writable by %s (and its directory), or edit it by hand", cur.Problem, t.User, t.User)
		}
		mode, owner := fs.FileMode(0o600), ""
		if cur.Exists {
			mode = cur.Mode
			owner = strconv.Itoa(cur.UID) + ":" + strconv.Itoa(cur.GID)
		}
		var nonce [8]byte
		_, _ = rand.Read(nonce[:])
		tmp := ".authorized_keys.rediacc-" + hex.EncodeToString(nonce[:])
		args := []string{path, cur.sum, tmp, chmodArg(mode), owner, strconv.Itoa(len(next))}
		quoted := make([]string, len(args))
		for i, a := range args {
			quoted[i] = ShellQuote(a)
		}
		// chown to our own uid:gid is a no-op that may still fail on
		// systems without chown rights: skip it when nothing would change.
		script := "set -- " + strings.Join(quoted, " ") + "\n" +
			`if [ -n "$5" ] && [ "$5" = "$(id -u):$(id -g)" ]; then set -- "$1" "$2" "$3" "$4" "" "$6"; fi` + "\n" + akWriteScript
		res, err := p.Run(ctx, t, Command{Cmd: script, Stdin: bytes.NewReader(next), OutputLimit: 64 << 10})
		if err == nil {
			after := *cur
			after.Content, after.Exists = next, true
			if !cur.Exists {
				after.Mode = mode
			}
			return cur, &after, nil
		}
		var ee *ExitError
		if errors.As(err, &ee) && ee.Code == akExitChanged && attempt < 3 {
			continue
		}
		return cur, nil, akError(&t, path, res, err)
	}
}

// akError maps a failed script run to an error naming the machine and file.
func akError(t *Target, path string, res *Result, err error) error {
	var ee *ExitError
	if !errors.As(err, &ee) {
		return err
	}
	msg := ""
	if res != nil {
		msg = stderrSummary(res.Stderr)
	}
	if msg == "" {
		msg = fmt.Sprintf("exit status %d", ee.Code)
	}
	switch ee.Code {
	case akExitHome:
		return targetErr(t, ErrHomeMissing, nil, "%s: user %s has no home directory on the machine, so %s cannot be kept there: create the home directory (owned by %s, not writable by others) or set the machine's authorized_keys path",
			msg, t.User, path, t.User)
	case akExitMkdir, akExitReadOnly, akExitNotFile, akExitUnread, akExitTemp, akExitOwner, akExitRename:
		return targetErr(t, ErrAuthorizedKeysNotWritable, nil, "authorized_keys %s cannot be replaced by user %s: %s; nothing was changed: make it (and its directory) writable by %s",
			path, t.User, msg, t.User)
	case akExitWrite:
		return targetErr(t, ErrRemoteWrite, nil, "writing the new authorized_keys next to %s failed (%s): is the disk full? The old file is untouched; free space and try again",
			path, msg)
	case akExitChanged:
		return targetErr(t, ErrConnect, nil, "authorized_keys %s kept changing while it was edited (%s); try again", path, msg)
	}
	return err
}

// stderrSummary joins the last lines of a script's stderr into one line of
// at most 300 bytes.
func stderrSummary(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 3 {
		lines = lines[len(lines)-3:]
	}
	s := strings.Join(lines, "; ")
	if len(s) > 300 {
		s = s[len(s)-300:]
	}
	return s
}

// AuthorizedKeyLine is one line of an authorized_keys file that holds a
// key, as AuthorizedKeyLines parses it.
type AuthorizedKeyLine struct {
	// Key is the public key; Comment the text after it; Options the
	// options before it (from="…", command="…", …).
	Key     xssh.PublicKey
	Comment string
	Options []string
	// Line is the line's exact bytes, without its line ending.
	Line []byte
}

// AuthorizedKeyLines returns the lines of an authorized_keys file that hold
// a key (comments, blank lines and lines that do not parse are left out).
func AuthorizedKeyLines(content []byte) []AuthorizedKeyLine {
	var out []AuthorizedKeyLine
	for _, l := range splitLines(content) {
		if k, ok := parseAuthorizedLine(l); ok {
			out = append(out, k)
		}
	}
	return out
}

func parseAuthorizedLine(l []byte) (AuthorizedKeyLine, bool) {
	body := bytes.TrimRight(l, "\r\n")
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 || trimmed[0] == '#' {
		return AuthorizedKeyLine{}, false
	}
	k, comment, opts, rest, err := xssh.ParseAuthorizedKey(trimmed)
	if err != nil || len(bytes.TrimSpace(rest)) != 0 {
		return AuthorizedKeyLine{}, false
	}
	return AuthorizedKeyLine{Key: k, Comment: comment, Options: opts, Line: body}, true
}

// splitLines splits content after each '\n', keeping the line endings (the
// last line may have none).
func splitLines(content []byte) [][]byte {
	var out [][]byte
	for len(content) > 0 {
		i := bytes.IndexByte(content, '\n')
		if i < 0 {
			out = append(out, content)
			break
		}
		out = append(out, content[:i+1])
		content = content[i+1:]
	}
	return out
}

// SameKey reports whether a and b are the same public key.
func SameKey(a, b xssh.PublicKey) bool {
	return a != nil && b != nil && bytes.Equal(a.Marshal(), b.Marshal())
}

// AddAuthorizedKey returns content with a line for key (and comment, which
// must be one line) added, and true; or content unchanged and false when a
// line already holds key. Every existing byte is kept: the line goes at the
// end, or, when the file's last line has no line ending, just before it,
// so that RemoveAuthorizedKeys of the key gives content back byte for byte.
func AddAuthorizedKey(content []byte, key xssh.PublicKey, comment string) ([]byte, bool) {
	for _, l := range AuthorizedKeyLines(content) {
		if SameKey(l.Key, key) {
			return content, false
		}
	}
	line := bytes.TrimRight(xssh.MarshalAuthorizedKey(key), "\n")
	if c := strings.TrimSpace(strings.NewReplacer("\n", " ", "\r", " ").Replace(comment)); c != "" {
		line = append(append(line, ' '), c...)
	}
	cut := len(content) // where the new line goes
	if cut > 0 && content[cut-1] != '\n' {
		cut = bytes.LastIndexByte(content, '\n') + 1 // before the unterminated last line
	}
	out := make([]byte, 0, len(content)+len(line)+1)
	out = append(out, content[:cut]...)
	out = append(append(out, line...), '\n')
	return append(out, content[cut:]...), true
}

// RemoveAuthorizedKeys returns content without the lines whose key drop
// selects, and how many were removed; every other byte is kept.
func RemoveAuthorizedKeys(content []byte, drop func(l AuthorizedKeyLine) bool) ([]byte, int) {
	var out []byte
	n := 0
	for _, raw := range splitLines(content) {
		if l, ok := parseAuthorizedLine(raw); ok && drop(l) {
			n++
			continue
		}
		out = append(out, raw...)
	}
	if n == 0 {
		return content, 0
	}
	if out == nil {
		out = []byte{}
	}
	return out, n
}
