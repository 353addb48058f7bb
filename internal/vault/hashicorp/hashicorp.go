// Package hashicorp is the HashiCorp Vault engine of rediacc's team vaults:
// secrets live in a KV version 2 secrets engine, one path prefix per team.
//
// A secret "db/password" of team "prod" is stored, with the default
// [Config], at secret/data/rediacc/prod/db/password as the KV data
// {"value": "<the value>"} when the value is valid UTF-8, and
// {"value": "<base64>", "encoding": "base64"} otherwise, so that secrets
// written with `vault kv put secret/rediacc/prod/db/password value=...` read
// back as expected. Versions are KV v2 versions, check-and-set maps to the KV
// v2 "cas" option, Delete deletes the key's metadata (all versions), and List
// walks the metadata tree recursively.
//
// Authentication is a token or AppRole. Renewable tokens are kept alive with
// the API's LifetimeWatcher in a background goroutine; with AppRole the
// backend logs in again when renewal stops (at the token's max TTL) or when a
// request is denied because the token has expired. Close stops that
// goroutine.
package hashicorp

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/hashicorp/vault/api"
	"github.com/hashicorp/vault/api/auth/approle"

	"github.com/rediacc/rediacc/internal/vault"
)

// Defaults for [Config] fields left at their zero value.
const (
	// DefaultMount is the mount path of the KV v2 engine.
	DefaultMount = "secret"
	// DefaultPathPrefix is the per-team path prefix inside the mount;
	// "{team}" is replaced by the team name.
	DefaultPathPrefix = "rediacc/{team}/"
	// DefaultTimeout is the timeout of one HTTP request to Vault.
	DefaultTimeout = 30 * time.Second
	// DefaultAppRoleMount is the mount path of the AppRole auth method.
	DefaultAppRoleMount = "approle"
)

// teamPlaceholder is replaced by the team name in Config.PathPrefix.
const teamPlaceholder = "{team}"

// Config configures [New]. Exactly one of Token and AppRole must be set.
type Config struct {
	// Address is Vault's URL, e.g. "https://vault.example.com:8200".
	// Required.
	Address string

	// Mount is the mount path of the KV version 2 secrets engine.
	// Default [DefaultMount] ("secret").
	Mount string

	// PathPrefix is where a team's secrets live inside Mount. It must contain
	// "{team}" exactly once, as a whole path segment, so that teams cannot
	// see each other's keys. Default [DefaultPathPrefix] ("rediacc/{team}/").
	PathPrefix string

	// Namespace is the Vault Enterprise namespace, if any.
	Namespace string

	// CACert is the path of a PEM file of CA certificates to trust for
	// Address's TLS certificate. Default: the system roots (and the
	// VAULT_CACERT environment variable, as for the vault CLI).
	CACert string

	// Token authenticates with a Vault token. If the token is renewable it is
	// renewed in the background until Close; it cannot be replaced when it
	// reaches its max TTL.
	Token string

	// AppRole authenticates with the AppRole method; the backend logs in
	// again whenever its token cannot be renewed any more.
	AppRole *AppRole

	// Timeout bounds each HTTP request to Vault. Default [DefaultTimeout]
	// (30 s).
	Timeout time.Duration

	// MaxRetries is how many times a request that failed with a connection
	// error or a 5xx status is retried. 0 means the API's default (2);
	// negative disables retries.
	MaxRetries int

	// DisableRenewal turns off background token renewal (and AppRole
	// re-login on expiry; re-login after a denied request still happens).
	DisableRenewal bool

	// Logger receives renewal and re-login events. Records never contain
	// tokens, secret IDs or secret values. Default slog.Default().
	Logger *slog.Logger
}

// AppRole holds AppRole credentials.
type AppRole struct {
	// RoleID is the role's role_id. Required.
	RoleID string
	// SecretID is the role's secret_id. Required.
	SecretID string
	// MountPath is where the AppRole auth method is mounted.
	// Default [DefaultAppRoleMount] ("approle").
	MountPath string
}

// Backend is the HashiCorp Vault KV v2 engine. It implements vault.Backend
// and is safe for concurrent use.
type Backend struct {
	client  *api.Client
	http    *http.Client
	kv      *api.KVv2
	mount   string
	prefix  string // with {team}, trimmed, ending in "/"
	addr    string
	approle *AppRole
	logger  *slog.Logger

	loginMu sync.Mutex // serializes logins

	stop      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
	closed    atomic.Bool

	// counters for tests and diagnostics
	logins   atomic.Int64
	renewals atomic.Int64
}

