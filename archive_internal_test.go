package rediacc

import (
	"errors"
	"testing"
	"time"

	"github.com/rediacc/rediacc/internal/audit"
)

func chainOf(n int) []audit.Record {
	var out []audit.Record
	var h audit.Head
	for i := range n {
		r := audit.Chain(h, audit.Record{Time: time.Unix(int64(1e9+i), 0), Actor: "a", Action: "x", Result: audit.ResultOK})
		out = append(out, r)
		h = audit.HeadOf(r)
	}
	return out
}

// verifyWithReplay feeds records through the replay filter into a
// verifier, as verifyOnce does with the archive.
func verifyWithReplay(recs []audit.Record) error {
	v := audit.NewVerifier(audit.Head{})
	rp := &replay{}
	var err error
	feed := func(rs []audit.Record) {
		for _, r := range rs {
			if err == nil {
				err = v.Add(r)
			}
		}
	}
	for _, r := range recs {
		feed(rp.add(r))
	}
	feed(rp.flush())
	if err == nil {
		err = v.Finish()
	}
	return err
}

// An exact replay of archived audit records (a Prune that crashed after
// archiving, before trimming, archives them again) verifies; a replay that
// differs, stops short, or a plain duplicate of a changed record does not.
func TestAuditReplayFilter(t *testing.T) {
	c := chainOf(10)
	cat := func(parts ...[]audit.Record) []audit.Record {
		var out []audit.Record
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	changed := c[5]
	changed.Actor = "mallory"
	rehashed := changed
	rehashed.Hash = audit.ComputeHash(rehashed)
	for _, tc := range []struct {
		name string
		recs []audit.Record
		ok   bool
	}{
		{"plain", c, true},
		{"replay of the tail", cat(c[:8], c[4:8], c[8:]), true},
		{"replay of one record", cat(c[:8], c[7:8], c[8:]), true},
		{"two replays", cat(c[:5], c[2:5], c[:5], c[5:]), true},
		{"replay that stops short", cat(c[:8], c[4:6], c[8:]), false},
		{"replay with a changed record", cat(c[:8], c[4:5], []audit.Record{rehashed}, c[6:8], c[8:]), false},
		{"replay with a record changed, not re-hashed", cat(c[:8], c[4:5], []audit.Record{changed}, c[6:8], c[8:]), false},
		{"gap", cat(c[:4], c[5:]), false},
	} {
		err := verifyWithReplay(tc.recs)
		if (err == nil) != tc.ok {
			t.Errorf("%s: %v, want ok=%v", tc.name, err, tc.ok)
		}
		if err != nil && !errors.Is(err, audit.ErrTampered) {
			t.Errorf("%s: %v is not a tamper error", tc.name, err)
		}
	}
}
