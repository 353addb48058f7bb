package rediacc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/rediacc/rediacc/internal/audit"
	"github.com/rediacc/rediacc/internal/authz"
	"github.com/rediacc/rediacc/internal/store"
	rssh "github.com/rediacc/rediacc/ssh"
)

// Host keys in the store. Every machine's known_hosts lines are kept in the
// queue store (store.BlobHostKeys), so that a worker on any host verifies
// the machine against the same lines: AddMachine copies the lines of the
// machine's KnownHostsFile that name its address, HostKeyAcceptNew records
// a first-seen key there (the first worker to record one wins; the others
// then verify against it), ImportHostKeys copies more lines from a file,
// ForgetHostKeys drops them (after a legitimate change of the host's key).
// A machine's KnownHostsFile, where it exists on the worker's host, is
// consulted too, never written.

// hostKeysKey is the blob key of m's host keys: its immutable id (a later
// machine of the same name starts with none).
func hostKeysKey(m Machine) string { return m.ID }

// blobs returns the store's blob engine, or nil when the engine keeps none
// (host keys are then only in files).
func (c *Client) blobs() store.BlobEngine {
	be, _ := c.engine.(store.BlobEngine)
	return be
}

// hostKeyPolicy is the host-key policy of m's connections: the store's
// lines for m, and m.KnownHostsFile where it exists.
func (c *Client) hostKeyPolicy(m Machine) rssh.HostKeyPolicy {
	be := c.blobs()
	if be == nil || m.HostKeyPolicy == HostKeyInsecureIgnore {
		return m.target(nil).HostKey
	}
	src := &storeHostKeys{c: c, be: be, m: m}
	var files []string
	if m.KnownHostsFile != "" {
		files = []string{m.KnownHostsFile}
	}
	if m.HostKeyPolicy == HostKeyAcceptNew {
		return rssh.AcceptNewHostKeyFrom(src, files...)
	}
	return rssh.KnownHostsFrom(src, files...)
}

// storeHostKeys is one machine's lines in the store, as an
// ssh.KnownHostsSource.
type storeHostKeys struct {
	c  *Client
	be store.BlobEngine
	m  Machine
}

var (
	_ rssh.KnownHostsSource = (*storeHostKeys)(nil)
	_ rssh.AddHinter        = (*storeHostKeys)(nil)
	_ rssh.RemoveHinter     = (*storeHostKeys)(nil)
)

// KnownHosts implements ssh.KnownHostsSource.
func (s *storeHostKeys) KnownHosts(ctx context.Context) ([]byte, error) {
	b, err := s.be.GetBlob(ctx, store.BlobHostKeys, hostKeysKey(s.m))
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	return b.Data, err
}

// AcceptNew implements ssh.KnownHostsSource: a check-and-set loop on the
// machine's blob, so that of workers racing to record a first key, one
// wins and the others find its line. The record is audited
// ("machine.hostkeys.accept", with the key's fingerprint).
func (s *storeHostKeys) AcceptNew(ctx context.Context, line string) ([]byte, error) {
	addr, err := rssh.KnownHostsLineAddr(line)
	if err != nil {
		return nil, err
	}
	for {
		cur, err := s.be.GetBlob(ctx, store.BlobHostKeys, hostKeysKey(s.m))
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return nil, err
		}
		held, err := rssh.KnownHostsLines(cur.Data, addr)
		if err != nil {
			return nil, err
		}
		if len(held) > 0 {
			return cur.Data, nil // recorded meanwhile: verify against it
		}
		next := appendLines(cur.Data, []string{line})
		rec := s.c.hostKeysRecord(ctx, s.m, "machine.hostkeys.accept", map[string]string{
			"addr": addr, "fingerprint": lineFingerprint(line)})
		_, err = s.be.PutBlob(store.WithAudit(ctx, rec), store.Blob{Kind: store.BlobHostKeys, Key: hostKeysKey(s.m), Data: next, Revision: cur.Revision})
		if errors.Is(err, store.ErrRevision) {
			continue // another writer changed the lines: look again
		}
		if err != nil {
			return nil, err
		}
		s.c.log.InfoContext(ctx, "host key recorded on first use", "machine", s.m.Name, "addr", addr, "fingerprint", lineFingerprint(line))
		return next, nil
	}
}

// String implements ssh.KnownHostsSource.
func (s *storeHostKeys) String() string {
	return fmt.Sprintf("the store's host keys of machine %s", s.m.Name)
}

// AddHint implements ssh.AddHinter.
func (s *storeHostKeys) AddHint(addr string) string {
	host, port, _ := net.SplitHostPort(addr)
	return fmt.Sprintf("record it in the store: ssh-keyscan -p %s %s > FILE and rediacc machine hostkeys import %s FILE "+
		"(Client.ImportHostKeys), or add the machine with --accept-new-host-key", port, host, s.m.Name)
}

