package audit

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
)

// jsonRecord is the JSON form of a Record; the field names and their order
// are a stable format (JSON Lines export, the CLI's -o json).
type jsonRecord struct {
	Time       string            `json:"time"`
	Actor      string            `json:"actor"`
	Action     string            `json:"action"`
	EntityType string            `json:"entityType"`
	EntityID   string            `json:"entityId"`
	Team       string            `json:"team"`
	Result     string            `json:"result"`
	Details    map[string]string `json:"details,omitempty"`
	Seq        int64             `json:"seq"`
	PrevHash   string            `json:"prevHash"`
	KeyID      string            `json:"keyId,omitempty"`
	Hash       string            `json:"hash"`
}

// MarshalJSON encodes r as one JSON object with the fields time (TimeFormat),
// actor, action, entityType, entityId, team, result, details (omitted when
// empty), seq, prevHash, keyId (omitted for version 1 records) and hash, in
// that order. It fails on strings that are not valid UTF-8, which JSON would
// silently replace (and so break the hash).
func (r Record) MarshalJSON() ([]byte, error) {
	if err := checkUTF8(r); err != nil {
		return nil, fmt.Errorf("audit: record %d: %v", r.Seq, err)
	}
	var d map[string]string
	if len(r.Details) > 0 {
		d = r.Details
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // json.Marshal escapes again; WriteJSONL does not
	err := enc.Encode(jsonRecord{
		Time: NormalizeTime(r.Time).Format(TimeFormat), Actor: r.Actor, Action: r.Action,
		EntityType: r.EntityType, EntityID: r.EntityID, Team: r.Team, Result: r.Result,
		Details: d, Seq: r.Seq, PrevHash: r.PrevHash, KeyID: r.KeyID, Hash: r.Hash,
	})
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), err
}

// UnmarshalJSON decodes the form written by [Record.MarshalJSON]. Unknown
// fields are an error (they would not be covered by the hash), and so is a
// missing or malformed time.
func (r *Record) UnmarshalJSON(b []byte) error {
	var j jsonRecord
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&j); err != nil {
		return err
	}
	if j.Time == "" {
		return errors.New("audit: record has no time")
	}
	t, err := time.Parse(time.RFC3339Nano, j.Time)
	if err != nil {
		return fmt.Errorf("audit: record time: %w", err)
	}
	*r = Record{
		Seq: j.Seq, Time: NormalizeTime(t), Actor: j.Actor, Action: j.Action,
		EntityType: j.EntityType, EntityID: j.EntityID, Team: j.Team, Result: j.Result,
		Details: j.Details, PrevHash: j.PrevHash, KeyID: j.KeyID, Hash: j.Hash,
	}
	return nil
}

// WriteJSONL writes records as JSON Lines: one [Record.MarshalJSON] object
// per line, in the order given. HTML characters are not escaped.
func WriteJSONL(w io.Writer, records []Record) error {
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	enc.SetEscapeHTML(false)
	for _, r := range records {
		if err := enc.Encode(r); err != nil {
			return err
		}
	}
	return bw.Flush()
}

// ReadJSONL reads records written by [WriteJSONL]. Blank lines are skipped;
// any other line must hold exactly one record. Errors name the line. The
// records are not verified: pass them to [Verify].
func ReadJSONL(r io.Reader) ([]Record, error) {
	br := bufio.NewReader(r)
	var out []Record
	for line := 1; ; line++ {
		b, err := br.ReadBytes('\n')
		if len(bytes.TrimSpace(b)) > 0 {
			var rec Record
			dec := json.NewDecoder(bytes.NewReader(b))
			if derr := dec.Decode(&rec); derr != nil {
				return out, fmt.Errorf("audit: JSON Lines line %d: %w", line, derr)
			}
			if dec.More() {
				return out, fmt.Errorf("audit: JSON Lines line %d: more than one value", line)
			}
			out = append(out, rec)
		}
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, fmt.Errorf("audit: JSON Lines line %d: %w", line, err)
		}
	}
}
