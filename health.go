package rediacc

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/rediacc/rediacc/internal/audit"
	"github.com/rediacc/rediacc/internal/authz"
	"github.com/rediacc/rediacc/internal/health"
	"github.com/rediacc/rediacc/internal/store"
	rssh "github.com/rediacc/rediacc/ssh"
)

// Health probing defaults (HealthConfig's zero fields).
const (
	// DefaultHealthInterval is how often a worker probes the machines it may
	// run tasks on (HealthConfig.Interval).
	DefaultHealthInterval = time.Minute
	// DefaultHealthHysteresis is HealthConfig.Hysteresis's default, in
	// percentage points: busy above 90 %, free again below 80 %.
	DefaultHealthHysteresis = health.DefaultHysteresis
	// DefaultMaxHold is HealthConfig.MaxHold's default: the longest a busy
	// machine holds back a task (aging usually lets it through sooner).
	DefaultMaxHold = 30 * time.Minute
	// HealthMinBusySamples is how many samples a machine's average must
	// rest on before it can be called busy: one sample never does.
	HealthMinBusySamples = health.MinBusySamples
	// DefaultHealthCPUPercent and DefaultHealthMemPercent are the default
	// HealthThresholds: above 90 % CPU or 90 % memory used a machine is
	// busy.
	DefaultHealthCPUPercent = health.DefaultCPUPercent
	DefaultHealthMemPercent = health.DefaultMemPercent
	// ProbeTimeout bounds one health probe (dial, session, the ~0.2 s
	// script).
	ProbeTimeout = 30 * time.Second
	// probeParallel bounds the probes a worker runs at once.
	probeParallel = 4
	// busyCacheTTL is how long a worker reuses its list of busy machines
	// between claims.
	busyCacheTTL = time.Second
)

// HealthConfig configures the workers' health probes and the busy gate
// (Config.Health). Every zero field means its default.
//
// A worker probes each machine it may run tasks on every Interval (CPU over
// ~200 ms, load, memory, disk: HealthSample) and judges the machine on an
// exponentially weighted moving average of its samples (time constant
// Smoothing), with hysteresis: the machine becomes busy when an average
// rises above its threshold (Thresholds; never on one sample, see
// HealthMinBusySamples, nor on samples spanning less than Smoothing/2, such
// as several workers' first probes) and is free again only when every
// average is below
// its threshold minus Hysteresis. The judgement (averages, busy, since
// when, why) is stored with the machine, so every worker and reader of the
// store sees the same one (MachineStatus, Task.Waiting).
//
// A busy machine takes no new work of effective priority 3–5 (see
// EffectivePriority); priority 1–2 runs as usual. The gate has an end:
// aging lifts a waiting task to priority 2 after (priority-2) ×
// Config.AgingInterval, and no task is held longer than MaxHold.
// Placement (TaskSpec.Team) avoids busy machines for priority 3–5 work when
// another machine is eligible. A probe that fails makes the machine
// unhealthy (an AlertMachineUnhealthy alert, SeverityError); becoming busy
// raises an AlertMachineBusy alert (SeverityWarning).
type HealthConfig struct {
	// Interval is how often a worker probes, over SSH, the machines it may
	// run tasks on; the first round runs when Run starts. Default
	// DefaultHealthInterval (1 min); negative turns the worker's probes
	// off (ProbeMachine still works).
	//
	// A judgement counts for three of its prober's intervals after its
	// last sample (three DefaultHealthInterval when the prober's own
	// probes are off, as for ProbeMachine): the prober stores that instant
	// with it (MachineStatus.BusyUntil), so every worker and reader ends
	// it at the same instant, whatever its own Interval. A worker whose
	// probes are off still honours the busy judgements other workers (or
	// ProbeMachine) stored, until they lapse: the busy gate is part of the
	// claim rule, which is the same for every worker sharing a store (a
	// worker ignoring it would start priority 3–5 work on a machine every
	// other worker holds back). A task held by such a judgement says until
	// when (WaitMachineBusy: the lapse, or the gate's end by aging or
	// MaxHold, whichever comes first). To stop judging machines busy, set
	// the probing workers' Thresholds above 100.
	Interval time.Duration
	// Thresholds say when a machine's averages make it busy. Default: CPU
	// 90 %, memory 90 %.
	Thresholds HealthThresholds
	// Hysteresis is how far, in percentage points, every average must fall
	// below its threshold before a busy machine is free again. Default
	// DefaultHealthHysteresis (10); negative: no band.
	Hysteresis float64
	// Smoothing is the averages' time constant τ: a sample taken dt after
	// the previous one weighs 1 - exp(-dt/τ) (so a sustained load shows in
	// about τ). Default 2 × Interval (2 min); negative: none, each sample
	// replaces the average.
	Smoothing time.Duration
	// MaxHold is the longest a busy machine holds back a task, counted
	// from when it was queued (or last requeued for a retry). Default
	// DefaultMaxHold (30 min); negative: no maximum (aging alone ends the
	// hold; with aging off, a busy machine holds priority 3–5 work until
	// it is free).
	MaxHold time.Duration
}

