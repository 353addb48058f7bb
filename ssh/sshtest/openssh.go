package sshtest

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// RequireSSHDEnv names the environment variable that, set to "1", turns a
// missing sshd into a test failure instead of a skip (set it in CI).
const RequireSSHDEnv = "REDIACC_REQUIRE_SSHD"

// DefaultTestUser is the login user StartOpenSSH creates and uses when the
// tests run as root (logging in as root would run root's shell start-up
// files and is refused by many sshd configurations).
const DefaultTestUser = "rediacc-test"

// DefaultPassphrase encrypts OpenSSH.EncryptedClientKeyPath unless
// OpenSSHOptions.Passphrase is set.
const DefaultPassphrase = "rediacc-sshtest-passphrase"

// OpenSSHOptions configures a real sshd started by StartOpenSSH. The zero
// value is usable.
type OpenSSHOptions struct {
	// Loopback is N in the listen address 127.0.0.N, so several servers
	// look like distinct machines. Range 1..254; default 1.
	Loopback int
	// Host, when set, is the listen address instead of 127.0.0.Loopback:
	// any IPv4 loopback address (127.x.y.z, all of 127.0.0.0/8 is local on
	// Linux), e.g. 127.0.1.7 for fleets of more than 254 machines.
	Host string
	// Port is the TCP port; 0 picks a free one.
	Port int
	// MaxSessions is sshd's MaxSessions. Default 10 (OpenSSH's default).
	MaxSessions int
	// MaxStartups is sshd's MaxStartups ("10:30:100"); "" keeps the default.
	MaxStartups string
	// LogLevel is sshd's LogLevel. Default "INFO".
	LogLevel string
	// ExtraConfig lines are appended to sshd_config verbatim.
	ExtraConfig []string
	// Passphrase encrypts the copy of the client key at
	// EncryptedClientKeyPath. Default DefaultPassphrase.
	Passphrase string
	// KeyType is the type of the generated host and client keys: "ed25519"
	// (the default) or "rsa" (3072 bits, for tests of RSA signature
	// algorithms).
	KeyType string
	// OwnUser logs in as a login user of this server's own, created for it
	// (useradd, home directory Dir/home owned by it, mode 0755) and
	// deleted when the test ends, so that the test may change the user's
	// files freely. Needs root: the test is skipped otherwise.
	OwnUser bool
	// AuthorizedKeysInHome (implies OwnUser) makes sshd read the keys from
	// the user's ~/.ssh/authorized_keys (OpenSSH's default
	// AuthorizedKeysFile), with StrictModes on, as on a real machine;
	// otherwise they are read from Dir/authorized_keys.
	AuthorizedKeysInHome bool
}

// OpenSSH is a running (or stopped) OpenSSH sshd for a test. Its fields
// describe the server and the generated files; do not modify them.
type OpenSSH struct {
	// Dir holds the generated files (inside tb.TempDir()).
	Dir string
	// Host is the listen IP address, 127.0.0.N (or OpenSSHOptions.Host).
	Host string
	// Port is the TCP port sshd listens on.
	Port int
	// User is the login user (DefaultTestUser as root, else the current
	// user).
	User string
	// ClientKeyPath is an unencrypted private key (ed25519 unless
	// KeyType; OpenSSH format, mode 0600) authorized for User.
	ClientKeyPath string
	// ClientSigner is the key at ClientKeyPath, loaded.
	ClientSigner ssh.Signer
	// EncryptedClientKeyPath is the same key encrypted with Passphrase
	// (OpenSSH format, one bcrypt round when ssh-keygen is installed).
	EncryptedClientKeyPath string
	// Passphrase decrypts EncryptedClientKeyPath.
	Passphrase []byte
	// KnownHostsPath is a known_hosts file holding the "[HOST]:PORT" line of
	// the server's host key.
	KnownHostsPath string
	// HostPublicKey is the server's host key (ed25519 unless KeyType).
	HostPublicKey ssh.PublicKey
	// ConfigPath is the generated sshd_config.
	ConfigPath string
	// AuthorizedKeysPath is the file sshd reads the user's keys from: the
	// user's ~/.ssh/authorized_keys with AuthorizedKeysInHome, else
	// Dir/authorized_keys.
	AuthorizedKeysPath string
	// Home is the login user's home directory (OwnUser only; "" otherwise).
	Home string
	// UID and GID are the login user's ids (OwnUser only).
	UID, GID int
	// LogPath receives sshd's log (-e); Log returns it.
	LogPath string

	tb     testing.TB
	sshd   string
	mu     sync.Mutex
	cmd    *exec.Cmd  // nil while stopped
	waitCh chan error // receives cmd's exit
}

