package sshtest

import (
	"net"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

// StartAgent serves a real ssh-agent protocol endpoint (x/crypto/ssh/agent's
// keyring) holding keys, in that order, on a Unix socket in a temp dir until
// tb ends, and returns the socket's path (set SSH_AUTH_SOCK to it). Each key
// is a private key as ssh.ParseRawPrivateKey returns it, or PEM bytes.
// Failures call tb.Fatal.
func StartAgent(tb testing.TB, keys ...any) string {
	tb.Helper()
	keyring := agent.NewKeyring()
	for i, k := range keys {
		if pemBytes, ok := k.([]byte); ok {
			raw, err := ssh.ParseRawPrivateKey(pemBytes)
			if err != nil {
				tb.Fatalf("sshtest: agent key %d: %v", i, err)
			}
			k = raw
		}
		if err := keyring.Add(agent.AddedKey{PrivateKey: k}); err != nil {
			tb.Fatalf("sshtest: agent key %d: %v", i, err)
		}
	}
	dir, err := os.MkdirTemp("", "sshtest-agent-*") // short: socket paths are limited to ~100 bytes
	if err != nil {
		tb.Fatal(err)
	}
	sock := filepath.Join(dir, "agent.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		tb.Fatalf("sshtest: agent socket: %v", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = agent.ServeAgent(keyring, c)
			}()
		}
	}()
	tb.Cleanup(func() {
		ln.Close()
		<-done
		os.RemoveAll(dir)
	})
	return sock
}