var _ vault.Backend = (*Backend)(nil)

// New connects to Vault, authenticates, and starts background token renewal
// when the token is renewable. ctx bounds the connection and login only.
//
// Errors: a configuration error (naming the field), vault.ErrUnavailable
// (Vault unreachable, naming the address), vault.ErrPermissionDenied (token
// invalid or login refused), or ctx's error.
func New(ctx context.Context, cfg Config) (*Backend, error) {
	if cfg.Address == "" {
		return nil, errors.New("hashicorp vault: Config.Address is required")
	}
	if (cfg.Token == "") == (cfg.AppRole == nil) {
		return nil, errors.New("hashicorp vault: exactly one of Config.Token and Config.AppRole is required")
	}
	if cfg.AppRole != nil && (cfg.AppRole.RoleID == "" || cfg.AppRole.SecretID == "") {
		return nil, errors.New("hashicorp vault: Config.AppRole needs RoleID and SecretID")
	}
	mount := strings.Trim(cfg.Mount, "/")
	if mount == "" {
		mount = DefaultMount
	}
	prefix, err := normalizePrefix(cfg.PathPrefix)
	if err != nil {
		return nil, err
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}

	conf := api.DefaultConfig()
	if conf.Error != nil {
		return nil, fmt.Errorf("hashicorp vault: %v", conf.Error)
	}
	conf.Address = cfg.Address
	conf.Timeout = timeout
	switch {
	case cfg.MaxRetries > 0:
		conf.MaxRetries = cfg.MaxRetries
	case cfg.MaxRetries < 0:
		conf.MaxRetries = 0
	}
	if cfg.CACert != "" {
		if err := conf.ConfigureTLS(&api.TLSConfig{CACert: cfg.CACert}); err != nil {
			return nil, fmt.Errorf("hashicorp vault: CA certificate %s: %v", cfg.CACert, err)
		}
	}
	client, err := api.NewClient(conf)
	if err != nil {
		return nil, fmt.Errorf("hashicorp vault: client for %s: %v", cfg.Address, err)
	}
	client.SetToken(cfg.Token) // never VAULT_TOKEN from the environment
	if cfg.Namespace != "" {
		client.SetNamespace(cfg.Namespace)
	}
	var ar *AppRole
	if cfg.AppRole != nil {
		c := *cfg.AppRole
		if c.MountPath == "" {
			c.MountPath = DefaultAppRoleMount
		}
		ar = &c
	}

	b := &Backend{
		client:  client,
		http:    conf.HttpClient,
		kv:      client.KVv2(mount),
		mount:   mount,
		prefix:  prefix,
		addr:    cfg.Address,
		approle: ar,
		logger:  logger.With("vault", cfg.Address),
		stop:    make(chan struct{}),
	}

	var authSecret *api.Secret
	if ar != nil {
		authSecret, err = b.login(ctx)
	} else {
		authSecret, err = b.tokenSecret(ctx)
	}
	if err != nil {
		b.http.CloseIdleConnections()
		return nil, err
	}
	if !cfg.DisableRenewal && authSecret != nil {
		b.wg.Add(1)
		go b.renewLoop(authSecret)
	}
	return b, nil
}

// normalizePrefix validates Config.PathPrefix and returns it without a
// leading slash and with a trailing one.
func normalizePrefix(p string) (string, error) {
	if p == "" {
		p = DefaultPathPrefix
	}
	p = strings.Trim(p, "/")
	segs := strings.Split(p, "/")
	n := 0
	for _, s := range segs {
		if s == "" {
			return "", fmt.Errorf("hashicorp vault: Config.PathPrefix %q has an empty segment", p)
		}
		if strings.Contains(s, teamPlaceholder) {
			if s != teamPlaceholder {
				return "", fmt.Errorf("hashicorp vault: Config.PathPrefix %q: %s must be a whole path segment", p, teamPlaceholder)
			}
			n++
		}
	}
	if n != 1 {
		return "", fmt.Errorf("hashicorp vault: Config.PathPrefix %q must contain %s exactly once", p, teamPlaceholder)
	}
	return p + "/", nil
}