// RemoveHint implements ssh.RemoveHinter.
func (s *storeHostKeys) RemoveHint(string) string {
	return fmt.Sprintf("forget the old key (rediacc machine hostkeys forget %s, Client.ForgetHostKeys) and import the new one", s.m.Name)
}

// hostKeysRecord is the audit record of a change of m's host keys made by
// the actor of ctx (a worker's actor for accept-new).
func (c *Client) hostKeysRecord(ctx context.Context, m Machine, action string, detail map[string]string) audit.Record {
	actor, _, err := c.actor(ctx)
	if err != nil {
		actor = c.workerActor
	}
	if actor == "" {
		actor = "rediacc"
	}
	detail["machine"] = m.Name
	return audit.Record{Time: c.clock.Now().UTC(), Actor: actor, Action: action, EntityType: audit.EntityMachine,
		EntityID: m.ID, Team: m.TeamID, Result: audit.ResultOK, Details: detail}
}

// appendLines appends lines to known_hosts content.
func appendLines(content []byte, lines []string) []byte {
	out := append([]byte(nil), content...)
	if len(out) > 0 && out[len(out)-1] != '\n' {
		out = append(out, '\n')
	}
	for _, l := range lines {
		out = append(out, l...)
		out = append(out, '\n')
	}
	return out
}

// lineFingerprint is the SHA256 fingerprint of a known_hosts line's key
// ("" when it does not parse).
func lineFingerprint(line string) string {
	f := strings.Fields(line)
	if len(f) < 3 {
		return ""
	}
	return fingerprintOf(f[1] + " " + f[2])
}

// machineAddr is m's address as known_hosts matches it.
func machineAddr(m Machine) string { return net.JoinHostPort(m.Host, strconv.Itoa(m.Port)) }

// fileHostKeys returns the lines of the known_hosts file that give a key
// for m's address (none when the file does not exist).
func fileHostKeys(m Machine, file string) ([]string, error) {
	if file == "" {
		return nil, nil
	}
	b, err := os.ReadFile(file)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%w: known_hosts file %s: %v", ErrInvalidArgument, file, err)
	}
	lines, err := rssh.KnownHostsLines(b, machineAddr(m))
	if err != nil {
		return nil, fmt.Errorf("%w: known_hosts file %s: %v", ErrInvalidArgument, file, err)
	}
	return lines, nil
}

// machineHostLines returns the lines of m.KnownHostsFile that AddMachine
// copies into the store (nil for HostKeyInsecureIgnore).
func (c *Client) machineHostLines(m Machine) ([]string, error) {
	if m.HostKeyPolicy == HostKeyInsecureIgnore || c.blobs() == nil {
		return nil, nil
	}
	lines, err := fileHostKeys(m, m.KnownHostsFile)
	if lines == nil && err == nil {
		lines = []string{}
	}
	return lines, err
}

// setHostKeys replaces m's lines in the store by lines (none: removes
// them), whatever they were: a new machine of a name does not inherit the
// lines of an earlier one.
func (c *Client) setHostKeys(ctx context.Context, m Machine, lines []string) error {
	be := c.blobs()
	if be == nil {
		return nil
	}
	for {
		cur, err := be.GetBlob(ctx, store.BlobHostKeys, hostKeysKey(m))
		switch {
		case errors.Is(err, store.ErrNotFound) && len(lines) == 0:
			return nil
		case errors.Is(err, store.ErrNotFound):
		case err != nil:
			return mapStoreErr(err)
		case len(lines) == 0:
			err = be.DeleteBlob(ctx, store.BlobHostKeys, hostKeysKey(m), cur.Revision)
			if errors.Is(err, store.ErrRevision) {
				continue
			}
			return mapStoreErr(err)
		}
		_, err = be.PutBlob(ctx, store.Blob{Kind: store.BlobHostKeys, Key: hostKeysKey(m), Data: appendLines(nil, lines), Revision: cur.Revision})
		if errors.Is(err, store.ErrRevision) {
			continue
		}
		return mapStoreErr(err)
	}
}

// HostKeys returns the known_hosts lines the store holds for machine name
// (those every worker verifies it against, besides its KnownHostsFile
// where that exists on the worker's host), in their order; none for a
// machine whose policy is HostKeyInsecureIgnore or whose key is not
// recorded yet. Needs a role in the machine's team. Errors: ErrNoActor,
// ErrPermissionDenied, ErrNotFound.
func (c *Client) HostKeys(ctx context.Context, name string) ([]string, error) {
	m, err := c.Machine(ctx, name)
	if err != nil {
		return nil, err
	}
	be := c.blobs()
	if be == nil {
		return nil, nil
	}
	b, err := be.GetBlob(ctx, store.BlobHostKeys, hostKeysKey(m))
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, mapStoreErr(err)
	}
	var out []string
	for _, l := range strings.Split(string(b.Data), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return out, nil
}

