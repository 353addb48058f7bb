package ssh_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/rediacc/rediacc/ssh"
	"github.com/rediacc/rediacc/ssh/sshtest"
)

func TestSmoke(t *testing.T) {
	srv := sshtest.NewServer(t, sshtest.Options{})
	kh := filepath.Join(t.TempDir(), "kh")
	os.WriteFile(kh, []byte(srv.KnownHostsLine()+"\n"), 0o600)
	p := ssh.NewPool(ssh.Config{})
	defer p.Close()
	tg := ssh.Target{Name: "m", Host: srv.Host(), Port: srv.Port(), User: "u", Auth: []ssh.Auth{ssh.Signers(srv.ClientSigner())}, HostKey: ssh.KnownHosts(kh)}
	res, err := p.Run(context.Background(), tg, ssh.Command{Cmd: "echo hi; echo err >&2; exit 3", Env: map[string]string{"A": "x y"}})
	t.Logf("%+v %v", res, err)
	t.Logf("out=%q err=%q", res.Stdout, res.Stderr)
	os1 := sshtest.StartOpenSSH(t, sshtest.OpenSSHOptions{Loopback: 2})
	tg2 := ssh.Target{Name: "real", Host: os1.Host, Port: os1.Port, User: os1.User, Auth: []ssh.Auth{ssh.KeyFile(os1.ClientKeyPath, nil)}, HostKey: ssh.KnownHosts(os1.KnownHostsPath)}
	res, err = p.Run(context.Background(), tg2, ssh.Command{Cmd: "echo $A; id; echo err >&2; kill -TERM $$", Env: map[string]string{"A": "x y"}})
	t.Logf("%+v %v", res, err)
	if res != nil {
		t.Logf("out=%q err=%q", res.Stdout, res.Stderr)
	}
}
