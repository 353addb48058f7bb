// Package health probes a machine's load over one SSH session: [Script] is a
// POSIX sh script that prints, in one go, everything needed for a [Sample],
// and [Parse] turns its output into one.
//
// The script reads /proc/loadavg, MemTotal and MemAvailable from
// /proc/meminfo, the first ("cpu") line of /proc/stat twice about 200 ms
// apart, the number of online CPUs (nproc, else getconf
// _NPROCESSORS_ONLN) and the size and free space of / (df -Pk /). Each part
// is preceded by a marker line "@@name"; the output ends with "@@end". Text
// before the first marker (a login shell's banner) and unknown sections are
// ignored, so newer scripts can add sections. It needs Linux /proc, and
// otherwise only POSIX sh builtins, sleep, nproc or getconf, and df: it runs
// on Debian/Ubuntu (dash, bash), RHEL and Alpine (busybox).
//
// The probe takes about 0.2 s (1 s where sleep does not accept fractions).
package health

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Section names, as they appear in the script's markers ("@@loadavg") and in
// [SectionError].
const (
	SectionLoadavg = "loadavg" // /proc/loadavg
	SectionMeminfo = "meminfo" // selected /proc/meminfo lines
	SectionStat1   = "stat1"   // first line of /proc/stat
	SectionStat2   = "stat2"   // the same, ~200 ms later
	SectionNproc   = "nproc"   // online CPUs
	SectionDf      = "df"      // df -Pk /
	SectionEnd     = "end"     // end of output; missing means truncated
)

// script is kept free of anything but POSIX sh, and forks only where no
// builtin will do (sleep, nproc, df).
const script = `LC_ALL=C; export LC_ALL
echo '@@loadavg'
read -r l < /proc/loadavg && echo "$l"
echo '@@meminfo'
while read -r k v _; do
  case $k in MemTotal:|MemAvailable:|MemFree:|Buffers:|Cached:) echo "$k $v";; esac
done < /proc/meminfo
echo '@@stat1'
read -r l < /proc/stat && echo "$l"
sleep 0.2 2>/dev/null || sleep 1
echo '@@stat2'
read -r l < /proc/stat && echo "$l"
echo '@@nproc'
nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null
echo '@@df'
df -Pk / 2>/dev/null
echo '@@end'
`

// Script returns the probe script: POSIX sh, to run in one SSH session (or
// locally with sh -c); its standard output is what [Parse] reads. It
// exits 0 even when a part fails; Parse then names the missing section.
func Script() string { return script }

// Sample is one health probe of a machine.
type Sample struct {
	// At is when the sample was taken (as given to [Parse]).
	At time.Time
	// CPUPercent is the share of CPU time not idle (idle and iowait count
	// as idle) over the ~200 ms between the two /proc/stat reads, across
	// all CPUs: 0–100.
	CPUPercent float64
	// Load1, Load5, Load15 are the 1, 5 and 15 minute load averages.
	Load1, Load5, Load15 float64
	// CPUs is the number of online CPUs (≥ 1).
	CPUs int
	// LoadPerCPU is Load1 / CPUs.
	LoadPerCPU float64
	// MemTotalBytes is MemTotal. MemAvailableBytes is MemAvailable (on
	// kernels before 3.14, which lack it, MemFree + Buffers + Cached),
	// never more than MemTotalBytes.
	MemTotalBytes, MemAvailableBytes uint64
	// MemUsedPercent is 100 × (total − available) / total: 0–100.
	MemUsedPercent float64
	// DiskTotalBytes is the size of the filesystem holding /;
	// DiskFreeBytes is the space available to unprivileged users.
	DiskTotalBytes, DiskFreeBytes uint64
	// DiskUsedPercent is df's Capacity, unrounded: 100 × used / (used +
	// available), so blocks reserved for root count as neither: 0–100.
	DiskUsedPercent float64
}

// Default thresholds above which a machine is busy.
const (
	DefaultCPUPercent = 90.0
	DefaultMemPercent = 90.0
)

// Thresholds say when a machine is too busy to take new low-priority work.
// A zero field means its default.
type Thresholds struct {
	// CPUPercent: busy when [Sample].CPUPercent is above it. Default
	// [DefaultCPUPercent] (90).
	CPUPercent float64
	// MemPercent: busy when [Sample].MemUsedPercent is above it. Default
	// [DefaultMemPercent] (90).
	MemPercent float64
}

