package ssh

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The write script, stopped by TERM to its process group (as Run stops a
// timed-out or cancelled command) while it writes, removes its temporary
// file and leaves authorized_keys as it was.
func TestAuthorizedKeysWriteStoppedCleansUp(t *testing.T) {
	for _, shell := range []string{"/bin/sh", "/bin/dash", "/bin/bash"} {
		if _, err := os.Stat(shell); err != nil {
			continue
		}
		t.Run(filepath.Base(shell), func(t *testing.T) {
			dir := t.TempDir()
			f := filepath.Join(dir, "authorized_keys")
			if err := os.WriteFile(f, []byte("ssh-ed25519 AAAA old\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			args := []string{f, "missing-on-purpose", ".authorized_keys.rediacc-test", "0600", "", "100"}
			// The checksum check would fail at once: take the current one.
			sum, err := exec.Command("sh", "-c", "cksum < "+ShellQuote(f)).Output()
			if err != nil {
				t.Fatal(err)
			}
			args[1] = strings.TrimSpace(string(sum))
			quoted := make([]string, len(args))
			for i, a := range args {
				quoted[i] = ShellQuote(a)
			}
			cmd := exec.Command(shell, "-c", "set -- "+strings.Join(quoted, " ")+"\n"+akWriteScript)
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
			stdin, err := cmd.StdinPipe() // never closed: cat blocks, as on a slow link
			if err != nil {
				t.Fatal(err)
			}
			defer stdin.Close()
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			tmp := filepath.Join(dir, ".authorized_keys.rediacc-test")
			deadline := time.Now().Add(10 * time.Second)
			for {
				if _, err := os.Stat(tmp); err == nil {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("the script never created its temporary file")
				}
				time.Sleep(5 * time.Millisecond)
			}
			// A TERM that lands between the shell's fork and cat's exec can be
			// lost (cat then blocks on the open stdin): send it again while
			// the script lives, KILL and fail after 10 s.
			done := make(chan struct{})
			go func() { _ = cmd.Wait(); close(done) }()
			for i := 0; ; i++ {
				_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
				select {
				case <-done:
				case <-time.After(500 * time.Millisecond):
					if i < 20 {
						continue
					}
					_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
					<-done
					t.Fatal("the script survived TERM for 10 s")
				}
				break
			}
			if _, err := os.Stat(tmp); err == nil {
				t.Fatal("the temporary file was left behind")
			}
			if b, _ := os.ReadFile(f); string(b) != "ssh-ed25519 AAAA old\n" {
				t.Fatalf("authorized_keys changed: %q", b)
			}
		})
	}
}