// HealthThresholds say when a machine's averages make it busy (see
// HealthConfig): above either threshold, strictly. A zero field means its
// default; set a threshold above 100 to never call a machine busy on that
// account.
type HealthThresholds struct {
	// CPUPercent is the CPU use (0–100, over all CPUs) above which a
	// machine is busy. Default DefaultHealthCPUPercent (90).
	CPUPercent float64
	// MemPercent is the memory use (0–100, of MemTotal, counting
	// MemAvailable as free) above which a machine is busy. Default
	// DefaultHealthMemPercent (90).
	MemPercent float64
}

// HealthSample is one health probe of a machine over SSH: CPU use, load,
// memory and the root filesystem's space, read from /proc and df in one
// SSH session.
type HealthSample struct {
	// At is when the sample was taken (UTC).
	At time.Time `json:"at"`
	// CPUPercent is the CPU time not idle over ~200 ms, across all CPUs:
	// 0–100.
	CPUPercent float64 `json:"cpuPercent"`
	// Load1, Load5 and Load15 are the 1, 5 and 15 minute load averages.
	Load1  float64 `json:"load1"`
	Load5  float64 `json:"load5"`
	Load15 float64 `json:"load15"`
	// CPUs is the number of online CPUs (≥ 1).
	CPUs int `json:"cpus"`
	// LoadPerCPU is Load1 / CPUs.
	LoadPerCPU float64 `json:"loadPerCpu"`
	// MemTotalBytes and MemAvailableBytes are MemTotal and MemAvailable, in
	// bytes.
	MemTotalBytes     uint64 `json:"memTotalBytes"`
	MemAvailableBytes uint64 `json:"memAvailableBytes"`
	// MemUsedPercent is 100 × (total − available) / total: 0–100.
	MemUsedPercent float64 `json:"memUsedPercent"`
	// DiskTotalBytes and DiskFreeBytes are the size of the filesystem
	// holding / and the space available to unprivileged users, in bytes.
	DiskTotalBytes uint64 `json:"diskTotalBytes"`
	DiskFreeBytes  uint64 `json:"diskFreeBytes"`
	// DiskUsedPercent is df's capacity of /: 0–100.
	DiskUsedPercent float64 `json:"diskUsedPercent"`
}

func sampleFrom(s health.Sample) HealthSample {
	return HealthSample{
		At: s.At.UTC(), CPUPercent: s.CPUPercent, Load1: s.Load1, Load5: s.Load5, Load15: s.Load15,
		CPUs: s.CPUs, LoadPerCPU: s.LoadPerCPU, MemTotalBytes: s.MemTotalBytes, MemAvailableBytes: s.MemAvailableBytes,
		MemUsedPercent: s.MemUsedPercent, DiskTotalBytes: s.DiskTotalBytes, DiskFreeBytes: s.DiskFreeBytes,
		DiskUsedPercent: s.DiskUsedPercent,
	}
}

