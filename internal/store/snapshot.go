package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/rediacc/rediacc/internal/audit"
)

// Snapshot is the whole content of a store, as ReadSnapshot reads it from
// one engine for an Importer to write into another (rediacc store
// migrate-from-sqlite). Records are kept exactly: ids, times, task states
// and attempts, and the audit trail with its sequence numbers and seals.
type Snapshot struct {
	Teams      []Team // deleted ones included
	Members    []Member
	StoreRoles []StoreRole
	Machines   []Machine // with their health samples; the deleted ones tasks reference included
	Tasks      []Task    // with History, in CreatedAt order
	AuditBase  audit.Head
	Audit      []audit.Record // the trail after AuditBase, in Seq order
	Keys       []Key          // the SSH key inventory (KeyEngine)
	Blobs      []Blob         // host keys, encrypted vaults (BlobEngine)
	Schedules  []Schedule     // with their state (Schedules; snapshot_schedule.go)
	Fires      []Fire         // the schedules' kept fires, oldest first per schedule
	Gates      []Gate         // drains and pauses in force (Gates)
	Windows    []Window       // maintenance windows (Gates)
}

// Importer is implemented by engines that can take a Snapshot.
type Importer interface {
	// Import writes s into the store in one transaction, records kept as
	// they are (the audit trail is not sealed again: its seals stay
	// verifiable with the keyring that made them). The store must be
	// empty: no tasks, machines, members, roles, audit records, keys,
	// blobs, schedules, gates or windows, and no team but DefaultTeam;
	// ErrExists otherwise, naming what it holds. A failed Import writes
	// nothing.
	Import(ctx context.Context, s Snapshot) error
}

// blobKinds are the kinds of blobs a Snapshot carries.
var blobKinds = []string{BlobHostKeys, BlobVault}

// ReadSnapshot reads the whole content of e (which must implement Access;
// keys and blobs are read when it implements KeyEngine and BlobEngine,
// schedules, gates and windows when it implements Schedules and Gates).
// It reads while others may write: take it from a store nothing else uses.
func ReadSnapshot(ctx context.Context, e Engine) (Snapshot, error) {
	var s Snapshot
	a, ok := e.(Access)
	if !ok {
		return s, fmt.Errorf("%w: %T keeps no teams and audit trail", ErrInvalidArgument, e)
	}
	var err error
	if s.Teams, err = a.ListTeams(ctx, TeamFilter{IncludeDeleted: true}); err != nil {
		return s, fmt.Errorf("reading teams: %w", err)
	}
	if s.Members, err = a.ListMembers(ctx, ""); err != nil {
		return s, fmt.Errorf("reading members: %w", err)
	}
	if s.StoreRoles, err = a.StoreRoles(ctx, ""); err != nil {
		return s, fmt.Errorf("reading store roles: %w", err)
	}
	if s.Machines, err = e.ListMachines(ctx, MachineFilter{}); err != nil {
		return s, fmt.Errorf("reading machines: %w", err)
	}
	listed, err := e.ListTasks(ctx, TaskFilter{})
	if err != nil {
		return s, fmt.Errorf("reading tasks: %w", err)
	}
	have := map[string]bool{}
	for _, m := range s.Machines {
		have[m.ID] = true
	}
	for _, t := range listed {
		full, err := e.GetTask(ctx, t.ID)
		if err != nil {
			return s, fmt.Errorf("reading task %s: %w", t.ID, err)
		}
		s.Tasks = append(s.Tasks, full)
		if !have[full.MachineID] { // a removed machine keeps its record for its tasks
			have[full.MachineID] = true
			m, err := e.GetMachine(ctx, full.MachineID)
			if errors.Is(err, ErrNotFound) {
				continue // tasks need not reference a machine that exists
			}
			if err != nil {
				return s, fmt.Errorf("reading machine %s: %w", full.MachineID, err)
			}
			s.Machines = append(s.Machines, m)
		}
	}
	if s.AuditBase, err = a.AuditBase(ctx); err != nil {
		return s, fmt.Errorf("reading the audit base: %w", err)
	}
	for after := s.AuditBase.Seq; ; {
		page, err := a.ListAudit(ctx, audit.Filter{AfterSeq: after, Limit: audit.MaxLimit})
		if err != nil {
			return s, fmt.Errorf("reading audit records after %d: %w", after, err)
		}
		s.Audit = append(s.Audit, page...)
		if len(page) < audit.MaxLimit {
			break
		}
		after = page[len(page)-1].Seq
	}
	if ke, ok := e.(KeyEngine); ok {
		if s.Keys, err = ke.ListKeys(ctx, KeyFilter{}); err != nil {
			return s, fmt.Errorf("reading the key inventory: %w", err)
		}
	}
	if err := readScheduleSnapshot(ctx, e, &s); err != nil {
		return s, err
	}
	if be, ok := e.(BlobEngine); ok {
		for _, kind := range blobKinds {
			bs, err := be.ListBlobs(ctx, kind)
			if err != nil {
				return s, fmt.Errorf("reading %s blobs: %w", kind, err)
			}
			s.Blobs = append(s.Blobs, bs...)
		}
	}
	return s, nil
}