// teamPrefix returns the path, inside the mount, of team's secrets ("/"-terminated).
func (b *Backend) teamPrefix(team string) string {
	return strings.Replace(b.prefix, teamPlaceholder, team, 1)
}

// login performs an AppRole login; the client's token is replaced.
func (b *Backend) login(ctx context.Context) (*api.Secret, error) {
	b.loginMu.Lock()
	defer b.loginMu.Unlock()
	auth, err := approle.NewAppRoleAuth(b.approle.RoleID, &approle.SecretID{FromString: b.approle.SecretID},
		approle.WithMountPath(b.approle.MountPath))
	if err != nil {
		return nil, fmt.Errorf("hashicorp vault: AppRole: %v", err)
	}
	s, err := b.client.Auth().Login(ctx, auth)
	if err != nil {
		return nil, b.mapErr("AppRole login at", "auth/"+b.approle.MountPath+"/login", err)
	}
	if s == nil || s.Auth == nil || s.Auth.ClientToken == "" {
		return nil, fmt.Errorf("hashicorp vault: AppRole login at %s returned no token", b.addr)
	}
	b.logins.Add(1)
	b.logger.Info("logged in to Vault with AppRole", "ttl", time.Duration(s.Auth.LeaseDuration)*time.Second, "renewable", s.Auth.Renewable)
	return s, nil
}

// tokenSecret checks the configured token and, when it is renewable with a
// TTL, renews it once and returns the renewal (which carries Auth data for the
// LifetimeWatcher). It returns nil for tokens that need no renewal (root).
func (b *Backend) tokenSecret(ctx context.Context) (*api.Secret, error) {
	s, err := b.client.Auth().Token().LookupSelfWithContext(ctx)
	if err != nil {
		return nil, b.mapErr("look up token at", "auth/token/lookup-self", err)
	}
	renewable, _ := s.TokenIsRenewable()
	ttl, _ := s.TokenTTL()
	if !renewable || ttl <= 0 {
		return nil, nil
	}
	r, err := b.client.Auth().Token().RenewSelfWithContext(ctx, 0)
	if err != nil {
		return nil, b.mapErr("renew token at", "auth/token/renew-self", err)
	}
	b.renewals.Add(1)
	return r, nil
}

// renewLoop keeps the token alive until Close: it watches authSecret with a
// LifetimeWatcher and, with AppRole, logs in again when the watcher stops.
func (b *Backend) renewLoop(authSecret *api.Secret) {
	defer b.wg.Done()
	for authSecret != nil {
		w, err := b.client.NewLifetimeWatcher(&api.LifetimeWatcherInput{Secret: authSecret})
		if err != nil {
			b.logger.Warn("cannot watch the Vault token's lifetime", "err", err)
			return
		}
		done := make(chan struct{})
		go func() { defer close(done); w.Start() }()
	watch:
		for {
			select {
			case <-b.stop:
				w.Stop()
				<-done
				return
			case r := <-w.RenewCh():
				b.renewals.Add(1)
				if r != nil && r.Secret != nil && r.Secret.Auth != nil {
					b.logger.Debug("renewed Vault token", "ttl", time.Duration(r.Secret.Auth.LeaseDuration)*time.Second)
				}
			case err := <-w.DoneCh():
				<-done
				if b.approle == nil {
					if err != nil {
						b.logger.Warn("Vault token renewal stopped; the token will expire", "err", err)
					} else {
						b.logger.Warn("Vault token reached its max TTL and will expire; configure a new token or use AppRole")
					}
					return
				}
				b.logger.Info("Vault token renewal stopped; logging in again", "err", err)
				break watch
			}
		}
		authSecret = b.reloginUntilStopped()
	}
}

// reloginUntilStopped retries the AppRole login with capped exponential
// backoff until it succeeds (returning the new auth secret) or Close is
// called (returning nil).
func (b *Backend) reloginUntilStopped() *api.Secret {
	delay := 500 * time.Millisecond
	for {
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			select {
			case <-b.stop:
				cancel()
			case <-ctx.Done():
			}
		}()
		s, err := b.login(ctx)
		cancel()
		if err == nil {
			return s
		}
		b.logger.Warn("AppRole re-login failed; retrying", "err", err, "in", delay)
		t := time.NewTimer(delay)
		select {
		case <-b.stop:
			t.Stop()
			return nil
		case <-t.C:
		}
		delay = min(2*delay, 30*time.Second)
	}
}

