package sqlite_test

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rediacc/rediacc/internal/audit"
	"github.com/rediacc/rediacc/internal/store"
	"github.com/rediacc/rediacc/internal/store/storetest"
)

// TestKeyNotInStore: the store file (with its WAL) holds the key ids of the
// records it keeps, never a key.
func TestKeyNotInStore(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "store.db")
	e := open(t, path)
	ring := storetest.Keyring(t, 1)
	e.SetAuditKeyring(ring)
	for i := range 20 {
		if _, err := e.CreateTeam(store.WithAudit(ctx, audit.Record{Time: at(time.Duration(i)), Actor: "a", Action: "team.create",
			Result: audit.ResultOK}), store.Team{Name: string(rune('a'+i)) + "-team"}); err != nil {
			t.Fatal(err)
		}
	}
	storetest.VerifyAudit(t, e)
	var line struct{ Key string }
	if err := json.Unmarshal(bytes.TrimSpace(ring.Marshal()), &line); err != nil {
		t.Fatal(err)
	}
	secret, err := base64.StdEncoding.DecodeString(line.Key)
	if err != nil || len(secret) != audit.KeySize {
		t.Fatalf("secret: %d bytes, %v", len(secret), err)
	}
	check := func() {
		ents, _ := os.ReadDir(dir)
		found := false
		for _, ent := range ents {
			b, err := os.ReadFile(filepath.Join(dir, ent.Name()))
			if err != nil {
				t.Fatal(err)
			}
			found = found || bytes.Contains(b, []byte(ring.Current().ID))
			for _, form := range [][]byte{secret, []byte(line.Key), []byte(hex.EncodeToString(secret))} {
				if bytes.Contains(b, form) {
					t.Fatalf("%s holds the audit key", ent.Name())
				}
			}
		}
		if !found {
			t.Fatal("the key id is not in the store: the test looked in the wrong place")
		}
	}
	check() // with the WAL
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	check()
}
