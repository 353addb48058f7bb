//go:build tools

// Package tools pins the HashiCorp Vault server used by the integration tests.
// It is a separate module so the SDK's go.mod stays lean. Build with:
//
//	cd tools/vault && go build -o "$DEST/vault" github.com/hashicorp/vault
package tools

import _ "github.com/hashicorp/vault"
