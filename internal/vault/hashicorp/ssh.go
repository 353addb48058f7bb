package hashicorp

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"
)

// HashiCorp Vault's SSH secrets engine, signing mode
// (https://developer.hashicorp.com/vault/docs/secrets/ssh/signed-ssh-certificates):
// the CA's private key stays in Vault; rediacc sends an ephemeral public
// key to MOUNT/sign/ROLE and gets a certificate back. The role decides what
// may be signed (allowed_users, allowed_extensions, max_ttl, key ID rules).

// SSHSignRequest is a request to MOUNT/sign/ROLE.
type SSHSignRequest struct {
	// Mount is the SSH engine's mount path; Role the signing role.
	Mount, Role string
	// PublicKey is the key to certify, in authorized_keys form.
	PublicKey string
	// ValidPrincipals is the comma-separated list of principals.
	ValidPrincipals string
	// TTL is the requested validity; 0 lets the role decide (its ttl).
	TTL time.Duration
	// KeyID is the certificate's key ID (the role needs
	// allow_user_key_ids=true); "" lets the role's key_id_format decide.
	KeyID string
	// Extensions and CriticalOptions requested; an empty Extensions map
	// makes Vault apply the role's default_extensions.
	Extensions, CriticalOptions map[string]string
}

// SSHSign asks the SSH engine to sign req.PublicKey and returns the
// certificate in authorized_keys form. Errors: vault.ErrPermissionDenied
// (the token's policy), vault.ErrUnavailable, vault.ErrClosed, an error
// naming Vault's reason when the role refuses (user, extension, TTL, key
// ID not allowed), ctx's error.
func (b *Backend) SSHSign(ctx context.Context, req SSHSignRequest) (string, error) {
	path := strings.Trim(req.Mount, "/") + "/sign/" + req.Role
	data := map[string]any{"public_key": req.PublicKey, "cert_type": "user", "valid_principals": req.ValidPrincipals}
	if req.TTL > 0 {
		data["ttl"] = strconv.FormatInt(int64(req.TTL/time.Second), 10) + "s"
	}
	if req.KeyID != "" {
		data["key_id"] = req.KeyID
	}
	if len(req.Extensions) > 0 {
		data["extensions"] = req.Extensions
	}
	if len(req.CriticalOptions) > 0 {
		data["critical_options"] = req.CriticalOptions
	}
	var signed string
	err := b.do(ctx, func() error {
		s, err := b.client.Logical().WriteWithContext(ctx, path, data)
		if err != nil {
			return b.mapErr("sign an SSH key with", path, err)
		}
		if s == nil || s.Data == nil {
			return fmt.Errorf("hashicorp vault: sign an SSH key with %s at %s: empty answer", path, b.addr)
		}
		signed, _ = s.Data["signed_key"].(string)
		if signed == "" {
			return fmt.Errorf("hashicorp vault: sign an SSH key with %s at %s: the answer has no signed_key", path, b.addr)
		}
		return nil
	})
	return signed, err
}

// SSHCAPublicKey returns the public key (authorized_keys form) of the CA
// of the SSH engine at mount, or "" when the engine has no CA key yet.
// Errors: as for SSHSign, and one saying that no SSH engine is mounted
// there.
func (b *Backend) SSHCAPublicKey(ctx context.Context, mount string) (string, error) {
	path := strings.Trim(mount, "/") + "/config/ca"
	var pub string
	err := b.do(ctx, func() error {
		rctx, cancel := context.WithTimeout(ctx, DefaultTimeout)
		defer cancel()
		resp, err := b.client.Logical().ReadRawWithContext(rctx, path)
		if resp != nil && resp.StatusCode == http.StatusNotFound {
			resp.Body.Close()
			return fmt.Errorf("hashicorp vault: no SSH secrets engine is mounted at %s on %s (vault secrets enable -path=%s ssh)", mount, b.addr, mount)
		}
		s, err := b.client.Logical().ParseRawResponseAndCloseBody(resp, err)
		var re *api.ResponseError
		switch {
		case errors.As(err, &re) && re.StatusCode == http.StatusBadRequest && strings.Contains(strings.Join(re.Errors, " "), "configured"):
			return nil // "keys haven't been configured yet"
		case err != nil:
			return b.mapErr("read the SSH CA of", path, err)
		case s == nil || s.Data == nil:
			return nil
		}
		pub, _ = s.Data["public_key"].(string)
		return nil
	})
	return strings.TrimSpace(pub), err
}

// SSHGenerateCA makes the SSH engine at mount generate its CA key pair
// (keyType "ssh-ed25519" or "ssh-rsa"; the private key never leaves
// Vault) and returns the public key. Errors: as for SSHCAPublicKey.
func (b *Backend) SSHGenerateCA(ctx context.Context, mount, keyType string) (string, error) {
	path := strings.Trim(mount, "/") + "/config/ca"
	var pub string
	err := b.do(ctx, func() error {
		s, err := b.client.Logical().WriteWithContext(ctx, path, map[string]any{"generate_signing_key": true, "key_type": keyType})
		if err != nil {
			var re *api.ResponseError
			if errors.As(err, &re) && re.StatusCode == http.StatusNotFound {
				return fmt.Errorf("hashicorp vault: no SSH secrets engine is mounted at %s on %s (vault secrets enable -path=%s ssh)", mount, b.addr, mount)
			}
			return b.mapErr("generate the SSH CA of", path, err)
		}
		if s != nil && s.Data != nil {
			pub, _ = s.Data["public_key"].(string)
		}
		return nil
	})
	if err == nil && pub == "" {
		return b.SSHCAPublicKey(ctx, mount)
	}
	return strings.TrimSpace(pub), err
}

// SSHRole reads a role of the SSH engine at mount: its settings, nil when
// the role does not exist. A token whose policy does not allow reading
// roles gets vault.ErrPermissionDenied.
func (b *Backend) SSHRole(ctx context.Context, mount, role string) (map[string]any, error) {
	path := strings.Trim(mount, "/") + "/roles/" + role
	var out map[string]any
	err := b.do(ctx, func() error {
		s, err := b.client.Logical().ReadWithContext(ctx, path)
		if err != nil {
			return b.mapErr("read the SSH role", path, err)
		}
		if s != nil {
			out = s.Data
		}
		return nil
	})
	return out, err
}

// Address returns the Vault server's address.
func (b *Backend) Address() string { return b.addr }