// Busy reports whether s, one sample, is above either of th's thresholds
// (zero fields of th mean the defaults). Workers judge machines on an
// average of samples, not on one (see HealthConfig).
func (s HealthSample) Busy(th HealthThresholds) bool {
	return health.Sample{CPUPercent: s.CPUPercent, MemUsedPercent: s.MemUsedPercent}.
		Busy(health.Thresholds{CPUPercent: th.CPUPercent, MemPercent: th.MemPercent})
}

// healthRecord is what a machine's store.Machine.Health holds (JSON).
// HealthAt is the time of the last probe, successful or not.
type healthRecord struct {
	// Sample is the last successful sample (kept when a later probe fails).
	Sample *HealthSample `json:"sample,omitempty"`
	// Error is the last probe's error; "" when it succeeded.
	Error string `json:"error,omitempty"`
	// Judged is the judgement after the successful samples: averages,
	// busy, since when and why (nil before the first sample).
	Judged *health.Judgement `json:"judged,omitempty"`
	// JudgedUntil is when Judged lapses unless a later sample renews it:
	// the last sample's time plus three of its prober's probe intervals
	// (staleAfter). Zero in records written before it was stored: the
	// reader's own staleAfter applies.
	JudgedUntil time.Time `json:"judgedUntil,omitzero"`
}

// healthView is a machine's health as placement and claims see it.
type healthView struct {
	rec    healthRecord
	at     time.Time // last probe
	fresh  bool      // the last probe is recent enough to count
	failed bool      // fresh and the last probe failed: unhealthy
	busy   bool      // the stored judgement, recent enough, says busy
	lapse  time.Time // when the stored judgement stops counting (zero: none stored)
}

// healthDefaults fills Config's health defaults (called by New): the
// deprecated HealthInterval and HealthThresholds fill Health's zero
// fields, then Health's defaults apply.
func healthDefaults(cfg *Config) {
	h := &cfg.Health
	if h.Interval == 0 {
		h.Interval = cfg.HealthInterval
	}
	if h.Thresholds == (HealthThresholds{}) {
		h.Thresholds = cfg.HealthThresholds
	}
	if h.Interval == 0 {
		h.Interval = DefaultHealthInterval
	}
	if h.Thresholds.CPUPercent <= 0 {
		h.Thresholds.CPUPercent = DefaultHealthCPUPercent
	}
	if h.Thresholds.MemPercent <= 0 {
		h.Thresholds.MemPercent = DefaultHealthMemPercent
	}
	if h.Hysteresis == 0 {
		h.Hysteresis = DefaultHealthHysteresis
	}
	if h.Smoothing == 0 {
		iv := h.Interval
		if iv <= 0 {
			iv = DefaultHealthInterval
		}
		h.Smoothing = 2 * iv
	}
	if h.MaxHold == 0 {
		h.MaxHold = DefaultMaxHold
	}
	cfg.HealthInterval, cfg.HealthThresholds = h.Interval, h.Thresholds // the deprecated fields read back the same
}

// healthRules is how this client judges samples.
func (c *Client) healthRules() health.Rules {
	h := c.cfg.Health
	return health.Rules{
		Thresholds: health.Thresholds{CPUPercent: h.Thresholds.CPUPercent, MemPercent: h.Thresholds.MemPercent},
		Hysteresis: h.Hysteresis, Smoothing: max(h.Smoothing, 0), Stale: c.staleAfter(),
	}
}

// maxHold is ClaimRequest.MaxHold: 0 when off.
func (c *Client) maxHold() time.Duration { return max(c.cfg.Health.MaxHold, 0) }

// healthState is the Client's cache of busy machines for claims.
type healthState struct {
	mu     sync.Mutex
	busyAt time.Time
	busy   []string
}