// Busy reports whether s is above either threshold of th (strictly above;
// zero fields of th mean the defaults, 90 % each).
func (s Sample) Busy(th Thresholds) bool {
	if th.CPUPercent == 0 {
		th.CPUPercent = DefaultCPUPercent
	}
	if th.MemPercent == 0 {
		th.MemPercent = DefaultMemPercent
	}
	return s.CPUPercent > th.CPUPercent || s.MemUsedPercent > th.MemPercent
}

// Sentinel errors, wrapped in a [*SectionError].
var (
	// ErrMissingSection: the output lacks a section (its command failed,
	// or the output was cut short).
	ErrMissingSection = errors.New("missing section")
	// ErrMalformed: a section is present but cannot be parsed.
	ErrMalformed = errors.New("malformed section")
)

// SectionError is the error [Parse] returns: which section is missing or
// malformed. Err wraps [ErrMissingSection] or [ErrMalformed].
type SectionError struct {
	Section string // one of the Section* names
	Err     error
}

// Error implements error.
func (e *SectionError) Error() string {
	return fmt.Sprintf("health: section %q: %v", e.Section, e.Err)
}

// Unwrap returns e.Err.
func (e *SectionError) Unwrap() error { return e.Err }

func malformed(section, format string, args ...any) error {
	return &SectionError{Section: section, Err: fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))}
}

// splitSections maps each section name to its lines (trimmed, empty lines
// dropped). The first occurrence of a section wins.
func splitSections(out []byte) map[string][]string {
	secs := map[string][]string{}
	cur := ""
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if name, ok := strings.CutPrefix(line, "@@"); ok && name != "" && !strings.ContainsAny(name, " \t") {
			if _, seen := secs[name]; seen {
				cur = "" // a repeated section: ignore its lines
				continue
			}
			cur = name
			secs[cur] = []string{}
			continue
		}
		if cur != "" && line != "" {
			secs[cur] = append(secs[cur], line)
		}
	}
	return secs
}

// Parse reads the output of [Script] taken at time at. Errors are
// [*SectionError]s naming the first section (in the script's order) that is
// missing ([ErrMissingSection]: absent or empty) or malformed
// ([ErrMalformed]). Parse never panics, whatever the input.
func Parse(out []byte, at time.Time) (Sample, error) {
	secs := splitSections(out)
	for _, name := range []string{SectionLoadavg, SectionMeminfo, SectionStat1, SectionStat2, SectionNproc, SectionDf} {
		if len(secs[name]) == 0 {
			return Sample{}, &SectionError{Section: name, Err: ErrMissingSection}
		}
	}
	if _, ok := secs[SectionEnd]; !ok {
		return Sample{}, &SectionError{Section: SectionEnd, Err: fmt.Errorf("%w (output cut short?)", ErrMissingSection)}
	}

	s := Sample{At: at}
	var err error
	if s.Load1, s.Load5, s.Load15, err = parseLoadavg(secs[SectionLoadavg]); err != nil {
		return Sample{}, err
	}
	if s.MemTotalBytes, s.MemAvailableBytes, err = parseMeminfo(secs[SectionMeminfo]); err != nil {
		return Sample{}, err
	}
	busy1, total1, err := parseStat(SectionStat1, secs[SectionStat1])
	if err != nil {
		return Sample{}, err
	}
	busy2, total2, err := parseStat(SectionStat2, secs[SectionStat2])
	if err != nil {
		return Sample{}, err
	}
	if total2 < total1 || busy2 < busy1 {
		return Sample{}, malformed(SectionStat2, "CPU counters went backwards")
	}
	if dt := total2 - total1; dt > 0 {
		s.CPUPercent = clampPercent(100 * float64(busy2-busy1) / float64(dt))
	}
	n, err := strconv.Atoi(secs[SectionNproc][0])
	if err != nil || n < 1 || n > 1<<20 {
		return Sample{}, malformed(SectionNproc, "%q is not a CPU count", secs[SectionNproc][0])
	}
	s.CPUs = n
	s.LoadPerCPU = s.Load1 / float64(n)
	if s.DiskTotalBytes, s.DiskFreeBytes, s.DiskUsedPercent, err = parseDf(secs[SectionDf]); err != nil {
		return Sample{}, err
	}
	if s.MemTotalBytes > 0 {
		s.MemUsedPercent = clampPercent(100 * float64(s.MemTotalBytes-s.MemAvailableBytes) / float64(s.MemTotalBytes))
	}
	return s, nil
}

