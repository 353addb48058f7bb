package audit

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestFilterNormalize(t *testing.T) {
	est := time.FixedZone("EST", -5*3600)
	tests := []struct {
		name    string
		in      Filter
		want    Filter
		wantErr string
	}{
		{name: "defaults", in: Filter{}, want: Filter{Limit: DefaultLimit}},
		{name: "limit 1", in: Filter{Limit: 1}, want: Filter{Limit: 1}},
		{name: "limit max", in: Filter{Limit: MaxLimit}, want: Filter{Limit: MaxLimit}},
		{name: "limit over max", in: Filter{Limit: MaxLimit + 1}, wantErr: "limit 10001 is out of range 1..10000"},
		{name: "negative limit", in: Filter{Limit: -1}, wantErr: "limit -1 is out of range 1..10000"},
		{name: "negative after", in: Filter{AfterSeq: -1}, wantErr: "after-seq"},
		{name: "end before start", in: Filter{Start: t0, End: t0.Add(-time.Second)}, wantErr: "before start"},
		{name: "empty range allowed", in: Filter{Start: t0, End: t0}, want: Filter{Start: t0, End: t0, Limit: DefaultLimit}},
		{name: "bad result", in: Filter{Result: "success"}, wantErr: `result "success"`},
		{name: "times to UTC", in: Filter{Start: t0.In(est), End: t0.Add(time.Hour).In(est)},
			want: Filter{Start: t0, End: t0.Add(time.Hour), Limit: DefaultLimit}},
		{name: "action glob", in: Filter{Action: "task.*"}, want: Filter{Action: "task.", Limit: DefaultLimit}},
		{name: "action star", in: Filter{Action: "*"}, want: Filter{Action: "", Limit: DefaultLimit}},
		{name: "action exact kept", in: Filter{Action: "task.create", Result: ResultDenied},
			want: Filter{Action: "task.create", Result: ResultDenied, Limit: DefaultLimit}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.in.Normalize()
			if tt.wantErr != "" {
				if !errors.Is(err, ErrInvalidFilter) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want ErrInvalidFilter mentioning %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !got.Start.Equal(tt.want.Start) || !got.End.Equal(tt.want.End) {
				t.Fatalf("times %v..%v, want %v..%v", got.Start, got.End, tt.want.Start, tt.want.End)
			}
			if !got.Start.IsZero() && got.Start.Location() != time.UTC {
				t.Fatal("start not UTC")
			}
			got.Start, got.End, tt.want.Start, tt.want.End = time.Time{}, time.Time{}, time.Time{}, time.Time{}
			if got != tt.want {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestFilterMatch(t *testing.T) {
	r := Record{Seq: 7, Time: t0, Actor: "alice", Action: "task.attempt.failed", EntityType: EntityTask,
		EntityID: "t1", Team: "prod", Result: ResultError}
	tests := []struct {
		name string
		f    Filter
		want bool
	}{
		{"empty", Filter{}, true},
		{"start inclusive", Filter{Start: t0}, true},
		{"start after", Filter{Start: t0.Add(time.Millisecond)}, false},
		{"end exclusive", Filter{End: t0}, false},
		{"end after", Filter{End: t0.Add(time.Millisecond)}, true},
		{"range in another zone", Filter{Start: t0.In(time.FixedZone("X", 3600)), End: t0.Add(time.Second)}, true},
		{"actor", Filter{Actor: "alice"}, true},
		{"other actor", Filter{Actor: "bob"}, false},
		{"actor is exact", Filter{Actor: "ali"}, false},
		{"action exact", Filter{Action: "task.attempt.failed"}, true},
		{"action exact mismatch", Filter{Action: "task.attempt"}, false},
		{"action prefix", Filter{Action: "task."}, true},
		{"action nested prefix", Filter{Action: "task.attempt."}, true},
		{"action glob", Filter{Action: "task.*"}, true},
		{"action star", Filter{Action: "*"}, true},
		{"other action prefix", Filter{Action: "team."}, false},
		{"prefix needs the dot", Filter{Action: "tas."}, false},
		{"entity type", Filter{EntityType: EntityTask}, true},
		{"other entity type", Filter{EntityType: EntityMachine}, false},
		{"entity id", Filter{EntityID: "t2"}, false},
		{"team", Filter{Team: "prod"}, true},
		{"other team", Filter{Team: "staging"}, false},
		{"result", Filter{Result: ResultError}, true},
		{"other result", Filter{Result: ResultDenied}, false},
		{"after seq", Filter{AfterSeq: 6}, true},
		{"after seq excludes", Filter{AfterSeq: 7}, false},
		{"all together", Filter{Start: t0.Add(-time.Hour), End: t0.Add(time.Hour), Actor: "alice", Action: "task.",
			EntityType: EntityTask, Team: "prod", Result: ResultError, Limit: 5}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.f.Match(r); got != tt.want {
				t.Fatalf("Match = %v, want %v", got, tt.want)
			}
			if n, err := tt.f.Normalize(); err == nil && n.Match(r) != tt.want {
				t.Fatal("normalized filter matches differently")
			}
		})
	}
}

func TestFilterActionPrefix(t *testing.T) {
	for in, want := range map[string]struct {
		a string
		p bool
	}{"": {"", false}, "*": {"", false}, "task.": {"task.", true}, "task.*": {"task.", true}, "task.create": {"task.create", false}} {
		a, p := Filter{Action: in}.ActionPrefix()
		if a != want.a || p != want.p {
			t.Errorf("ActionPrefix(%q) = %q, %v; want %q, %v", in, a, p, want.a, want.p)
		}
	}
}