// staleAfter is the age past which a probe no longer counts: three probe
// intervals (of the default interval when probing is off here, as samples
// may come from other workers).
func (c *Client) staleAfter() time.Duration {
	iv := c.cfg.Health.Interval
	if iv <= 0 {
		iv = DefaultHealthInterval
	}
	return 3 * iv
}

// viewHealth reads a machine's stored health.
func (c *Client) viewHealth(m store.Machine, now time.Time) healthView {
	var v healthView
	if len(m.Health) == 0 || m.HealthAt.IsZero() {
		return v
	}
	if err := json.Unmarshal(m.Health, &v.rec); err != nil {
		return healthView{} // unreadable: unknown
	}
	v.at = m.HealthAt
	v.fresh = now.Sub(m.HealthAt) <= c.staleAfter()
	v.failed = v.fresh && v.rec.Error != ""
	if j := v.rec.Judged; j != nil {
		v.lapse = v.rec.JudgedUntil
		if v.lapse.IsZero() { // stored before records carried their lapse
			v.lapse = j.At.Add(c.staleAfter())
		}
		v.busy = j.Busy && now.Before(v.lapse)
	}
	return v
}

// machineTarget builds the SSH target of m, with its passphrase and, when
// its identity is in the team vault, the key: the current version and the
// one before it (keys.go: a machine a rotation has not reached yet still
// takes the previous key, so tasks run through every step of a rotation).
func (c *Client) machineTarget(ctx context.Context, m Machine) (rssh.Target, error) {
	return c.machineTargetFor(ctx, m, "probe=health")
}

// machineTargetFor is machineTarget for a connection made for purpose,
// which an ssh-ca machine's certificates name in their key ID ("task=ID").
func (c *Client) machineTargetFor(ctx context.Context, m Machine, purpose string) (rssh.Target, error) {
	pass, err := c.passphrase(ctx, m)
	if err != nil {
		return rssh.Target{}, fmt.Errorf("%w: passphrase for %s: %v", ErrWrongPassphrase, m.IdentityFile, err)
	}
	keys, err := c.identityPEMs(ctx, m)
	if err != nil {
		return rssh.Target{}, err
	}
	t := m.target(pass, keys...)
	t.HostKey = c.hostKeyPolicy(m) // hostkeys.go: the store's lines for m
	c.teamSSH(ctx, &t, m, purpose) // sshca_sign.go
	return t, nil
}

// probe runs the health script on m over the pool.
func (c *Client) probe(ctx context.Context, m Machine) (HealthSample, error) {
	ctx, cancel := context.WithTimeout(ctx, ProbeTimeout)
	defer cancel()
	t, err := c.machineTarget(ctx, m)
	if err != nil {
		return HealthSample{}, err
	}
	res, err := c.pool.Run(ctx, t, rssh.Command{Cmd: health.Script(), Timeout: ProbeTimeout, OutputLimit: 64 << 10})
	if err != nil {
		return HealthSample{}, err
	}
	s, err := health.Parse(res.Stdout, c.clock.Now().UTC())
	if err != nil {
		return HealthSample{}, fmt.Errorf("health probe of %s: %w", m.Name, err)
	}
	return sampleFrom(s), nil
}

// nextHealth is a machine's health record after a probe: a failed probe
// keeps the last good sample and judgement; a sample is judged with the
// previous ones (see HealthConfig).
func (c *Client) nextHealth(prev healthRecord, s HealthSample, perr error) healthRecord {
	rec := healthRecord{Sample: prev.Sample, Judged: prev.Judged, JudgedUntil: prev.JudgedUntil}
	if perr != nil {
		rec.Error = trimErr(perr)
		return rec
	}
	var j health.Judgement
	if prev.Judged != nil {
		j = *prev.Judged
	}
	j = c.healthRules().Next(j, health.Sample{At: s.At, CPUPercent: s.CPUPercent, MemUsedPercent: s.MemUsedPercent})
	rec.Sample, rec.Judged, rec.JudgedUntil = &s, &j, j.At.Add(c.staleAfter())
	return rec
}