func clampPercent(p float64) float64 {
	switch {
	case math.IsNaN(p) || p < 0:
		return 0
	case p > 100:
		return 100
	}
	return p
}

func parseLoadavg(lines []string) (l1, l5, l15 float64, err error) {
	f := strings.Fields(lines[0])
	if len(f) < 3 {
		return 0, 0, 0, malformed(SectionLoadavg, "%q has fewer than 3 fields", lines[0])
	}
	var v [3]float64
	for i := range v {
		x, err := strconv.ParseFloat(f[i], 64)
		if err != nil || x < 0 || math.IsInf(x, 0) || math.IsNaN(x) {
			return 0, 0, 0, malformed(SectionLoadavg, "%q is not a load average", f[i])
		}
		v[i] = x
	}
	return v[0], v[1], v[2], nil
}

// kib parses a count of KiB into bytes.
func kib(s string) (uint64, bool) {
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil || v > math.MaxUint64/1024 {
		return 0, false
	}
	return v * 1024, true
}

func parseMeminfo(lines []string) (total, avail uint64, err error) {
	vals := map[string]uint64{}
	for _, line := range lines {
		f := strings.Fields(line) // "MemTotal: 24684092" (the script drops "kB")
		if len(f) < 2 {
			continue
		}
		k := strings.TrimSuffix(f[0], ":")
		if _, dup := vals[k]; dup {
			continue
		}
		v, ok := kib(f[1])
		if !ok {
			return 0, 0, malformed(SectionMeminfo, "%s: %q is not a size in kB", k, f[1])
		}
		vals[k] = v
	}
	total, ok := vals["MemTotal"]
	if !ok || total == 0 {
		return 0, 0, malformed(SectionMeminfo, "no MemTotal")
	}
	avail, ok = vals["MemAvailable"]
	if !ok {
		free, ok := vals["MemFree"]
		if !ok {
			return 0, 0, malformed(SectionMeminfo, "neither MemAvailable nor MemFree")
		}
		avail = free
		for _, k := range []string{"Buffers", "Cached"} {
			if v := vals[k]; avail <= math.MaxUint64-v {
				avail += v
			}
		}
	}
	return total, min(avail, total), nil
}

// parseStat reads "cpu user nice system idle iowait irq softirq steal guest
// guest_nice" (in clock ticks) and returns the busy and total ticks. guest
// and guest_nice are already counted in user and nice. Kernels before 2.6
// have only the first four counters.
func parseStat(section string, lines []string) (busy, total uint64, err error) {
	f := strings.Fields(lines[0])
	if len(f) < 5 || f[0] != "cpu" {
		return 0, 0, malformed(section, "%q is not the cpu line of /proc/stat", lines[0])
	}
	var idle uint64
	for i, s := range f[1:min(len(f), 9)] {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return 0, 0, malformed(section, "%q is not a tick count", s)
		}
		if total > math.MaxUint64-v {
			return 0, 0, malformed(section, "tick counts overflow")
		}
		total += v
		if i == 3 || i == 4 { // idle, iowait
			idle += v
		}
	}
	return total - idle, total, nil
}

func parseDf(lines []string) (total, free uint64, usedPercent float64, err error) {
	// "Filesystem 1024-blocks Used Available Capacity Mounted on", then one
	// line per filesystem; the name may contain spaces, so count from the
	// end: ... blocks used available capacity mountpoint.
	for _, line := range lines {
		f := strings.Fields(line)
		if len(f) < 6 || f[len(f)-1] != "/" {
			continue
		}
		n := len(f)
		t, ok1 := kib(f[n-5])
		u, ok2 := kib(f[n-4])
		a, ok3 := kib(f[n-3])
		if !ok1 || !ok2 || !ok3 {
			return 0, 0, 0, malformed(SectionDf, "%q: sizes are not numbers of KiB", line)
		}
		if u+a > 0 && u <= math.MaxUint64-a {
			usedPercent = clampPercent(100 * float64(u) / float64(u+a))
		}
		return t, a, usedPercent, nil
	}
	return 0, 0, 0, malformed(SectionDf, "no line for the filesystem mounted on /")
}
