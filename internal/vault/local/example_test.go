package local_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/rediacc/rediacc/internal/vault"
	"github.com/rediacc/rediacc/internal/vault/local"
)

func ExampleOpen() {
	dir, _ := os.MkdirTemp("", "vault-example")
	defer os.RemoveAll(dir)
	ctx := context.Background()

	v, err := local.Open(filepath.Join(dir, "vault"),
		local.WithIdentityFile(filepath.Join(dir, "config", "vault.key"), true))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer v.Close()

	version, _ := v.Put(ctx, "prod", "db/password", []byte("s3cret"), vault.PutOptions{CAS: vault.CAS(0)})
	s, _ := v.Get(ctx, "prod", "db/password")
	fmt.Println(version, s)

	_, err = v.Put(ctx, "prod", "db/password", []byte("other"), vault.PutOptions{CAS: vault.CAS(0)})
	fmt.Println(err)
	// Output:
	// 1 Secret{Key:"db/password" Version:1 Value:<6 bytes redacted>}
	// version conflict: team "prod" key "db/password": check-and-set expected the key not to exist but current version is 1
}
