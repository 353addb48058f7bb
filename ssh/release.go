package ssh

import (
	"context"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Housekeeping of run markers (see "Runs that can be found again" in the
// package doc): the markers of runs whose results the caller has recorded
// are removed by the Pool, in batches piggybacked on later commands to the
// same machine, and a rare sweep removes what crashes left behind.
const (
	// releaseBatch is how many released markers of one machine wait for
	// a removal: one rm (a fork and an exec on the machine) per batch.
	releaseBatch = 32
	// releaseMax bounds the run ids one command removes.
	releaseMax = 256
	// sweepEvery is how often the markers of one machine are swept (as
	// recorded on the machine, in RunDirBase/.swept).
	sweepEvery = 24 * time.Hour
	// markerKeepDays: the sweep removes only markers older than this
	// (find -mtime +6: modified more than six whole days ago).
	markerKeepDays = 6
	// flushTimeout bounds the removal of released markers when the Pool
	// closes.
	flushTimeout = 2 * time.Second
)

// markerRef names the marker of a run Run saw end: its machine and login
// user (home) and its run id. The zero value names none.
type markerRef struct {
	home, runID string
}

// markerHome is the housekeeping state of the markers in one login user's
// home on one machine. Guarded by Pool.mu.
type markerHome struct {
	pending []string  // released run ids whose markers are still there
	hp      *hostPool // the latest connections to it (for the flush on Close)
	// sweptAt is the last sweep as known here: reported by the machine,
	// or started by this Pool; zero when unknown.
	sweptAt  time.Time
	sweepDue bool
}

func homeKey(t *Target) string { return t.User + "@" + t.addr() }

// home returns the state of t's home; p.mu must be held.
func (p *Pool) home(key string) *markerHome {
	if p.homes == nil {
		p.homes = map[string]*markerHome{}
	}
	h := p.homes[key]
	if h == nil {
		h = &markerHome{}
		p.homes[key] = h
	}
	return h
}

// ReleaseRun tells p that the result of the run that produced res (a Run
// of a Command with a RunID) is durably recorded: nobody will need its
// marker on the machine again, neither to refuse a second copy nor to
// Settle it. p removes such markers with a later command it runs for the
// same login user on the same machine — once releaseBatch (32) have
// accumulated, one rm for up to 256 of them, prepended to that command's
// exec string while it fits MaxCommandLineBytes — and, best effort and
// within 2 s, on open connections when p closes.
//
// It does nothing for a nil res, a Result of a run without a marker, or
// one whose login shell Run did not see end by itself (the connection was
// lost: Result.Recovered, or a Settle decided its fate), or whose exec was
// sent twice (a session that failed to open): such markers may still
// keep a late copy from starting, and stay until the sweep removes them,
// more than six days later. Call it at most once per Result, after the
// result is stored where a restarted caller finds it.
func (p *Pool) ReleaseRun(res *Result) {
	if res == nil || res.marker == (markerRef{}) {
		return
	}
	p.mu.Lock()
	h := p.home(res.marker.home)
	h.pending = append(h.pending, res.marker.runID)
	p.mu.Unlock()
	res.marker = markerRef{}
}

// housekeeping returns the text to prepend to an exec string of room
// spare bytes for t's home: the removal of released markers once a batch
// is ready, and a sweep when one is due. ids and sweep say what the text
// holds, for giveBack.
func (p *Pool) housekeeping(t *Target, hp *hostPool, room int) (text string, ids []string, sweep bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	h := p.home(homeKey(t))
	h.hp = hp
	var b strings.Builder
	if h.sweepDue {
		s := sweepScript(time.Now())
		if len(s) < room {
			b.WriteString(s)
			room -= len(s)
			h.sweepDue, sweep = false, true
			h.sweptAt = time.Now()
		}
	}
	if len(h.pending) >= releaseBatch {
		ids = takeFitting(&h.pending, room-len(releasePrefix)-len(releaseSuffix))
		if len(ids) > 0 {
			b.WriteString(releaseScript(ids))
		}
	}
	return b.String(), ids, sweep
}

// takeFitting removes from *pending and returns up to releaseMax ids whose
// removal fits room bytes.
func takeFitting(pending *[]string, room int) []string {
	n, size := 0, 0
	for n < len(*pending) && n < releaseMax && size+len((*pending)[n])+1 <= room {
		size += len((*pending)[n]) + 1
		n++
	}
	ids := append([]string(nil), (*pending)[:n]...)
	*pending = append((*pending)[:0], (*pending)[n:]...)
	return ids
}

// giveBack returns what housekeeping took for a command that was never
// sent.
func (p *Pool) giveBack(t *Target, ids []string, sweep bool) {
	if len(ids) == 0 && !sweep {
		return
	}
	p.mu.Lock()
	h := p.home(homeKey(t))
	h.pending = append(h.pending, ids...)
	if sweep {
		h.sweepDue, h.sweptAt = true, time.Time{}
	}
	p.mu.Unlock()
}

// noteSwept records the last sweep time a marked run's shell read from
// the machine (Unix seconds, "" when the machine has none): a sweep is
// due when it is older than sweepEvery and this Pool has not started one
// since.
func (p *Pool) noteSwept(t *Target, stamp string) {
	now := time.Now()
	var at time.Time
	if sec, err := strconv.ParseInt(stamp, 10, 64); err == nil && sec > 0 {
		at = time.Unix(sec, 0)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	h := p.home(homeKey(t))
	if at.After(h.sweptAt) {
		h.sweptAt = at
	}
	if now.Sub(h.sweptAt) >= sweepEvery || h.sweptAt.After(now.Add(sweepEvery)) {
		h.sweepDue = true
	}
}

// cdRunDir enters RunDirBase for the removals of releaseScript and
// sweepScript, and fails (so that nothing is removed) when RunDirBase or
// one of its parents under the home is a symbolic link: removing entries
// through a link would delete files of the directory it points to, which
// are not markers.
const cdRunDir = `{ _rd="$HOME"; for _c in .cache .cache/rediacc .cache/rediacc/run; do [ ! -L "$_rd/$_c" ] || exit 0; done; cd "$HOME/` + RunDirBase + `" 2>/dev/null; }`

// releasePrefix and releaseSuffix surround the run ids of releaseScript.
const (
	releasePrefix = `(` + cdRunDir + ` && exec rm -rf --`
	releaseSuffix = `) 2>/dev/null` + "\n"
)

// releaseScript removes the markers of ids (valid run ids: no quoting
// needed, none starts with '.') with one rm, in the foreground.
func releaseScript(ids []string) string {
	return releasePrefix + " " + strings.Join(ids, " ") + releaseSuffix
}

// sweepScript returns the backstop that removes markers nobody released
// (their worker crashed, their exec was retried, they were settled): in
// the background, it records now as the last sweep in RunDirBase/.swept,
// lists with one find the entries of RunDirBase modified more than six
// days ago, and removes those whose run is over — a file marker with an
// exit status ("x") or a Settle verdict ("s", "g"), a directory marker
// (older versions, Settle's claims) with a status, claimed, stopped or gone
// file — with one rm per 256. Its cost is one find over the entries left
// in RunDirBase (leftovers and runs in flight, not every run ever: released
// markers are gone), once per sweepEvery per machine. A marker of a run
// still going, or killed with nobody settling it, stays.
func sweepScript(now time.Time) string {
	return `(` + cdRunDir + ` || exit 0
echo ` + strconv.FormatInt(now.Unix(), 10) + ` >|.swept
find . -mindepth 1 -maxdepth 1 ! -name '.*' -mtime +` + strconv.Itoa(markerKeepDays) + ` | {
set --
while IFS= read -r _e; do
_e=${_e#./} _f=
if [ -d "$_e" ]; then for _k in status claimed stopped gone; do [ -f "$_e/$_k" ] && _f=1; done
else while read -r _k _x; do case $_k in x|s|g) _f=1;; esac; done <"$_e"; fi
[ -n "$_f" ] || continue
set -- "$@" "$_e"
[ $# -lt 256 ] || { rm -rf -- "$@"; set --; }
done
[ $# -eq 0 ] || rm -rf -- "$@"
}) </dev/null >/dev/null 2>&1 &
`
}

// flushMarkers removes, on connections still open, the released markers
// not removed yet (and sweeps where due), within flushTimeout; for Close.
// Homes without an open connection keep them for the sweep.
func (p *Pool) flushMarkers() {
	type job struct {
		c      *conn
		script string
	}
	var jobs []job
	p.mu.Lock()
	for _, h := range p.homes {
		if (len(h.pending) == 0 && !h.sweepDue) || h.hp == nil {
			continue
		}
		var c *conn
		for _, x := range h.hp.conns {
			if !x.dead && !x.retiring && x.inflight < x.capacity {
				c = x
				break
			}
		}
		if c == nil {
			continue
		}
		var b strings.Builder
		if h.sweepDue {
			b.WriteString(sweepScript(time.Now()))
			h.sweepDue = false
		}
		for len(h.pending) > 0 {
			b.WriteString(releaseScript(takeFitting(&h.pending, MaxCommandLineBytes/4)))
		}
		b.WriteString("exit 0")
		c.inflight++
		p.inflight++
		jobs = append(jobs, job{c, b.String()})
	}
	p.mu.Unlock()
	if len(jobs) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), flushTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, j := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer p.release(j.c)
			p.runQuiet(ctx, j.c, j.script)
		}()
	}
	wg.Wait()
}

// runQuiet runs script on c and waits for it to end or ctx to be done,
// discarding its output.
func (p *Pool) runQuiet(ctx context.Context, c *conn, script string) {
	deadline, _ := ctx.Deadline()
	st, err := c.start(script, false, time.Until(deadline))
	if err != nil {
		return
	}
	defer st.sess.Close()
	var readers sync.WaitGroup
	readers.Add(2)
	go func() { defer readers.Done(); _, _ = io.Copy(io.Discard, st.stdout) }()
	go func() { defer readers.Done(); _, _ = io.Copy(io.Discard, st.stderr) }()
	done := make(chan struct{})
	go func() { _ = st.sess.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		c.drop(ErrPoolClosed) // ends the session even when the server does not answer
		<-done
	}
	readers.Wait()
}