// ImportHostKeys copies into the store the lines of the known_hosts file
// (OpenSSH format, hashed names included; ssh-keyscan's output) that give
// a key for machine name's address, after the lines it already holds (a
// line held already is not added twice), and returns how many it added.
// Needs admin of the machine's team (or owner); audited as
// "machine.hostkeys" with the fingerprints added. Errors: ErrNoActor,
// ErrPermissionDenied, ErrNotFound (the machine), ErrInvalidArgument (the
// file cannot be read or parsed, or has no line for the address: the
// message says how to get one).
func (c *Client) ImportHostKeys(ctx context.Context, name, file string) (int, error) {
	return c.changeHostKeys(ctx, name, func(m Machine, held []byte) ([]string, map[string]string, error) {
		if _, err := os.Stat(file); err != nil {
			return nil, nil, fmt.Errorf("%w: known_hosts file %s: %v", ErrInvalidArgument, file, err)
		}
		lines, err := fileHostKeys(m, file)
		if err != nil {
			return nil, nil, err
		}
		if len(lines) == 0 {
			return nil, nil, fmt.Errorf("%w: known_hosts file %s has no key for %s (machine %s): get one with ssh-keyscan -p %d %s, "+
				"verify its fingerprint out of band, then import that file", ErrInvalidArgument, file, machineAddr(m), m.Name, m.Port, m.Host)
		}
		have := map[string]bool{}
		for _, l := range strings.Split(string(held), "\n") {
			have[strings.TrimSpace(l)] = true
		}
		var add, fps []string
		for _, l := range lines {
			if !have[l] {
				have[l] = true
				add = append(add, l)
				fps = append(fps, lineFingerprint(l))
			}
		}
		return add, map[string]string{"file": file, "added": strconv.Itoa(len(add)), "fingerprints": strings.Join(fps, ",")}, nil
	})
}

// ForgetHostKeys removes every line the store holds for machine name: do
// it when the host's key changed legitimately (a reinstalled host), then
// import the new key or let HostKeyAcceptNew record it. Needs admin of the
// machine's team (or owner); audited as "machine.hostkeys". Errors:
// ErrNoActor, ErrPermissionDenied, ErrNotFound (the machine).
func (c *Client) ForgetHostKeys(ctx context.Context, name string) error {
	_, err := c.changeHostKeys(ctx, name, nil)
	return err
}

// changeHostKeys authorizes a change of machine name's host keys and
// applies it: with add nil, every line goes; otherwise the lines add
// returns are appended (check-and-set, retried when another writer
// changed the lines meanwhile).
func (c *Client) changeHostKeys(ctx context.Context, name string, add func(m Machine, held []byte) ([]string, map[string]string, error)) (int, error) {
	if _, _, err := c.actor(ctx); err != nil {
		return 0, err
	}
	m, err := c.machine(ctx, name)
	if err != nil {
		return 0, err
	}
	op := "forget"
	if add != nil {
		op = "import"
	}
	o, _, err := c.authorizeSeen(ctx, authz.MachineRead, machineNotFound(name), authz.MachineHostKeys, teamScope(m.TeamID, m.Team), audit.EntityMachine, m.ID, map[string]string{"op": op, "machine": name})
	if err != nil {
		return 0, err
	}
	be := c.blobs()
	if be == nil {
		return 0, o.fail(ctx, fmt.Errorf("%w: this store keeps no host keys (machines use their known_hosts files)", ErrInvalidArgument))
	}
	for {
		cur, err := be.GetBlob(ctx, store.BlobHostKeys, hostKeysKey(m))
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return 0, o.fail(ctx, mapStoreErr(err))
		}
		if add == nil {
			if cur.Revision == 0 {
				o.done(ctx)
				return 0, nil
			}
			err = be.DeleteBlob(o.ctx(ctx), store.BlobHostKeys, hostKeysKey(m), cur.Revision)
		} else {
			lines, detail, aerr := add(m, cur.Data)
			if aerr != nil {
				return 0, o.fail(ctx, aerr)
			}
			for k, v := range detail {
				o.detail[k] = v
			}
			if len(lines) == 0 {
				o.done(ctx)
				return 0, nil
			}
			_, err = be.PutBlob(o.ctx(ctx), store.Blob{Kind: store.BlobHostKeys, Key: hostKeysKey(m), Data: appendLines(cur.Data, lines), Revision: cur.Revision})
			if err == nil {
				c.pool.Forget(m.poolName())
				return len(lines), nil
			}
		}
		if errors.Is(err, store.ErrRevision) {
			continue
		}
		if err != nil {
			return 0, o.fail(ctx, mapStoreErr(err))
		}
		c.pool.Forget(m.poolName())
		return 0, nil
	}
}
