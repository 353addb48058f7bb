package archive_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/rediacc/rediacc/internal/archive"
)

func Example() {
	dir, _ := os.MkdirTemp("", "archive")
	defer os.RemoveAll(dir)
	a, err := archive.Open(dir, archive.Options{Retention: 365 * 24 * time.Hour})
	if err != nil {
		panic(err)
	}
	defer a.Close()
	ctx := context.Background()
	at := time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)
	a.Append(ctx, archive.KindTask, "task-1", at, map[string]any{"status": "FAILED", "exitCode": 1, "attempts": 3})
	a.Append(ctx, archive.KindTask, "task-2", at, map[string]any{"status": "COMPLETED", "exitCode": 0, "attempts": 1})

	recs, err := a.Lookup(ctx, archive.KindTask, "task-1")
	fmt.Println(len(recs), string(recs[0]), err)

	a.Scan(ctx, archive.KindTask, func(key string, at time.Time, raw json.RawMessage) error {
		fmt.Println(key, at.Format(time.RFC3339))
		return nil
	})
	// Output:
	// 1 {"attempts":3,"exitCode":1,"status":"FAILED"} <nil>
	// task-1 2026-11-29T10:00:00Z
	// task-2 2026-11-29T10:00:00Z
}