// probeAndRecord probes m, judges and stores the outcome, and raises an
// AlertMachineUnhealthy alert (SeverityError) when the probe failed, or an
// AlertMachineBusy alert (SeverityWarning) when the machine became busy.
func (c *Client) probeAndRecord(ctx context.Context, m Machine) (HealthSample, error) {
	s, perr := c.probe(ctx, m)
	if perr != nil && ctx.Err() != nil {
		return s, perr // stopped (the worker is shutting down): not the machine's fault
	}
	c.checkMachineCAs(ctx, m, perr) // sshca_sign.go: which SSH CA an ssh-ca machine trusts
	var prev healthRecord
	if pm, err := c.engine.GetMachine(ctx, m.ID); err == nil && len(pm.Health) > 0 {
		_ = json.Unmarshal(pm.Health, &prev) // unreadable: judged afresh
	}
	rec := c.nextHealth(prev, s, perr)
	now := c.clock.Now().UTC()
	if perr == nil {
		now = s.At
	}
	var a *Alert
	switch {
	case perr != nil:
		a = &Alert{Kind: AlertMachineUnhealthy, Severity: SeverityError, Team: m.Team, Machine: m.Name, TeamID: m.TeamID, MachineID: m.ID, Error: rec.Error, Time: now,
			Message: fmt.Sprintf("machine %s failed its health probe: %s", m.Name, clipLine(rec.Error, 200))}
	case rec.Judged.Busy && (prev.Judged == nil || !prev.Judged.Busy):
		a = &Alert{Kind: AlertMachineBusy, Severity: SeverityWarning, Team: m.Team, Machine: m.Name, TeamID: m.TeamID, MachineID: m.ID, Time: now,
			Message: fmt.Sprintf("machine %s is busy: %s (averages over %s): it takes no new priority 3-5 work until every average is %.0f points below its threshold; held tasks pass once aged to priority 2 or after %s",
				m.Name, rec.Judged.Why, c.cfg.Health.Smoothing, max(c.cfg.Health.Hysteresis, 0), fmtHold(c.maxHold()))}
	}
	// The alert is stored with the sample, in its transaction (outbox.go):
	// a machine's new state is never recorded without its alert, nor the
	// alert without the state (a failed write leaves both for the next
	// probe, which judges the same transition again).
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	var alertRes store.AlertResult
	if a != nil {
		req, err := c.alertRequest(*a, &alertRes)
		if err != nil {
			c.log.ErrorContext(ctx, "alert not stored", "kind", a.Kind, "machine", m.Name, "error", err)
			a = nil
		} else {
			wctx = store.WithAlerts(wctx, req)
		}
	}
	raw, err := json.Marshal(rec)
	if err == nil {
		err = c.engine.SetMachineHealth(wctx, m.ID, raw, now)
	}
	if err != nil {
		c.log.ErrorContext(ctx, "storing a health sample failed", "machine", m.Name, "error", err)
	} else if a != nil {
		c.alertStored(a.Kind, alertRes) // counted; the dispatcher delivers it
	}
	c.hstate.mu.Lock()
	c.hstate.busyAt = time.Time{} // reload the busy list at the next claim
	c.hstate.mu.Unlock()
	return s, perr
}

func fmtHold(d time.Duration) string {
	if d <= 0 {
		return "no maximum"
	}
	return d.String()
}