// FindSSHD returns the path of sshd (from PATH, then /usr/sbin/sshd,
// /usr/local/sbin/sshd) or "" when it is not installed.
func FindSSHD() string {
	if p, err := exec.LookPath("sshd"); err == nil {
		if abs, err := filepath.Abs(p); err == nil {
			return abs
		}
	}
	for _, p := range []string{"/usr/sbin/sshd", "/usr/local/sbin/sshd"} {
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p
		}
	}
	return ""
}

// StartOpenSSH starts a real OpenSSH sshd (`sshd -D -e -f CONFIG`) on
// 127.0.0.N with freshly generated host and client keys, waits until it
// accepts connections and stops it in tb.Cleanup.
//
// When sshd is not installed it calls tb.Skip, or tb.Fatal when
// REDIACC_REQUIRE_SSHD=1. When running as root it logs in as
// DefaultTestUser, creating that user if needed (useradd -m -s /bin/sh,
// password field "*" so that sshd without PAM accepts keys). Any other
// failure calls tb.Fatal.
func StartOpenSSH(tb testing.TB, opts OpenSSHOptions) *OpenSSH {
	tb.Helper()
	sshd := FindSSHD()
	if sshd == "" {
		msg := "sshd not found; install openssh-server (e.g. apt-get install openssh-server) or set " +
			RequireSSHDEnv + "=1 to make this a failure"
		if os.Getenv(RequireSSHDEnv) == "1" {
			tb.Fatal("sshd not found and " + RequireSSHDEnv + "=1: install openssh-server (e.g. apt-get install openssh-server)")
		}
		tb.Skip(msg)
	}
	if opts.Loopback == 0 {
		opts.Loopback = 1
	}
	if opts.Loopback < 1 || opts.Loopback > 254 {
		tb.Fatalf("sshtest: OpenSSHOptions.Loopback %d out of range 1..254", opts.Loopback)
	}
	host := fmt.Sprintf("127.0.0.%d", opts.Loopback)
	if opts.Host != "" {
		if ip := net.ParseIP(opts.Host); ip == nil || ip.To4() == nil || !ip.IsLoopback() {
			tb.Fatalf("sshtest: OpenSSHOptions.Host %q is not an IPv4 loopback address (127.x.y.z)", opts.Host)
		}
		host = opts.Host
	}
	if opts.MaxSessions == 0 {
		opts.MaxSessions = 10
	}
	if opts.LogLevel == "" {
		opts.LogLevel = "INFO"
	}
	if opts.Passphrase == "" {
		opts.Passphrase = DefaultPassphrase
	}

	o := &OpenSSH{
		tb:         tb,
		sshd:       sshd,
		Dir:        tb.TempDir(),
		Host:       host,
		Passphrase: []byte(opts.Passphrase),
	}
	loginAsOther := false
	if opts.AuthorizedKeysInHome {
		opts.OwnUser = true
	}
	if opts.OwnUser {
		if os.Geteuid() != 0 {
			tb.Skip("sshtest: OpenSSHOptions.OwnUser needs root (it creates a login user)")
		}
		if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
			tb.Fatalf("sshtest: create privilege separation directory /run/sshd: %v", err)
		}
		o.Home = filepath.Join(o.Dir, "home")
		name, uid, gid, err := createOwnUser(o.Home)
		if err != nil {
			tb.Fatalf("sshtest: create a login user: %v", err)
		}
		tb.Cleanup(func() { deleteOwnUser(tb, name) }) // after the server stops (cleanups run last first)
		o.User, o.UID, o.GID = name, uid, gid
		loginAsOther = true
	} else if os.Geteuid() == 0 {
		o.User = DefaultTestUser
		if err := ensureTestUser(o.User); err != nil {
			tb.Fatalf("sshtest: create login user %s: %v", o.User, err)
		}
		if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
			tb.Fatalf("sshtest: create privilege separation directory /run/sshd: %v", err)
		}
		loginAsOther = true
	} else {
		u, err := user.Current()
		if err != nil {
			tb.Fatalf("sshtest: current user: %v", err)
		}
		o.User = u.Username
	}
	if loginAsOther {
		// The login user reads authorized_keys: let it traverse the dirs.
		for _, d := range []string{filepath.Dir(o.Dir), o.Dir} {
			if err := os.Chmod(d, 0o755); err != nil {
				tb.Fatalf("sshtest: chmod %s: %v", d, err)
			}
		}
	}

	// Keys.
	if opts.KeyType != "" && opts.KeyType != "ed25519" && opts.KeyType != "rsa" {
		tb.Fatalf("sshtest: OpenSSHOptions.KeyType %q is not ed25519 or rsa", opts.KeyType)
	}
	hostSigner, hostPEM, _, err := generateKeyOfType(opts.KeyType, nil)
	if err != nil {
		tb.Fatalf("sshtest: generate host key: %v", err)
	}
	o.HostPublicKey = hostSigner.PublicKey()
	clientSigner, clientPEM, _, err := generateKeyOfType(opts.KeyType, nil)
	if err != nil {
		tb.Fatalf("sshtest: generate client key: %v", err)
	}
	o.ClientSigner = clientSigner
	encPEM, err := FastEncryptedKey(clientPEM, o.Passphrase)
	if err != nil {
		tb.Fatalf("sshtest: encrypt client key: %v", err)
	}
	hostKeyPath := filepath.Join(o.Dir, "ssh_host_ed25519_key")
	o.ClientKeyPath = filepath.Join(o.Dir, "id_ed25519")
	o.EncryptedClientKeyPath = filepath.Join(o.Dir, "id_ed25519_encrypted")
	authKeysPath := filepath.Join(o.Dir, "authorized_keys")
	if opts.AuthorizedKeysInHome {
		authKeysPath = filepath.Join(o.Home, ".ssh", "authorized_keys")
	}
	o.AuthorizedKeysPath = authKeysPath
	o.KnownHostsPath = filepath.Join(o.Dir, "known_hosts")
	o.ConfigPath = filepath.Join(o.Dir, "sshd_config")
	o.LogPath = filepath.Join(o.Dir, "sshd.log")
	mustWrite(tb, hostKeyPath, hostPEM, 0o600)
	mustWrite(tb, o.ClientKeyPath, clientPEM, 0o600)
	mustWrite(tb, o.EncryptedClientKeyPath, encPEM, 0o600)
	if opts.AuthorizedKeysInHome {
		if err := writeOwned(authKeysPath, ssh.MarshalAuthorizedKey(clientSigner.PublicKey()), o.UID, o.GID); err != nil {
			tb.Fatalf("sshtest: %v", err)
		}
	} else {
		mustWrite(tb, authKeysPath, ssh.MarshalAuthorizedKey(clientSigner.PublicKey()), 0o644)
	}

	o.Port = opts.Port
	for attempt := 0; ; attempt++ {
		if opts.Port == 0 {
			o.Port = freePort(tb, o.Host)
		}
		var cfg bytes.Buffer
		fmt.Fprintf(&cfg, "ListenAddress %s\n", net.JoinHostPort(o.Host, strconv.Itoa(o.Port)))
		fmt.Fprintf(&cfg, "HostKey %s\n", hostKeyPath)
		fmt.Fprintf(&cfg, "PidFile %s\n", filepath.Join(o.Dir, "sshd.pid"))
		if opts.AuthorizedKeysInHome {
			cfg.WriteString("AuthorizedKeysFile .ssh/authorized_keys\nStrictModes yes\n")
		} else {
			fmt.Fprintf(&cfg, "AuthorizedKeysFile %s\nStrictModes no\n", authKeysPath)
		}
		cfg.WriteString("UsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n")
		cfg.WriteString("PubkeyAuthentication yes\nPrintMotd no\nPrintLastLog no\nUseDNS no\nAcceptEnv LANG LC_*\n")
		fmt.Fprintf(&cfg, "AllowUsers %s\n", o.User)
		fmt.Fprintf(&cfg, "MaxSessions %d\n", opts.MaxSessions)
		if opts.MaxStartups != "" {
			fmt.Fprintf(&cfg, "MaxStartups %s\n", opts.MaxStartups)
		}
		fmt.Fprintf(&cfg, "LogLevel %s\n", opts.LogLevel)
		for _, l := range opts.ExtraConfig {
			cfg.WriteString(l + "\n")
		}
		mustWrite(tb, o.ConfigPath, cfg.Bytes(), 0o644)
		mustWrite(tb, o.KnownHostsPath, []byte(knownhosts.Line([]string{o.Addr()}, o.HostPublicKey)+"\n"), 0o644)
		err := o.start()
		if err == nil {
			break
		}
		if opts.Port != 0 || attempt >= 2 || !strings.Contains(err.Error(), "Address already in use") {
			tb.Fatalf("sshtest: %v", err)
		}
	}
	tb.Cleanup(func() {
		if tb.Failed() {
			if b, err := os.ReadFile(o.LogPath); err == nil && len(b) > 0 {
				tail := b
				if len(tail) > 4000 {
					tail = tail[len(tail)-4000:]
				}
				tb.Logf("sshtest: sshd %s log (tail):\n%s", o.Addr(), tail)
			}
		}
		o.Close()
	})
	return o
}

