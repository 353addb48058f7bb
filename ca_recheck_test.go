package rediacc_test

import (
	"errors"
	"testing"

	"github.com/rediacc/rediacc"
)

// Finishing an SSH CA rotation re-checks the caller's role after the
// (long) probes, before the CA state is written: an admin removed from
// the team meanwhile is refused and the rotation stays as it was.
func TestFinishSSHCARotationRechecksRole(t *testing.T) {
	c := newClient(t, func(cfg *rediacc.Config) { cfg.DataDir = t.TempDir(); cfg.Health.Interval = -1 })
	owner := asOwner()
	if _, err := c.CreateTeam(owner, "ca-team", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SetMember(owner, "ca-team", "ada", rediacc.RoleAdmin); err != nil {
		t.Fatal(err)
	}
	if _, err := c.InitSSHCA(owner, "ca-team", rediacc.SSHCAOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.RotateSSHCA(owner, "ca-team", rediacc.SSHCAOptions{}); err != nil {
		t.Fatal(err)
	}
	restore := rediacc.SetCAFinishHook(func(team string) {
		if err := c.RemoveMember(owner, team, "ada"); err != nil {
			t.Error(err)
		}
	})
	_, err := c.FinishSSHCARotation(as("ada"), "ca-team")
	restore()
	if !errors.Is(err, rediacc.ErrPermissionDenied) {
		t.Fatalf("finish by an admin removed meanwhile: %v, want ErrPermissionDenied", err)
	}
	ca, err := c.SSHCA(owner, "ca-team")
	if err != nil {
		t.Fatal(err)
	}
	next := 0
	for _, x := range ca.CAs {
		if x.State == rediacc.SSHCANext {
			next++
		}
	}
	if next != 1 {
		t.Fatalf("the refused finish changed the rotation: %+v", ca.CAs)
	}
	if _, err := c.FinishSSHCARotation(owner, "ca-team"); err != nil {
		t.Fatalf("the owner finishes: %v", err)
	}
}