// ProbeMachine probes the named machine's health now over SSH (one
// session: /proc/loadavg, /proc/meminfo, /proc/stat twice 200 ms apart,
// nproc, df /), stores the sample as the machine's last, and returns it.
// The sample is judged with the machine's earlier ones (HealthConfig) and
// stored; an AlertMachineBusy alert is raised when the machine becomes busy.
// A failed probe is stored too: the machine counts as unhealthy (placement
// skips it) until a later probe succeeds, and an AlertMachineUnhealthy alert
// is raised.
// Needs machine.status in the machine's team (any member). The probe takes
// about 0.2 s on a pooled connection and at most ProbeTimeout.
//
// Errors: ErrNoActor, ErrPermissionDenied, ErrNotFound (machine); the
// probe's error: ErrConnect, ErrAuthFailed, ErrHostKeyMismatch,
// ErrUnknownHostKey, ErrKeyFile, ErrTimeout, or a parse error naming the
// missing part of the output.
func (c *Client) ProbeMachine(ctx context.Context, name string) (HealthSample, error) {
	if _, _, err := c.actor(ctx); err != nil {
		return HealthSample{}, err
	}
	m, err := c.machine(ctx, name)
	if err != nil {
		return HealthSample{}, err
	}
	o, _, err := c.authorizeSeen(ctx, authz.MachineRead, machineNotFound(name), authz.MachineStatus, teamScope(m.TeamID, m.Team), audit.EntityMachine, m.ID,
		map[string]string{"machine": name, "probe": "ssh"})
	if err != nil {
		return HealthSample{}, err
	}
	s, err := c.probeAndRecord(ctx, m)
	if err != nil {
		return HealthSample{}, o.fail(ctx, err)
	}
	o.detail["cpu_percent"] = strconv.FormatFloat(s.CPUPercent, 'f', 1, 64)
	o.detail["mem_percent"] = strconv.FormatFloat(s.MemUsedPercent, 'f', 1, 64)
	o.done(ctx)
	return s, nil
}

// MachineStatus is a machine's health and load, as Client.MachineStatus
// reports it.
type MachineStatus struct {
	// Name, Team and Labels identify the machine; ID and TeamID are the
	// machine's and its team's ids.
	Name   string            `json:"name"`
	ID     string            `json:"id"`
	Team   string            `json:"team"`
	TeamID string            `json:"teamId"`
	Labels map[string]string `json:"labels,omitempty"`
	// Sample is the last successful health sample, nil when the machine was
	// never probed successfully. The four figures below are copied from it
	// (0 when it is nil).
	Sample          *HealthSample `json:"sample,omitempty"`
	CPUPercent      float64       `json:"cpuPercent"`
	LoadPerCPU      float64       `json:"loadPerCpu"`
	MemUsedPercent  float64       `json:"memUsedPercent"`
	DiskUsedPercent float64       `json:"diskUsedPercent"`
	// Running counts the machine's ASSIGNED and PROCESSING tasks; Queued
	// its PENDING ones (waiting out a retry delay included).
	Running int `json:"running"`
	Queued  int `json:"queued"`
	// LastSeen is when the machine last answered a probe (Sample.At); zero
	// when never. LastProbe is when it was last probed, successfully or not.
	LastSeen  time.Time `json:"lastSeen,omitzero"`
	LastProbe time.Time `json:"lastProbe,omitzero"`
	// ProbeError is the last probe's error, "" when it succeeded.
	ProbeError string `json:"probeError,omitempty"`
	// Healthy is false while the last probe, taken within three probe
	// intervals, failed. A machine never probed, or not probed recently,
	// counts as healthy (its health is unknown).
	Healthy bool `json:"healthy"`
	// Busy is true while the machine's recent judgement (HealthConfig:
	// averages with hysteresis) says busy: it takes no new work of
	// effective priority 3–5. BusySince is when it became busy and
	// BusyReason which average is above which threshold ("CPU 97 % >
	// 90 %").
	Busy       bool      `json:"busy"`
	BusySince  time.Time `json:"busySince,omitzero"`
	BusyReason string    `json:"busyReason,omitempty"`
	// BusyUntil is when the busy judgement lapses unless a later probe
	// renews it: its last sample plus three of its prober's intervals
	// (HealthConfig.Interval). Zero when not busy.
	BusyUntil time.Time `json:"busyUntil,omitzero"`
	// AvgCPUPercent and AvgMemPercent are the averages the judgement rests
	// on (0 before the first sample).
	AvgCPUPercent float64 `json:"avgCpuPercent"`
	AvgMemPercent float64 `json:"avgMemPercent"`
	// KeyFingerprint is the SHA256 fingerprint of the SSH key the machine
	// logs in with ("" for the ssh-agent, or before a worker recorded it),
	// KeyAge its age, and KeyOverdue whether that is past
	// Config.KeyRotation.MaxAge (keys.go).
	KeyFingerprint string        `json:"keyFingerprint,omitempty"`
	KeyAge         time.Duration `json:"-"`
	KeyAgeSeconds  int64         `json:"keyAgeSeconds,omitempty"`
	KeyOverdue     bool          `json:"keyOverdue"`
	// SSHCA lists, for a machine with Auth AuthSSHCA, its team's active
	// and next CAs and whether the machine accepted a certificate of each
	// at its last login probe (sshca.go).
	SSHCA []SSHCACheck `json:"sshCa,omitempty"`

	// Draining is set while the machine is drained (DrainMachine): no new
	// task starts on it. It says since when, by whom and why.
	Draining *Gate `json:"draining,omitempty"`
}