// Addr returns "127.0.0.N:PORT".
func (o *OpenSSH) Addr() string { return net.JoinHostPort(o.Host, strconv.Itoa(o.Port)) }

// Start starts a stopped server again on the same address, port and keys.
// It calls tb.Fatal when sshd does not come up. Starting a running server
// is a no-op.
func (o *OpenSSH) Start() {
	o.tb.Helper()
	if err := o.start(); err != nil {
		o.tb.Fatalf("sshtest: restart: %v", err)
	}
}

// Stop kills sshd and everything it started (connection processes and the
// users' commands), as when the machine goes down: open client connections
// see EOF. Stopping a stopped server is a no-op.
func (o *OpenSSH) Stop() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.cmd == nil {
		return
	}
	killTree(o.cmd.Process.Pid)
	<-o.waitCh
	o.cmd = nil
}

// Close stops the server. StartOpenSSH registers it with tb.Cleanup.
func (o *OpenSSH) Close() { o.Stop() }

// Log returns sshd's log so far.
func (o *OpenSSH) Log() string {
	b, _ := os.ReadFile(o.LogPath)
	return string(b)
}

func (o *OpenSSH) start() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.cmd != nil {
		return nil
	}
	logf, err := os.OpenFile(o.LogPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	before, _ := logf.Seek(0, 2)
	cmd := exec.Command(o.sshd, "-D", "-e", "-f", o.ConfigPath)
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", o.sshd, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", o.Addr(), time.Second)
		if err == nil {
			c.Close()
			break
		}
		select {
		case werr := <-exited:
			b, _ := os.ReadFile(o.LogPath)
			if int64(len(b)) > before {
				b = b[before:]
			}
			return fmt.Errorf("sshd on %s exited (%v): %s", o.Addr(), werr, strings.TrimSpace(string(b)))
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			killTree(cmd.Process.Pid)
			<-exited
			return fmt.Errorf("sshd on %s did not accept connections within 15s; log: %s", o.Addr(), o.LogPath)
		}
	}
	o.cmd = cmd
	o.waitCh = exited
	return nil
}