// do runs op. A denial (HTTP 403) is told apart: when the token can still
// look itself up it is a policy denial (vault.ErrPermissionDenied: the
// token's policies do not allow the operation); otherwise the token was
// revoked or has expired — with AppRole op is retried once after a fresh
// login, and when there is none (a token) or the login fails it is
// vault.ErrUnauthenticated.
func (b *Backend) do(ctx context.Context, op func() error) error {
	if b.closed.Load() {
		return fmt.Errorf("hashicorp vault %s: %w", b.addr, vault.ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	err := op()
	var d *deniedError
	if err == nil || !errors.As(err, &d) {
		return err
	}
	if _, lerr := b.client.Auth().Token().LookupSelfWithContext(ctx); !isStatus(lerr, http.StatusForbidden) {
		d.why = "the token's policies do not allow it (the token itself is valid: grant its policy this path and capability)"
		return err
	}
	if b.approle != nil {
		if _, lerr := b.login(ctx); lerr == nil {
			return op() // a fresh token: a denial now is its policy's
		} else {
			d.why = fmt.Sprintf("the token is no longer valid (revoked or expired) and a new AppRole login failed: %v", lerr)
		}
	} else {
		d.why = "the token is no longer valid (revoked or expired: it cannot even look itself up); give a valid token (VAULT_TOKEN)"
	}
	d.sentinel = vault.ErrUnauthenticated
	return err
}

// deniedError is an HTTP 403 of an operation on path; do says why once it
// knows (a policy, or a token no longer valid) and which sentinel it is.
type deniedError struct {
	op, path, addr string
	why            string
	sentinel       error // vault.ErrPermissionDenied or vault.ErrUnauthenticated
}

func (e *deniedError) Error() string {
	return fmt.Sprintf("hashicorp vault: %s %s at %s: %v (HTTP 403: %s)", e.op, e.path, e.addr, e.sentinel, e.why)
}

func (e *deniedError) Unwrap() error { return e.sentinel }

func isStatus(err error, code int) bool {
	var re *api.ResponseError
	return errors.As(err, &re) && re.StatusCode == code
}

// Get implements vault.Backend. Errors: vault.ErrSecretNotFound,
// vault.ErrInvalidTeam, vault.ErrInvalidKey, vault.ErrCorrupt (the KV entry
// has no usable "value" field), vault.ErrPermissionDenied,
// vault.ErrUnavailable, vault.ErrClosed, ctx's error.
func (b *Backend) Get(ctx context.Context, team, key string) (vault.Secret, error) {
	return b.read(ctx, team, key, 0)
}

// GetVersion implements vault.Backend with KV v2's versioned read: every
// version the mount keeps (max_versions, 10 by default) is retrievable; a
// deleted or destroyed version is vault.ErrSecretNotFound. Errors as for
// Get.
func (b *Backend) GetVersion(ctx context.Context, team, key string, version int) (vault.Secret, error) {
	if err := vault.Validate(team, key); err == nil && version < 1 {
		return vault.Secret{}, vault.VersionNotFoundError(team, key, version)
	}
	return b.read(ctx, team, key, version)
}

// read reads version of key (0: the latest).
func (b *Backend) read(ctx context.Context, team, key string, version int) (vault.Secret, error) {
	if err := vault.Validate(team, key); err != nil {
		return vault.Secret{}, err
	}
	p := b.teamPrefix(team) + key
	var out vault.Secret
	err := b.do(ctx, func() error {
		var (
			s   *api.KVSecret
			err error
		)
		if version == 0 {
			s, err = b.kv.Get(ctx, p)
		} else {
			s, err = b.kv.GetVersion(ctx, p, version)
		}
		if errors.Is(err, api.ErrSecretNotFound) || (err == nil && (s == nil || s.Data == nil)) {
			if version != 0 {
				return vault.VersionNotFoundError(team, key, version)
			}
			return vault.NotFoundError(team, key)
		}
		if err != nil {
			return b.mapErr("read", b.mount+"/data/"+p, err)
		}
		val, err := decodeValue(s.Data)
		if err != nil {
			return fmt.Errorf("%w: %s/data/%s at %s: %s", vault.ErrCorrupt, b.mount, p, b.addr, err)
		}
		out = vault.Secret{Key: key, Value: val}
		if s.VersionMetadata != nil {
			out.Version, out.CreatedAt = s.VersionMetadata.Version, s.VersionMetadata.CreatedTime.UTC()
		}
		return nil
	})
	return out, err
}

// encodeValue returns the KV data for value.
func encodeValue(value []byte) map[string]any {
	if utf8.Valid(value) {
		return map[string]any{"value": string(value)}
	}
	return map[string]any{"value": base64.StdEncoding.EncodeToString(value), "encoding": "base64"}
}

// decodeValue is the inverse of encodeValue. Its errors never quote the data.
func decodeValue(data map[string]any) ([]byte, error) {
	raw, ok := data["value"]
	if !ok {
		return nil, errors.New(`the entry has no "value" field (write it with value=...)`)
	}
	s, ok := raw.(string)
	if !ok {
		return nil, errors.New(`the "value" field is not a string`)
	}
	switch enc, _ := data["encoding"].(string); enc {
	case "":
		return []byte(s), nil
	case "base64":
		v, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return nil, errors.New(`the "value" field is not valid base64`)
		}
		return v, nil
	default:
		return nil, fmt.Errorf(`unknown "encoding" %q`, enc)
	}
}

// Put implements vault.Backend; opts.CAS maps to KV v2's cas option.
// Errors: vault.ErrVersionConflict, vault.ErrInvalidTeam, vault.ErrInvalidKey,
// vault.ErrPermissionDenied, vault.ErrUnavailable, vault.ErrClosed, ctx's
// error.
func (b *Backend) Put(ctx context.Context, team, key string, value []byte, opts vault.PutOptions) (int, error) {
	if err := vault.Validate(team, key); err != nil {
		return 0, err
	}
	p := b.teamPrefix(team) + key
	var kvOpts []api.KVOption
	if opts.CAS != nil {
		if *opts.CAS < 0 {
			return 0, vault.ConflictError(team, key, *opts.CAS, b.currentVersion(ctx, p))
		}
		kvOpts = append(kvOpts, api.WithCheckAndSet(*opts.CAS))
	}
	var version int
	err := b.do(ctx, func() error {
		s, err := b.kv.Put(ctx, p, encodeValue(value), kvOpts...)
		if err != nil {
			if opts.CAS != nil && isCASError(err) {
				return vault.ConflictError(team, key, *opts.CAS, b.currentVersion(ctx, p))
			}
			return b.mapErr("write", b.mount+"/data/"+p, err)
		}
		if s == nil || s.VersionMetadata == nil {
			return fmt.Errorf("hashicorp vault: write %s/data/%s at %s: no version in the response", b.mount, p, b.addr)
		}
		version = s.VersionMetadata.Version
		return nil
	})
	return version, err
}

// isCASError reports whether err is Vault's check-and-set failure.
func isCASError(err error) bool {
	var re *api.ResponseError
	if !errors.As(err, &re) || re.StatusCode != http.StatusBadRequest {
		return false
	}
	for _, e := range re.Errors {
		if strings.Contains(e, "check-and-set") {
			return true
		}
	}
	return false
}

// currentVersion returns the key's current version, 0 when it does not exist
// or cannot be read (used only to word conflict errors).
func (b *Backend) currentVersion(ctx context.Context, p string) int {
	m, err := b.kv.GetMetadata(ctx, p)
	if err != nil || m == nil {
		return 0
	}
	return m.CurrentVersion
}

// Delete implements vault.Backend by deleting the key's metadata, which
// removes all its versions. Errors: vault.ErrSecretNotFound and those of Put.
// The existence check and the delete are two requests, so a concurrent
// Delete may make both succeed.
func (b *Backend) Delete(ctx context.Context, team, key string) error {
	if err := vault.Validate(team, key); err != nil {
		return err
	}
	p := b.teamPrefix(team) + key
	return b.do(ctx, func() error {
		if _, err := b.kv.GetMetadata(ctx, p); err != nil {
			if errors.Is(err, api.ErrSecretNotFound) {
				return vault.NotFoundError(team, key)
			}
			return b.mapErr("read metadata of", b.mount+"/metadata/"+p, err)
		}
		if err := b.kv.DeleteMetadata(ctx, p); err != nil {
			return b.mapErr("delete", b.mount+"/metadata/"+p, err)
		}
		return nil
	})
}

// List implements vault.Backend by listing the team's metadata tree
// recursively. Keys whose names are not valid vault keys (written by other
// tools) are skipped. Errors: vault.ErrInvalidTeam,
// vault.ErrPermissionDenied, vault.ErrUnavailable, vault.ErrClosed, ctx's
// error.
func (b *Backend) List(ctx context.Context, team string) ([]string, error) {
	if err := vault.ValidateTeam(team); err != nil {
		return nil, err
	}
	var keys []string
	err := b.do(ctx, func() error {
		keys = keys[:0]
		return b.walk(ctx, b.teamPrefix(team), "", &keys)
	})
	if err != nil {
		return nil, err
	}
	slices.Sort(keys)
	return keys, nil
}

// walk lists base+dir and recurses into sub-folders, collecting the
// entries whose names are valid keys.
func (b *Backend) walk(ctx context.Context, base, dir string, keys *[]string) error {
	return b.walkEntries(ctx, base, dir, func(k string) {
		if vault.ValidateKey(k) == nil {
			*keys = append(*keys, k)
		} else {
			b.logger.Debug("skipping a KV entry whose name is not a valid key", "path", base+k)
		}
	})
}

// walkEntries lists base+dir and recurses into sub-folders, calling visit
// with each entry's path relative to base, whatever its name.
func (b *Backend) walkEntries(ctx context.Context, base, dir string, visit func(rel string)) error {
	p := b.mount + "/metadata/" + base + dir
	s, err := b.client.Logical().ListWithContext(ctx, p)
	if err != nil {
		return b.mapErr("list", p, err)
	}
	if s == nil || s.Data == nil {
		return nil
	}
	raw, _ := s.Data["keys"].([]any)
	for _, r := range raw {
		name, ok := r.(string)
		if !ok || name == "" {
			continue
		}
		if strings.HasSuffix(name, "/") {
			if err := b.walkEntries(ctx, base, dir+name, visit); err != nil {
				return err
			}
			continue
		}
		visit(dir + name)
	}
	return nil
}

// Close implements vault.Backend: it stops token renewal and waits for its
// goroutines, and closes idle HTTP connections. It does not revoke the token.
// It is idempotent and returns nil.
func (b *Backend) Close() error {
	b.closeOnce.Do(func() {
		b.closed.Store(true)
		close(b.stop)
		b.wg.Wait()
		b.http.CloseIdleConnections()
	})
	return nil
}

// mapErr turns an API error into one wrapping a vault sentinel where one
// applies, naming the operation, path and address.
func (b *Backend) mapErr(op, path string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("hashicorp vault: %s %s at %s: %w", op, path, b.addr, err)
	}
	var re *api.ResponseError
	if errors.As(err, &re) {
		msg := strings.Join(re.Errors, "; ")
		switch {
		case re.StatusCode == http.StatusForbidden:
			return &deniedError{op: op, path: path, addr: b.addr, sentinel: vault.ErrPermissionDenied,
				why: "the token's policies do not allow it, or the token has expired"}
		case re.StatusCode == http.StatusServiceUnavailable:
			return fmt.Errorf("hashicorp vault: %s %s: %w: Vault at %s is sealed or in standby (HTTP 503: %s)", op, path, vault.ErrUnavailable, b.addr, msg)
		case re.StatusCode >= 500:
			return fmt.Errorf("hashicorp vault: %s %s: %w: Vault at %s answered HTTP %d: %s", op, path, vault.ErrUnavailable, b.addr, re.StatusCode, msg)
		default:
			return fmt.Errorf("hashicorp vault: %s %s at %s: HTTP %d: %s", op, path, b.addr, re.StatusCode, msg)
		}
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("hashicorp vault: %s %s: %w: connection to %s refused: is Vault running there, and is the address right?", op, path, vault.ErrUnavailable, b.addr)
	}
	var (
		nerr net.Error
		uerr *url.Error
	)
	if errors.As(err, &nerr) || errors.As(err, &uerr) {
		return fmt.Errorf("hashicorp vault: %s %s: %w: cannot reach %s: %v", op, path, vault.ErrUnavailable, b.addr, err)
	}
	var jerr *json.SyntaxError
	if errors.As(err, &jerr) {
		return fmt.Errorf("hashicorp vault: %s %s at %s: the answer is not Vault JSON (is %s a Vault server?)", op, path, b.addr, b.addr)
	}
	return fmt.Errorf("hashicorp vault: %s %s at %s: %v", op, path, b.addr, err)
}
