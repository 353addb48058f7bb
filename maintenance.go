package rediacc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rediacc/rediacc/internal/authz"
	"github.com/rediacc/rediacc/internal/store"
	rssh "github.com/rediacc/rediacc/ssh"
)

// Maintenance jobs: tasks the worker runs itself instead of a shell
// command (Task.Kind). They go through the queue like any task, so they
// are visible (list queue), retried, cancellable and audited.
const (
	// TaskKindKeyRotation rotates one SSH key on every machine that uses
	// it (RotateKey; an unfinished rotation is resumed). Priority 4 (Low,
	// "maintenance"), up to 3 retries a minute apart and more, alert on
	// final failure.
	TaskKindKeyRotation = "key.rotate"
)

// maintenanceSpec is a maintenance job in a task's stored spec.
type maintenanceSpec struct {
	Op          string `json:"op"`
	KeyID       string `json:"keyId"`
	Fingerprint string `json:"fingerprint"` // the key when the task was queued
	Type        string `json:"type,omitempty"`
	Bits        int    `json:"bits,omitempty"`
}

// maintenanceOf returns the maintenance job of a stored task, nil for a
// shell command.
func maintenanceOf(r store.Task) *maintenanceSpec {
	var sj struct {
		Maintenance *maintenanceSpec `json:"maintenance"`
	}
	if json.Unmarshal(r.Spec, &sj) != nil {
		return nil
	}
	return sj.Maintenance
}

// errRetryLater marks a maintenance failure that is worth another attempt
// (a machine unreachable, the key locked by another rotation).
var errRetryLater = errors.New("retry later")

// SubmitKeyRotation queues a key rotation task (Kind TaskKindKeyRotation,
// priority 4 "maintenance") for each key opts names (Machine, Key, or
// Team with All; Type and Bits choose the new key; Resume, Rollback and
// DryRun are not for queued rotations), and returns the tasks. A worker
// whose actor holds key.rotate in the key's team runs it: it resumes an
// unfinished rotation of the key or rotates it, and does nothing when the
// key was rotated since the task was queued. While a rotation task of a
// key is unfinished, queueing the key again returns that task. The task's
// machine is the first machine of the key (it holds one of that machine's
// slots while it runs). Needs key.rotate (team admin).
//
// Errors: those of RotateKey's checks (ErrNoActor, ErrPermissionDenied,
// ErrNotFound, ErrInvalidArgument).
func (c *Client) SubmitKeyRotation(ctx context.Context, opts KeyRotationOptions) ([]*Task, error) {
	if opts.Resume || opts.Rollback || opts.DryRun || opts.Progress != nil {
		return nil, fmt.Errorf("%w: a queued rotation takes no resume, rollback, dry run or progress: its worker resumes what is unfinished", ErrInvalidArgument)
	}
	keys, typ, o, err := c.selectKeys(ctx, opts)
	if err != nil {
		return nil, err
	}
	now := c.clock.Now().UTC()
	var (
		recs     []store.Task
		existing []*Task
		guards   []store.Condition // each task's machine is still its team's, checked in the write
	)
	for _, k := range keys {
		if !k.src.rotatable() {
			continue
		}
		fp := k.fingerprint()
		spec := specJSON{
			Command:       fmt.Sprintf("# rediacc maintenance: rotate SSH key %s of team %s on %s", fp, k.teamName, strings.Join(k.names(), ", ")),
			Retry:         RetryPolicy{RetryCount: 3, RetryDelay: time.Minute, Backoff: BackoffExponential, MaxDelay: 15 * time.Minute},
			FailureAction: FailureAlert,
			TimeoutNS:     30 * time.Minute,
			Maintenance:   &maintenanceSpec{Op: TaskKindKeyRotation, KeyID: k.id, Fingerprint: fp, Type: string(typ), Bits: opts.Bits},
		}
		spec.RetryDelayNS, spec.MaxDelayNS = spec.Retry.RetryDelay, spec.Retry.MaxDelay
		if queued, err := c.queuedRotation(ctx, k); err != nil {
			return nil, o.fail(ctx, err)
		} else if queued != nil {
			existing = append(existing, queued)
			continue
		}
		raw, err := json.Marshal(spec)
		if err != nil {
			return nil, o.fail(ctx, err)
		}
		recs = append(recs, store.Task{ID: newTaskID(), TeamID: k.team,
			MachineID: k.machines[0].m.ID, Priority: int(Low), Spec: raw, CreatedAt: now})
		guards = append(guards, store.MachineInTeam(k.machines[0].m.ID, k.team))
	}
	if len(recs) == 0 && len(existing) == 0 {
		return nil, o.fail(ctx, fmt.Errorf("%w: no key rediacc can rotate (the ssh-agent's keys are not its own)", ErrInvalidArgument))
	}
	o.detail["queued"] = fmt.Sprint(len(recs))
	out, err := c.engine.CreateTasks(o.ctx(ctx, guards...), recs)
	if err != nil {
		return nil, o.fail(ctx, mapStoreErr(err))
	}
	tasks := existing
	for _, r := range out {
		t, err := taskFromRecord(r)
		if err != nil {
			return nil, err
		}
		tasks = append(tasks, t)
	}
	c.notify()
	select {
	case c.wake <- struct{}{}:
	default:
	}
	return tasks, nil
}

