package rediacc

import (
	"encoding/json"
	"errors"
	"testing"
	"time"
)

func TestParsePriority(t *testing.T) {
	tests := []struct {
		in   string
		want Priority
		ok   bool
	}{
		{"1", Critical, true}, {"2", High, true}, {"3", Normal, true}, {"4", Low, true}, {"5", Minimal, true},
		{" 3 ", Normal, true}, {"critical", Critical, true}, {"CRITICAL", Critical, true}, {"Minimal", Minimal, true},
		{"high", High, true}, {"normal", Normal, true}, {"low", Low, true},
		{"0", 0, false}, {"6", 0, false}, {"-1", 0, false}, {"urgent", 0, false}, {"", 0, false},
		{"1.5", 0, false}, {"３", 0, false}, {"99999999999999999999", 0, false},
	}
	for _, tt := range tests {
		got, err := ParsePriority(tt.in)
		if tt.ok != (err == nil) || got != tt.want {
			t.Errorf("ParsePriority(%q) = %v, %v; want %v ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
		if err != nil && (!errors.Is(err, ErrInvalidPriority) || !errors.Is(err, ErrInvalidArgument)) {
			t.Errorf("ParsePriority(%q) error %v is not ErrInvalidPriority/ErrInvalidArgument", tt.in, err)
		}
	}
}

func FuzzParsePriority(f *testing.F) {
	for _, s := range []string{"1", "5", "critical", "0", "urgent", " 2", "6"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePriority(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidPriority) {
				t.Fatalf("error %v is not ErrInvalidPriority", err)
			}
			return
		}
		if p < Critical || p > Minimal {
			t.Fatalf("ParsePriority(%q) = %d outside 1..5", s, p)
		}
		// Round trip through both spellings.
		if q, err := ParsePriority(p.String()); err != nil || q != p {
			t.Fatalf("name round trip of %d: %v %v", p, q, err)
		}
	})
}

func TestPriorityJSON(t *testing.T) {
	var p Priority
	for in, want := range map[string]Priority{`1`: Critical, `"high"`: High, `"5"`: Minimal} {
		if err := json.Unmarshal([]byte(in), &p); err != nil || p != want {
			t.Errorf("unmarshal %s = %v, %v", in, p, err)
		}
	}
	for _, in := range []string{`0`, `6`, `"urgent"`, `null`, `{}`} {
		if err := json.Unmarshal([]byte(in), &p); err == nil {
			t.Errorf("unmarshal %s: want error", in)
		}
	}
	if b, _ := json.Marshal(Low); string(b) != "4" {
		t.Errorf("marshal Low = %s", b)
	}
}

func TestEffectivePriority(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	aging := 5 * time.Minute
	tests := []struct {
		p    Priority
		wait time.Duration
		want Priority
	}{
		{Minimal, 0, Minimal},
		{Minimal, aging - time.Nanosecond, Minimal},
		{Minimal, aging, Low},
		{Minimal, 2 * aging, Normal},
		{Minimal, 4 * aging, Critical},
		{Minimal, 40 * aging, Critical},
		{High, aging, Critical},
		{Critical, time.Hour, Critical},
		{Normal, -time.Hour, Normal}, // clock skew never lowers a task
	}
	for _, tt := range tests {
		if got := EffectivePriority(tt.p, t0, t0.Add(tt.wait), aging); got != tt.want {
			t.Errorf("EffectivePriority(%d, wait %s) = %d, want %d", tt.p, tt.wait, got, tt.want)
		}
	}
	if got := EffectivePriority(Minimal, t0, t0.Add(time.Hour), 0); got != Minimal {
		t.Errorf("aging disabled: got %d", got)
	}
}
