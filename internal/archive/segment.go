package archive

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/rediacc/rediacc/internal/safefs"
)

const (
	dayLayout  = "2006-01-02"
	segSuffix  = ".jsonl.gz"
	tempSuffix = ".tmp"

	// compactBlockBytes is the uncompressed size of a compacted member.
	compactBlockBytes = 1 << 20
)

var segRE = regexp.MustCompile(`^(\d{4}-\d{2}-\d{2})\.(\d{4,9})\.jsonl\.gz$`)

type segment struct {
	path string
	day  string
	seq  int
}

func segmentName(day string, seq int) string {
	return fmt.Sprintf("%s.%04d%s", day, seq, segSuffix)
}

func isTempName(name string) bool {
	return strings.HasSuffix(name, segSuffix+tempSuffix)
}

// listSegments returns the segments in kdir, oldest first (by day, then
// sequence number). Other files are ignored; a missing kdir is empty.
func listSegments(kdir string) ([]segment, error) {
	ents, err := os.ReadDir(kdir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var segs []segment
	for _, e := range ents {
		m := segRE.FindStringSubmatch(e.Name())
		if m == nil || !e.Type().IsRegular() {
			continue
		}
		if _, err := time.Parse(dayLayout, m[1]); err != nil {
			continue
		}
		seq, _ := strconv.Atoi(m[2])
		segs = append(segs, segment{path: filepath.Join(kdir, e.Name()), day: m[1], seq: seq})
	}
	slices.SortFunc(segs, func(x, y segment) int {
		if c := strings.Compare(x.day, y.day); c != 0 {
			return c
		}
		return x.seq - y.seq
	})
	return segs, nil
}

// kinds lists the kind directories present in the archive.
func (a *Archive) kinds() ([]string, error) {
	ents, err := os.ReadDir(a.dir)
	if err != nil {
		return nil, err
	}
	var ks []string
	for _, e := range ents {
		if e.IsDir() && kindRE.MatchString(e.Name()) {
			ks = append(ks, e.Name())
		}
	}
	return ks, nil
}

// Prune removes the segments of every kind whose whole UTC day is older than
// now − [Options].Retention (a segment of day D goes once D+24h ≤ now −
// Retention), never a segment this process is still appending to. It
// returns the paths it removed, oldest first per kind. With Retention 0 it
// removes nothing. It stops early with ctx's error; removal errors are
// joined into the returned error and pruning goes on.
func (a *Archive) Prune(ctx context.Context, now time.Time) ([]string, error) {
	if a.opts.Retention <= 0 {
		return nil, nil
	}
	cutoff := now.Add(-a.opts.Retention)
	kinds, err := a.kinds()
	if err != nil {
		return nil, fmt.Errorf("archive: prune: %w", err)
	}
	var removed []string
	var errs []error
	for _, k := range kinds {
		segs, err := listSegments(filepath.Join(a.dir, k))
		if err != nil {
			errs = append(errs, fmt.Errorf("archive: prune: %w", err))
			continue
		}
		for _, s := range segs {
			if err := ctx.Err(); err != nil {
				return removed, errors.Join(append(errs, err)...)
			}
			day, _ := time.Parse(dayLayout, s.day)
			if day.Add(24 * time.Hour).After(cutoff) {
				break // sorted by day: the rest are newer
			}
			a.filesMu.Lock()
			_, open := a.active[s.path]
			if !open {
				err = os.Remove(s.path)
			}
			a.filesMu.Unlock()
			switch {
			case open:
			case err == nil || errors.Is(err, fs.ErrNotExist):
				removed = append(removed, s.path)
			default:
				errs = append(errs, fmt.Errorf("archive: prune: %w", err))
			}
		}
	}
	return removed, errors.Join(errs...)
}

// compact rewrites the closed segment at path as ~1 MiB gzip members (see
// the package doc). The original stays in place unless the rewrite is
// complete, verified and fsynced.
func (a *Archive) compact(path string) (err error) {
	tmp := path + tempSuffix
	f, err := safefs.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer func() {
		if f != nil {
			f.Close()
		}
		if err != nil {
			os.Remove(tmp)
		}
	}()

	var block bytes.Buffer
	zw := gzip.NewWriter(f)
	flush := func() error {
		if block.Len() == 0 {
			return nil
		}
		zw.Reset(f)
		if _, err := zw.Write(block.Bytes()); err != nil {
			return err
		}
		block.Reset()
		return zw.Close()
	}
	srcSum := sha256.New()
	corrupt, err := a.readSegment(context.Background(), path, func(line []byte, _ int64) error {
		srcSum.Write(line)
		srcSum.Write([]byte{'\n'})
		if block.Len() > 0 && block.Len()+len(line)+1 > compactBlockBytes {
			if err := flush(); err != nil {
				return err
			}
		}
		block.Write(line)
		block.WriteByte('\n')
		return nil
	})
	if err != nil {
		return err
	}
	if len(corrupt) > 0 {
		return fmt.Errorf("damaged segment: %w", errors.Join(corrupt...))
	}
	if err := flush(); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	err = f.Close()
	f = nil
	if err != nil {
		return err
	}

	dstSum := sha256.New()
	corrupt, err = a.readSegment(context.Background(), tmp, func(line []byte, _ int64) error {
		dstSum.Write(line)
		dstSum.Write([]byte{'\n'})
		return nil
	})
	if err != nil {
		return err
	}
	if len(corrupt) > 0 || !bytes.Equal(srcSum.Sum(nil), dstSum.Sum(nil)) {
		return fmt.Errorf("compacted copy differs from the original: %w", errors.Join(corrupt...))
	}

	a.filesMu.Lock()
	defer a.filesMu.Unlock()
	if _, err := os.Stat(path); err != nil {
		return err // pruned meanwhile: do not resurrect it
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	return syncDir(filepath.Dir(path))
}