// generateKey returns a new ed25519 signer, its unencrypted OpenSSH PEM and,
// when passphrase is non-empty, a copy encrypted with it.
func generateKey(passphrase []byte) (ssh.Signer, []byte, []byte, error) {
	return generateKeyOfType("ed25519", passphrase)
}

// generateKeyOfType is generateKey for typ "ed25519" ("" too) or "rsa".
func generateKeyOfType(typ string, passphrase []byte) (ssh.Signer, []byte, []byte, error) {
	var priv crypto.Signer
	var err error
	if typ == "rsa" {
		priv, err = rsa.GenerateKey(rand.Reader, 3072)
	} else {
		_, priv, err = ed25519.GenerateKey(rand.Reader)
	}
	if err != nil {
		return nil, nil, nil, err
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return nil, nil, nil, err
	}
	block, err := ssh.MarshalPrivateKey(priv, "rediacc-sshtest")
	if err != nil {
		return nil, nil, nil, err
	}
	var enc []byte
	if len(passphrase) > 0 {
		eb, err := ssh.MarshalPrivateKeyWithPassphrase(priv, "rediacc-sshtest", passphrase)
		if err != nil {
			return nil, nil, nil, err
		}
		enc = pem.EncodeToMemory(eb)
	}
	return signer, pem.EncodeToMemory(block), enc, nil
}

// FastEncryptedKey returns plainPEM (an unencrypted OpenSSH private key)
// encrypted with passphrase in OpenSSH format. For tests only: when
// ssh-keygen is installed the key is re-encrypted with a single bcrypt KDF
// round (`ssh-keygen -p -a 1`), so that decrypting it takes microseconds
// instead of the default 16 rounds' fraction of a second (much more under
// the race detector); otherwise x/crypto's default is used.
func FastEncryptedKey(plainPEM, passphrase []byte) ([]byte, error) {
	if len(passphrase) == 0 {
		return nil, errors.New("sshtest: empty passphrase")
	}
	if keygen, err := exec.LookPath("ssh-keygen"); err == nil {
		dir, err := os.MkdirTemp("", "sshtest-key-*")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		f := filepath.Join(dir, "key")
		if err := os.WriteFile(f, plainPEM, 0o600); err != nil {
			return nil, err
		}
		out, err := exec.Command(keygen, "-q", "-p", "-a", "1", "-P", "", "-N", string(passphrase), "-f", f).CombinedOutput()
		if err == nil {
			return os.ReadFile(f)
		}
		_ = out // fall back to x/crypto below
	}
	key, err := ssh.ParseRawPrivateKey(plainPEM)
	if err != nil {
		return nil, err
	}
	block, err := ssh.MarshalPrivateKeyWithPassphrase(key, "rediacc-sshtest", passphrase)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(block), nil
}