// MachineStatus reports, by name, the health and load of the machines of
// the teams the actor belongs to (owners: all), or of f.Team: the last
// health sample (CPU %, load per CPU, memory and disk used %), the tasks
// running and queued on each, when each was last seen, and whether it is
// busy or failing its probe. It reads stored samples and judgements (taken
// by workers every HealthConfig.Interval, or by ProbeMachine) and probes
// nothing.
// Needs machine.status (any member).
//
// Errors: ErrNoActor, ErrPermissionDenied (a Team the actor has no role in).
func (c *Client) MachineStatus(ctx context.Context, f MachineFilter) ([]MachineStatus, error) {
	var sc scope
	if f.Team != "" {
		var err error
		if sc, err = c.resolveTeam(ctx, f.Team); err != nil {
			return nil, err
		}
	}
	teams, o, err := c.scopeTeams(ctx, authz.MachineStatus, sc, audit.EntityMachine)
	if err != nil {
		return nil, err
	}
	rs, err := c.engine.ListMachines(ctx, store.MachineFilter{TeamIDs: teams})
	if err != nil {
		return nil, mapStoreErr(err)
	}
	depth, err := c.engine.Depth(ctx)
	if err != nil {
		return nil, mapStoreErr(err)
	}
	running, queued := map[string]int{}, map[string]int{}
	for _, d := range depth {
		switch {
		case d.Status.Active():
			running[d.MachineID] += d.Count
		case d.Status == store.Pending:
			queued[d.MachineID] += d.Count
		}
	}
	now := c.clock.Now().UTC()
	out := make([]MachineStatus, 0, len(rs))
	caStates := map[string]*caState{}
	for _, r := range rs {
		m, err := machineFromRecord(r)
		if err != nil {
			return nil, err
		}
		v := c.viewHealth(r, now)
		st := MachineStatus{
			Name: m.Name, ID: m.ID, Team: m.Team, TeamID: m.TeamID, Labels: m.Labels, Running: running[m.ID], Queued: queued[m.ID],
			LastProbe: v.at, ProbeError: v.rec.Error, Healthy: !v.failed, Busy: v.busy,
			SSHCA: c.machineCAChecks(ctx, m, caStates), // sshca_sign.go
		}
		if j := v.rec.Judged; j != nil {
			st.AvgCPUPercent, st.AvgMemPercent = j.CPUPercent, j.MemPercent
			if v.busy {
				st.BusySince, st.BusyReason, st.BusyUntil = j.Since, j.Why, v.lapse
			}
		}
		if s := v.rec.Sample; s != nil {
			st.Sample = s
			st.CPUPercent, st.LoadPerCPU, st.MemUsedPercent, st.DiskUsedPercent = s.CPUPercent, s.LoadPerCPU, s.MemUsedPercent, s.DiskUsedPercent
			st.LastSeen = s.At
		}
		out = append(out, st)
	}
	if err := c.keyStatus(ctx, teams, out); err != nil { // keys.go
		return nil, err
	}
	c.markDraining(ctx, out) // gate.go
	o.done(ctx)
	return out, nil
}

