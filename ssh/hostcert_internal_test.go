package ssh

import (
	"testing"

	"golang.org/x/crypto/ssh/knownhosts"
)

func TestMatchHostPatterns(t *testing.T) {
	for _, tc := range []struct {
		name     string
		patterns []string
		want     bool
	}{
		{"web1.example.com", []string{"*.example.com"}, true},
		{"WEB1.Example.com", []string{"*.example.com"}, true},
		{"example.com", []string{"*.example.com"}, false},
		{"[10.0.0.5]:2222", []string{"*"}, true},
		{"[10.0.0.5]:2222", []string{"10.0.0.5"}, false},
		{"[10.0.0.5]:2222", []string{"[10.0.0.5]:2222"}, true},
		{"[10.0.0.5]:2222", []string{"[10.0.0.?]:22*"}, true},
		{"10.0.0.5", []string{"*", "!10.0.0.5"}, false},
		{"10.0.0.6", []string{"*", "!10.0.0.5"}, true},
		{"db", []string{"web", "d?"}, true},
		{"db", []string{}, false},
		{"a.b.c", []string{"*.*"}, true},
		{"abc", []string{"a**c"}, true},
		{"abc", []string{"a*d"}, false},
		{"[h]:2222", []string{knownhosts.HashHostname("[h]:2222")}, true},
		{"[h]:2223", []string{knownhosts.HashHostname("[h]:2222")}, false},
		{"h", []string{"*", "!" + knownhosts.HashHostname("h")}, false},
		{"h", []string{"|1|bad|entry"}, false},
	} {
		if got := matchHostPatterns(tc.name, tc.patterns); got != tc.want {
			t.Errorf("matchHostPatterns(%q, %q) = %v, want %v", tc.name, tc.patterns, got, tc.want)
		}
	}
}

func TestLookupName(t *testing.T) {
	for addr, want := range map[string]string{
		"h:22":          "h",
		"h:2222":        "[h]:2222",
		"[::1]:22":      "::1",
		"[::1]:2222":    "[::1]:2222",
		"not-an-addr":   "not-an-addr",
		"10.0.0.5:2200": "[10.0.0.5]:2200",
	} {
		if got := lookupName(addr); got != want {
			t.Errorf("lookupName(%q) = %q, want %q", addr, got, want)
		}
	}
}
