package ssh_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	xssh "golang.org/x/crypto/ssh"

	"github.com/rediacc/rediacc/ssh"
	"github.com/rediacc/rediacc/ssh/sshtest"
)

// agentWithDecoys serves an agent holding n unrelated ed25519 keys and
// then the key of srv (so that an agent offering everything exhausts a
// small MaxAuthTries first), points SSH_AUTH_SOCK at it and returns the
// decoys' fingerprints.
func agentWithDecoys(t *testing.T, srv *sshtest.OpenSSH, n int) []string {
	t.Helper()
	var keys []any
	var decoys []string
	for range n {
		s, pemKey, err := sshtest.GenerateSigner(nil)
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, pemKey)
		decoys = append(decoys, xssh.FingerprintSHA256(s.PublicKey()))
	}
	keys = append(keys, readFile(t, srv.ClientKeyPath))
	t.Setenv("SSH_AUTH_SOCK", sshtest.StartAgent(t, keys...))
	return decoys
}

// Issue 8, kind 7: with the agent, only the key pinned for the machine is
// offered (IdentitiesOnly). A real agent protocol (x/crypto's keyring on a
// Unix socket) holds four keys, the authorized one last; the real sshd
// allows two tries and logs every key offered.
func TestAgentOffersOnlyThePinnedKey(t *testing.T) {
	srv := sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: 70, LogLevel: "DEBUG1", ExtraConfig: []string{"MaxAuthTries 2"}})
	decoys := agentWithDecoys(t, srv, 3)
	pinned := xssh.FingerprintSHA256(srv.ClientSigner.PublicKey())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tg := opensshTarget("agent", srv)

	// Every key: the decoys use up MaxAuthTries before the right key.
	tg.Auth = []ssh.Auth{ssh.Agent()}
	if _, err := newPool(t, ssh.Config{}).Run(ctx, tg, ssh.Command{Cmd: "true"}); !errors.Is(err, ssh.ErrAuthFailed) {
		t.Fatalf("an agent offering every key against MaxAuthTries 2: %v", err)
	}
	if log := srv.Log(); !strings.Contains(log, decoys[0]) {
		t.Fatalf("sshd did not log the first decoy offered; the test cannot see offers:\n%s", log)
	}

	// Pinned: one key offered, the right one.
	mark := len(srv.Log())
	tg.Auth = []ssh.Auth{ssh.AgentKeys(pinned)}
	res, err := newPool(t, ssh.Config{}).Run(ctx, tg, ssh.Command{Cmd: "echo in"})
	if err != nil || string(res.Stdout) != "in\n" {
		t.Fatalf("the pinned agent key: %v", err)
	}
	log := srv.Log()[mark:]
	for _, d := range decoys {
		if strings.Contains(log, d) {
			t.Errorf("the pinned client offered decoy %s:\n%s", d, log)
		}
	}
	if !strings.Contains(log, "Accepted publickey") || !strings.Contains(log, pinned) {
		t.Errorf("sshd log after the pinned login:\n%s", log)
	}

	// A fingerprint the agent lacks: refused before dialing, naming it and
	// what the agent holds; a malformed one is invalid.
	missing := "SHA256:" + strings.Repeat("A", 43)
	p := newPool(t, ssh.Config{})
	tg.Auth = []ssh.Auth{ssh.AgentKeys(missing)}
	_, err = p.Run(ctx, tg, ssh.Command{Cmd: "true"})
	if !errors.Is(err, ssh.ErrAuthFailed) || !strings.Contains(err.Error(), missing) || !strings.Contains(err.Error(), pinned) {
		t.Fatalf("a fingerprint the agent lacks: %v", err)
	}
	tg.Auth = []ssh.Auth{ssh.AgentKeys("MD5:aa:bb")}
	if _, err := p.Run(ctx, tg, ssh.Command{Cmd: "true"}); !errors.Is(err, ssh.ErrInvalidCommand) {
		t.Fatalf("a malformed fingerprint: %v", err)
	}
	if ssh.ValidFingerprint("MD5:aa:bb") || !ssh.ValidFingerprint(pinned) {
		t.Fatal("ValidFingerprint")
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