func mustWrite(tb testing.TB, path string, data []byte, mode os.FileMode) {
	tb.Helper()
	if err := os.WriteFile(path, data, mode); err != nil {
		tb.Fatalf("sshtest: write %s: %v", path, err)
	}
	if err := os.Chmod(path, mode); err != nil {
		tb.Fatalf("sshtest: chmod %s: %v", path, err)
	}
}

// freePort returns a TCP port that was free on host a moment ago.
func freePort(tb testing.TB, host string) int {
	tb.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		tb.Fatalf("sshtest: find a free port on %s: %v", host, err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

var userOnce sync.Mutex

// ensureTestUser creates the login user if missing, with an unlocked
// password field ("*": no password, but sshd without PAM accepts keys) and
// empty shell start-up files. It is safe to call from concurrent processes
// (an flock serialises them) and goroutines.
func ensureTestUser(name string) error {
	return withUserLock(func() error { return ensureTestUserLocked(name) })
}

func ensureTestUserLocked(name string) error {
	if _, err := user.Lookup(name); err != nil {
		out, err := exec.Command(sbin("useradd"), "-m", "-s", "/bin/sh", name).CombinedOutput()
		var ee *exec.ExitError
		// Exit status 9: the user exists (created by another process).
		if err != nil && !(errors.As(err, &ee) && ee.ExitCode() == 9) {
			return fmt.Errorf("useradd: %v: %s", err, bytes.TrimSpace(out))
		}
	}
	if locked, err := passwordLocked(name); err != nil || locked {
		if out, err := exec.Command(sbin("usermod"), "-p", "*", name).CombinedOutput(); err != nil {
			return fmt.Errorf("usermod -p '*': %v: %s", err, bytes.TrimSpace(out))
		}
	}
	u, err := user.Lookup(name)
	if err != nil {
		return err
	}
	for _, f := range []string{".profile", ".bashrc", ".bash_profile", ".bash_login", ".bash_logout"} {
		p := filepath.Join(u.HomeDir, f)
		if st, err := os.Stat(p); err == nil && st.Size() > 0 {
			if err := os.Truncate(p, 0); err != nil {
				return err
			}
		}
	}
	return nil
}

// passwordLocked reports whether the shadow password field of name starts
// with "!" (locked: sshd without PAM then refuses every login).
func passwordLocked(name string) (bool, error) {
	b, err := os.ReadFile("/etc/shadow")
	if err != nil {
		return false, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		fields := strings.Split(line, ":")
		if len(fields) > 1 && fields[0] == name {
			return strings.HasPrefix(fields[1], "!"), nil
		}
	}
	return false, fmt.Errorf("%s not in /etc/shadow", name)
}

// sbin returns the path of an administration tool.
func sbin(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, d := range []string{"/usr/sbin", "/sbin"} {
		if p := filepath.Join(d, name); fileExists(p) {
			return p
		}
	}
	return name
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// killTree stops root and all its descendants (SIGSTOP until the tree is
// stable, so nothing forks meanwhile), then kills them all with SIGKILL.
func killTree(root int) {
	var pids []int
	for i := 0; i < 10; i++ {
		tree := descendants(root)
		for _, p := range tree {
			_ = syscall.Kill(p, syscall.SIGSTOP)
		}
		if len(tree) == len(pids) {
			pids = tree
			break
		}
		pids = tree
	}
	for _, p := range pids {
		_ = syscall.Kill(p, syscall.SIGKILL)
	}
	for _, p := range pids {
		_ = syscall.Kill(p, syscall.SIGCONT)
	}
}

// descendants returns root and its descendant processes (from /proc).
func descendants(root int) []int {
	children := map[int][]int{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 2 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		children[ppid] = append(children[ppid], pid)
	}
	out := []int{root}
	for i := 0; i < len(out); i++ {
		out = append(out, children[out[i]]...)
	}
	return out
}
