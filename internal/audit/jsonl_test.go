package audit

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestJSONLRoundTrip(t *testing.T) {
	rs := makeChain(Head{}, 25)
	rs[3].Details = nil
	rs[3] = rehash(rs[3]) // the chain breaks here, which JSONL must carry faithfully
	rs[4].Actor = `quote " and <tag> & ünïcode`
	var buf bytes.Buffer
	if err := WriteJSONL(&buf, rs); err != nil {
		t.Fatal(err)
	}
	if got := strings.Count(buf.String(), "\n"); got != len(rs) {
		t.Fatalf("%d lines for %d records", got, len(rs))
	}
	if !strings.Contains(buf.String(), "<tag> &") {
		t.Error("HTML characters were escaped")
	}
	back, err := ReadJSONL(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if len(back) != len(rs) {
		t.Fatalf("read %d records, wrote %d", len(back), len(rs))
	}
	for i := range rs {
		if !sameRecord(back[i], rs[i]) || back[i].Hash != rs[i].Hash {
			t.Fatalf("record %d changed:\n got %+v\nwant %+v", i, back[i], rs[i])
		}
		if back[i].Time.Location() != time.UTC {
			t.Fatalf("record %d time not UTC", i)
		}
	}
	// A clean chain verifies after the round trip.
	clean := makeChain(Head{}, 10)
	buf.Reset()
	if err := WriteJSONL(&buf, clean); err != nil {
		t.Fatal(err)
	}
	back, err = ReadJSONL(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyWithHead(back, HeadOf(clean[9])); err != nil {
		t.Fatal(err)
	}
}

func TestJSONFieldNames(t *testing.T) {
	r := fixed()
	r.Hash = ComputeHash(r)
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"time":"2025-01-02T03:04:05.678Z","actor":"alice","action":"task.create","entityType":"task",` +
		`"entityId":"6f1c2f0e-0000-4000-8000-000000000001","team":"prod","result":"ok",` +
		`"details":{"machine":"db1","priority":"2"},"seq":1,"prevHash":"` + GenesisHash + `","hash":"` + goldenHash + `"}`
	if string(b) != want {
		t.Fatalf("JSON form changed:\n got %s\nwant %s", b, want)
	}
	r.Details = map[string]string{}
	b, _ = json.Marshal(r)
	if strings.Contains(string(b), "details") {
		t.Errorf("empty details not omitted: %s", b)
	}
}

func TestJSONLErrors(t *testing.T) {
	good := `{"time":"2025-01-02T03:04:05.678Z","actor":"a","action":"x","entityType":"","entityId":"","team":"","result":"ok","seq":1,"prevHash":"","hash":""}`
	tests := []struct {
		name, in, wantErr string
		n                 int
	}{
		{"blank lines skipped", "\n" + good + "\n\n  \n" + good, "", 2},
		{"no trailing newline", good, "", 1},
		{"empty input", "", "", 0},
		{"unknown field", strings.Replace(good, `"seq"`, `"extra":1,"seq"`, 1), "line 1", 0},
		{"missing time", strings.Replace(good, `"time":"2025-01-02T03:04:05.678Z",`, "", 1), "no time", 0},
		{"bad time", strings.Replace(good, "2025-01-02T03", "yesterday", 1), "time", 0},
		{"two values on a line", good + " " + good, "line 1", 0},
		{"garbage on line 3", good + "\n" + good + "\n{nope", "line 3", 2},
		{"wrong type", strings.Replace(good, `"seq":1`, `"seq":"1"`, 1), "line 1", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rs, err := ReadJSONL(strings.NewReader(tt.in))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
			} else if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want it to mention %q", err, tt.wantErr)
			}
			if len(rs) != tt.n {
				t.Fatalf("%d records, want %d", len(rs), tt.n)
			}
		})
	}
}

func TestWriteJSONLRejectsInvalidUTF8(t *testing.T) {
	r := fixed()
	r.Details = map[string]string{"k": "\xff"}
	var buf bytes.Buffer
	if err := WriteJSONL(&buf, []Record{r}); err == nil {
		t.Fatal("invalid UTF-8 written (JSON would have replaced it and broken the hash)")
	}
}