// queuedRotation returns the unfinished rotation task of key k, if any.
func (c *Client) queuedRotation(ctx context.Context, k *invKey) (*Task, error) {
	rs, err := c.engine.ListTasks(ctx, store.TaskFilter{TeamID: k.team,
		Statuses: []store.Status{store.Pending, store.Assigned, store.Processing}})
	if err != nil {
		return nil, mapStoreErr(err)
	}
	for _, r := range rs {
		if ms := maintenanceOf(r); ms != nil && ms.Op == TaskKindKeyRotation && ms.KeyID == k.id {
			return taskFromRecord(r)
		}
	}
	return nil, nil
}

// runMaintenance runs a maintenance task as the worker's actor.
func (c *Client) runMaintenance(ctx context.Context, t *Task, spec *maintenanceSpec) (*rssh.Result, error) {
	res := &rssh.Result{ExitCode: -1, Started: time.Now()}
	if spec.Op != TaskKindKeyRotation {
		return res, fmt.Errorf("%w: unknown maintenance job %q (written by a newer rediacc?)", ErrInvalidTask, spec.Op)
	}
	actor := c.workerActor
	g, err := c.grants(ctx, actor)
	if err != nil {
		return res, fmt.Errorf("%w: %v", errRetryLater, err)
	}
	if !authz.Allowed(g, authz.KeyRotate, t.TeamID) {
		return res, fmt.Errorf("%w: the worker runs as %s, who may not rotate keys of team %q (key.rotate: team admin); run a worker as an admin of the team",
			ErrPermissionDenied, actor, t.Team)
	}
	actx := WithActor(ctx, actor)
	keys, err := c.Keys(actx, KeyFilter{TeamID: t.TeamID})
	if err != nil {
		return res, fmt.Errorf("%w: %v", errRetryLater, err)
	}
	var key *SSHKey
	for i := range keys {
		if keys[i].ID == spec.KeyID {
			key = &keys[i]
		}
	}
	switch {
	case key == nil:
		return c.maintenanceDone(res, fmt.Sprintf("key %s is no longer used by any machine of team %s: nothing to rotate", spec.Fingerprint, t.Team)), nil
	case key.Rotation == nil && key.Fingerprint != spec.Fingerprint:
		return c.maintenanceDone(res, fmt.Sprintf("key %s was rotated since this task was queued (it is now %s): nothing to do", spec.Fingerprint, key.Fingerprint)), nil
	}
	opts := KeyRotationOptions{Key: spec.KeyID, Resume: key.Rotation != nil}
	if !opts.Resume {
		opts.Type, opts.Bits = spec.Type, spec.Bits
	}
	results, err := c.RotateKey(actx, opts)
	var b strings.Builder
	for _, r := range results {
		fmt.Fprintf(&b, "key %s of team %s: %s", r.From, r.Team, r.Action)
		if r.To != "" {
			fmt.Fprintf(&b, " → %s", r.To)
		}
		b.WriteString("\n")
		for _, m := range r.Machines {
			fmt.Fprintf(&b, "  %s: %s", m.Machine, m.State)
			if m.Error != "" {
				fmt.Fprintf(&b, " at %s: %s", m.Step, m.Error)
			}
			b.WriteString("\n")
		}
	}
	res.Stdout, res.Ended = []byte(b.String()), time.Now()
	if err != nil {
		res.Stderr = []byte(err.Error() + "\n")
		if ctx.Err() != nil {
			return res, err
		}
		if rotationRetryable(err) {
			return res, fmt.Errorf("%w: %w", errRetryLater, err)
		}
		return res, err
	}
	res.ExitCode = 0
	return res, nil
}