// busyMachines returns the machines (ids) whose recent sample is above the
// thresholds, for ClaimRequest.BusyMachines; cached for busyCacheTTL.
func (c *Client) busyMachines(ctx context.Context) []string {
	now := time.Now()
	c.hstate.mu.Lock()
	if !c.hstate.busyAt.IsZero() && now.Sub(c.hstate.busyAt) < busyCacheTTL {
		b := c.hstate.busy
		c.hstate.mu.Unlock()
		return b
	}
	c.hstate.mu.Unlock()
	ms, err := c.engine.ListMachines(ctx, store.MachineFilter{})
	if err != nil {
		c.log.WarnContext(ctx, "reading machine health failed", "error", err)
		return nil
	}
	qnow := c.clock.Now().UTC()
	var busy []string
	for _, m := range ms {
		if c.viewHealth(m, qnow).busy {
			busy = append(busy, m.ID)
		}
	}
	c.hstate.mu.Lock()
	c.hstate.busy, c.hstate.busyAt = busy, now
	c.hstate.mu.Unlock()
	return busy
}

// startProber probes, every HealthConfig.Interval (at once first), the
// machines of the teams where actor may run tasks, until the returned stop
// is called. Probes of the worker are not audited (they are not caller
// operations); their samples are stored and failures alerted.
func (c *Client) startProber(ctx context.Context, actor string, log *slog.Logger) (stop func()) {
	if c.cfg.Health.Interval <= 0 {
		return func() {}
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		ticker := time.NewTicker(c.cfg.Health.Interval)
		defer ticker.Stop()
		for {
			c.probeRound(ctx, actor, log)
			select {
			case <-ctx.Done():
				return
			case <-ticker.C:
			}
		}
	}()
	return func() { cancel(); <-done }
}

// probeRound probes every machine actor may run tasks on, probeParallel at
// a time.
func (c *Client) probeRound(ctx context.Context, actor string, log *slog.Logger) {
	g, err := c.grants(ctx, actor)
	if err != nil {
		if ctx.Err() == nil {
			log.WarnContext(ctx, "health probes: reading roles failed", "error", err)
		}
		return
	}
	f := store.MachineFilter{}
	if teams, all := visibleTeams(g, authz.TaskRun); !all {
		if len(teams) == 0 {
			return
		}
		f.TeamIDs = teams
	}
	rs, err := c.engine.ListMachines(ctx, f)
	if err != nil {
		if ctx.Err() == nil {
			log.WarnContext(ctx, "health probes: listing machines failed", "error", err)
		}
		return
	}
	sem := make(chan struct{}, probeParallel)
	var wg sync.WaitGroup
	for _, r := range rs {
		if !c.probesMachine(r.Name) { // another worker's share (cluster.go)
			continue
		}
		m, err := machineFromRecord(r)
		if err != nil {
			continue
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			s, err := c.probeAndRecord(ctx, m)
			switch {
			case err != nil && ctx.Err() == nil:
				log.WarnContext(ctx, "machine failed its health probe", "machine", m.Name, "error", err)
			case err == nil:
				log.DebugContext(ctx, "machine probed", "machine", m.Name, "cpu_percent", s.CPUPercent,
					"load_per_cpu", s.LoadPerCPU, "mem_percent", s.MemUsedPercent, "disk_percent", s.DiskUsedPercent)
			}
		}()
	}
	wg.Wait()
}