func (c *Client) maintenanceDone(res *rssh.Result, msg string) *rssh.Result {
	res.ExitCode, res.Stdout, res.Ended = 0, []byte(msg+"\n"), time.Now()
	return res
}

// rotationRetryable reports whether a failed rotation may succeed later
// without anyone changing anything: a machine unreachable, a full disk,
// the key locked by another rotation.
func rotationRetryable(err error) bool {
	if errors.Is(err, ErrKeyRotationBusy) {
		return true
	}
	var ke *KeyRotationError
	if !errors.As(err, &ke) {
		return rssh.IsRetryable(err)
	}
	for _, cause := range ke.causes {
		if rssh.IsRetryable(cause) || errors.Is(cause, ErrRemoteWrite) {
			return true
		}
	}
	return false
}

// startKeyPolicy checks key ages every KeyRotation.CheckInterval (first at
// once) while the worker runs, when a MaxAge is set: it raises one
// AlertKeyOverdue alert per check listing the overdue keys, and with
// KeyRotation.Auto queues their rotation.
func (c *Client) startKeyPolicy(ctx context.Context, actor string, log *slog.Logger) (stop func()) {
	p := c.cfg.KeyRotation
	if p.MaxAge <= 0 {
		return func() {}
	}
	interval := p.CheckInterval
	if interval <= 0 {
		interval = DefaultKeyCheckInterval
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			c.checkKeyAges(ctx, actor, log)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return func() { cancel(); <-done }
}

// checkKeyAges is one check of startKeyPolicy, over the teams where actor
// runs tasks. Machines whose public key is not recorded yet (added before
// the inventory) get it recorded.
func (c *Client) checkKeyAges(ctx context.Context, actor string, log *slog.Logger) {
	g, err := c.grants(ctx, actor)
	if err != nil {
		if ctx.Err() == nil {
			log.WarnContext(ctx, "key ages: reading roles failed", "error", err)
		}
		return
	}
	teams, all := visibleTeams(g, authz.TaskRun)
	if !all && len(teams) == 0 {
		return
	}
	if all {
		teams = nil
	}
	inv, err := c.inventory(ctx, teams, true)
	if err != nil {
		if ctx.Err() == nil {
			log.WarnContext(ctx, "key ages: reading the inventory failed", "error", err)
		}
		return
	}
	now := c.clock.Now().UTC()
	var overdue []SSHKey
	for _, k := range inv {
		c.recordPublicKeys(ctx, k, log)
		if v := c.view(k, now); v.Overdue {
			overdue = append(overdue, v)
		}
	}
	if len(overdue) == 0 {
		return
	}
	a := Alert{Kind: AlertKeyOverdue, Severity: SeverityWarning, Time: now, Team: overdue[0].Team, TeamID: overdue[0].TeamID}
	var parts []string
	for _, k := range overdue {
		if k.TeamID != a.TeamID {
			a.Team, a.TeamID = "", ""
		}
		parts = append(parts, fmt.Sprintf("%s (team %s, %s old, machines %s)", k.Fingerprint, k.Team, roundAge(k.Age), strings.Join(k.Machines, ", ")))
	}
	a.Message = fmt.Sprintf("%d SSH key(s) older than the rotation policy's %s: %s", len(overdue), roundAge(c.cfg.KeyRotation.MaxAge), strings.Join(parts, "; "))
	if c.cfg.KeyRotation.Auto {
		a.Message += "; rotation tasks queued where the worker may rotate keys"
	}
	actx, cancel := context.WithTimeout(ctx, 30*time.Second)
	if err := c.raiseAlert(actx, a); err != nil {
		log.ErrorContext(ctx, "alert delivery failed", "kind", a.Kind, "error", err)
	}
	cancel()
	if !c.cfg.KeyRotation.Auto {
		return
	}
	for _, k := range overdue {
		if !authz.Allowed(g, authz.KeyRotate, k.TeamID) || !k.Source.rotatable() {
			log.WarnContext(ctx, "overdue key not rotated: the worker's actor may not rotate keys of its team", "team", k.Team, "fingerprint", k.Fingerprint, "actor", actor)
			continue
		}
		p := c.cfg.KeyRotation
		ts, err := c.SubmitKeyRotation(WithActor(ctx, actor), KeyRotationOptions{Key: k.ID, Type: p.KeyType, Bits: p.RSABits})
		if err != nil {
			log.WarnContext(ctx, "queueing an overdue key's rotation failed", "team", k.Team, "fingerprint", k.Fingerprint, "error", err)
			continue
		}
		for _, t := range ts {
			log.InfoContext(ctx, "overdue key: rotation queued", "team", k.Team, "fingerprint", k.Fingerprint, "task_id", t.ID)
		}
	}
}

// recordPublicKeys stores the public key and key id of k's machines that
// lack them (machines added before the key inventory), so that the
// collector and MachineStatus know their keys without reading the vault.
func (c *Client) recordPublicKeys(ctx context.Context, k *invKey, log *slog.Logger) {
	if k.pub == nil {
		return
	}
	for _, im := range k.machines {
		if im.pub == nil || (im.m.publicKey != "" && im.m.KeyID != "") {
			continue
		}
		pub, id := im.pub, k.id
		if err := c.pointMachine(ctx, im.m, func(m *Machine) {
			m.setPublicKey(pub)
			if m.KeyID == "" {
				m.KeyID = id
			}
		}); err != nil {
			log.WarnContext(ctx, "recording a machine's public key failed", "machine", im.m.Name, "error", err)
		}
	}
}

func roundAge(d time.Duration) string {
	if d >= 48*time.Hour {
		return fmt.Sprintf("%dd", int(d/(24*time.Hour)))
	}
	return d.Round(time.Minute).String()
}

// Key gauges of the collector (metrics.go).
var (
	descKeyAge = prometheus.NewDesc("rediacc_ssh_key_age_seconds",
		"Age of each SSH key machines log in with (since it was made or imported), by team (name, with its team_id) and SHA256 fingerprint; never key material.",
		[]string{"team", "fingerprint", "team_id"}, nil)
	descKeyOverdue = prometheus.NewDesc("rediacc_ssh_key_overdue",
		"1 when the key is older than the rotation policy's maximum age (Config.KeyRotation.MaxAge), else 0.",
		[]string{"team", "fingerprint", "team_id"}, nil)
)

// collectKeys sends the key gauges, from the store only (keys whose public
// key is not recorded yet are left out until a worker records it).
func (c *Client) collectKeys(ctx context.Context, ch chan<- prometheus.Metric) error {
	inv, err := c.inventory(ctx, nil, false)
	if err != nil {
		return err
	}
	now := c.clock.Now().UTC()
	seen := map[[2]string]bool{}
	for _, k := range inv {
		v := c.view(k, now)
		if v.Fingerprint == "" || seen[[2]string{v.TeamID, v.Fingerprint}] {
			continue
		}
		seen[[2]string{v.TeamID, v.Fingerprint}] = true
		ch <- prometheus.MustNewConstMetric(descKeyAge, prometheus.GaugeValue, v.Age.Seconds(), v.Team, v.Fingerprint, v.TeamID)
		ch <- prometheus.MustNewConstMetric(descKeyOverdue, prometheus.GaugeValue, b2f(v.Overdue), v.Team, v.Fingerprint, v.TeamID)
	}
	return nil
}
