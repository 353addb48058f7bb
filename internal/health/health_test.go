package health

import (
	"errors"
	"fmt"
	"math"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

var at = time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)

// debian is the script's output on a Debian 12 VM (dash); stat2 is edited
// to round figures.
const debian = `@@loadavg
2.18 3.24 3.88 2/136 28908
@@meminfo
MemTotal: 24684092
MemFree: 23220504
MemAvailable: 24060568
Buffers: 25868
Cached: 702336
@@stat1
cpu  170278 136835 69258 255504 4073 0 3139 12658 0 0
@@stat2
cpu  170298 136845 69268 255534 4083 0 3139 12658 0 0
@@nproc
2
@@df
Filesystem     1024-blocks     Used Available Capacity Mounted on
/dev/vda         264212084 21525968  73975296      23% /
@@end
`

// centos6 has no MemAvailable (kernel 2.6.32), a login banner before the
// first marker, CRLF line ends and an LVM device name.
const centos6 = "Welcome to build-01!\r\nLast login: Sat Nov 28 09:00:00 2026\r\n" +
	"@@loadavg\r\n0.00 0.01 0.05 1/120 3000\r\n" +
	"@@meminfo\r\nMemTotal: 1000000\r\nMemFree: 100000\r\nBuffers: 50000\r\nCached: 250000\r\n" +
	"@@stat1\r\ncpu  100 0 100 800 0 0 0 0 0\r\n" +
	"@@stat2\r\ncpu  190 0 190 820 0 0 0 0 0\r\n" +
	"@@nproc\r\n4\r\n" +
	"@@df\r\nFilesystem         1024-blocks      Used Available Capacity Mounted on\r\n" +
	"/dev/mapper/vg_root-lv_root  51475068  46327536   2526904      95% /\r\n" +
	"@@end\r\n"

// alpine is busybox: df pads differently, the filesystem name has a space
// (an overlay with a quoted source) and an unknown section comes first.
const alpine = `@@future-section
whatever
@@loadavg
12.50 8.00 4.00 9/300 123
@@meminfo
MemTotal: 2000000
MemAvailable: 100000
@@stat1
cpu 1000 0 0 0
@@stat2
cpu 1000 0 0 0
@@nproc
8
@@df
Filesystem           1024-blocks    Used Available Capacity Mounted on
my overlay              1000000    250000    750000  25% /
@@end
`

func TestParse(t *testing.T) {
	const gib = 1024
	tests := []struct {
		name string
		out  string
		want Sample
	}{
		{"debian", debian, Sample{
			At: at, Load1: 2.18, Load5: 3.24, Load15: 3.88, CPUs: 2, LoadPerCPU: 1.09,
			// Δtotal = 20+10+10+30+10 = 80 ticks, Δidle = 30+10 = 40.
			CPUPercent:    50,
			MemTotalBytes: 24684092 * 1024, MemAvailableBytes: 24060568 * 1024,
			MemUsedPercent: 100 * float64(24684092-24060568) / 24684092,
			DiskTotalBytes: 264212084 * 1024, DiskFreeBytes: 73975296 * 1024,
			DiskUsedPercent: 100 * 21525968.0 / (21525968 + 73975296),
		}},
		{"centos6 without MemAvailable", centos6, Sample{
			At: at, Load1: 0, Load5: 0.01, Load15: 0.05, CPUs: 4,
			CPUPercent:    90, // Δtotal 200, Δidle 20
			MemTotalBytes: 1000000 * 1024, MemAvailableBytes: 400000 * 1024, MemUsedPercent: 60,
			DiskTotalBytes: 51475068 * gib, DiskFreeBytes: 2526904 * gib,
			DiskUsedPercent: 100 * 46327536.0 / (46327536 + 2526904),
		}},
		{"busybox, no ticks elapsed", alpine, Sample{
			At: at, Load1: 12.5, Load5: 8, Load15: 4, CPUs: 8, LoadPerCPU: 12.5 / 8,
			CPUPercent:    0,
			MemTotalBytes: 2000000 * 1024, MemAvailableBytes: 100000 * 1024, MemUsedPercent: 95,
			DiskTotalBytes: 1000000 * 1024, DiskFreeBytes: 750000 * 1024, DiskUsedPercent: 25,
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse([]byte(tc.out), at)
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tc.want, got, cmpopts.EquateApprox(0, 1e-9)); d != "" {
				t.Fatalf("(-want +got):\n%s", d)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	drop := func(section string) string { // removes a section's marker and lines
		var b strings.Builder
		skip := false
		for _, l := range strings.SplitAfter(debian, "\n") {
			if strings.HasPrefix(l, "@@") {
				skip = strings.TrimSpace(l) == "@@"+section
			}
			if !skip {
				b.WriteString(l)
			}
		}
		return b.String()
	}
	replace := func(old, new string) string { return strings.Replace(debian, old, new, 1) }
	tests := []struct {
		name, out, section string
		want               error
	}{
		{"empty", "", SectionLoadavg, ErrMissingSection},
		{"banner only", "Welcome\n", SectionLoadavg, ErrMissingSection},
		{"no loadavg", drop("loadavg"), SectionLoadavg, ErrMissingSection},
		{"no meminfo", drop("meminfo"), SectionMeminfo, ErrMissingSection},
		{"no stat1", drop("stat1"), SectionStat1, ErrMissingSection},
		{"no stat2", drop("stat2"), SectionStat2, ErrMissingSection},
		{"no nproc", drop("nproc"), SectionNproc, ErrMissingSection},
		{"nproc failed", replace("@@nproc\n2\n", "@@nproc\n"), SectionNproc, ErrMissingSection},
		{"no df", drop("df"), SectionDf, ErrMissingSection},
		{"cut short", strings.TrimSuffix(debian, "@@end\n"), SectionEnd, ErrMissingSection},
		{"bad load", replace("2.18 3.24", "2.18 x"), SectionLoadavg, ErrMalformed},
		{"negative load", replace("2.18 3.24", "-1 3.24"), SectionLoadavg, ErrMalformed},
		{"short load", replace("2.18 3.24 3.88 2/136 28908", "2.18"), SectionLoadavg, ErrMalformed},
		{"no MemTotal", replace("MemTotal: 24684092\n", ""), SectionMeminfo, ErrMalformed},
		{"bad MemTotal", replace("MemTotal: 24684092", "MemTotal: lots"), SectionMeminfo, ErrMalformed},
		{"huge MemTotal", replace("MemTotal: 24684092", "MemTotal: 99999999999999999999"), SectionMeminfo, ErrMalformed},
		{"no available", replace("MemFree: 23220504\nMemAvailable: 24060568\n", ""), SectionMeminfo, ErrMalformed},
		{"not cpu line", replace("cpu  170278", "intr 170278"), SectionStat1, ErrMalformed},
		{"bad ticks", replace("cpu  170298", "cpu  x"), SectionStat2, ErrMalformed},
		{"backwards", replace("cpu  170298", "cpu  1"), SectionStat2, ErrMalformed},
		{"zero cpus", replace("@@nproc\n2\n", "@@nproc\n0\n"), SectionNproc, ErrMalformed},
		{"nproc text", replace("@@nproc\n2\n", "@@nproc\nnproc: not found\n"), SectionNproc, ErrMalformed},
		{"df no root", replace("      23% /\n", "      23% /home\n"), SectionDf, ErrMalformed},
		{"df garbage", replace("264212084 21525968", "lots some"), SectionDf, ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.out), at)
			var se *SectionError
			if !errors.As(err, &se) || se.Section != tc.section || !errors.Is(err, tc.want) {
				t.Fatalf("Parse = %v, want %v in section %q", err, tc.want, tc.section)
			}
			if !strings.Contains(err.Error(), `"`+tc.section+`"`) {
				t.Fatalf("error %q does not name the section", err)
			}
		})
	}
}

func TestBusy(t *testing.T) {
	tests := []struct {
		cpu, mem float64
		th       Thresholds
		want     bool
	}{
		{50, 50, Thresholds{}, false},
		{90, 90, Thresholds{}, false}, // strictly above
		{90.1, 10, Thresholds{}, true},
		{10, 95, Thresholds{}, true},
		{75, 10, Thresholds{CPUPercent: 70}, true},
		{75, 85, Thresholds{CPUPercent: 80, MemPercent: 80}, true},
		{75, 75, Thresholds{CPUPercent: 80, MemPercent: 80}, false},
		{99, 10, Thresholds{CPUPercent: 100}, false},
	}
	for _, tc := range tests {
		s := Sample{CPUPercent: tc.cpu, MemUsedPercent: tc.mem}
		if got := s.Busy(tc.th); got != tc.want {
			t.Errorf("Sample{CPU %v, mem %v}.Busy(%+v) = %v, want %v", tc.cpu, tc.mem, tc.th, got, tc.want)
		}
	}
}

// TestScriptLocally runs the probe on this machine with every POSIX shell
// found, and checks the sample is plausible.
func TestScriptLocally(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the probe reads Linux /proc")
	}
	ran := 0
	for _, sh := range []string{"sh", "dash", "bash", "busybox"} {
		path, err := exec.LookPath(sh)
		if err != nil {
			continue
		}
		args := []string{"-c", Script()}
		if sh == "busybox" {
			args = append([]string{"sh"}, args...)
		}
		t.Run(sh, func(t *testing.T) {
			start := time.Now()
			out, err := exec.Command(path, args...).Output()
			if err != nil {
				t.Fatalf("%s: %v\n%s", sh, err, out)
			}
			took := time.Since(start)
			s, err := Parse(out, start)
			if err != nil {
				t.Fatalf("%v\noutput:\n%s", err, out)
			}
			t.Logf("%s: %s in %v", sh, summary(s), took.Round(time.Millisecond))
			if took < 150*time.Millisecond {
				t.Errorf("probe took %v: the two /proc/stat reads should be ~200 ms apart", took)
			}
			if s.CPUs < 1 || s.CPUs > 4096 {
				t.Errorf("CPUs = %d", s.CPUs)
			}
			if s.MemTotalBytes < 64<<20 || s.MemAvailableBytes == 0 || s.MemAvailableBytes > s.MemTotalBytes {
				t.Errorf("memory total %d, available %d", s.MemTotalBytes, s.MemAvailableBytes)
			}
			if s.DiskTotalBytes == 0 || s.DiskFreeBytes > s.DiskTotalBytes {
				t.Errorf("disk total %d, free %d", s.DiskTotalBytes, s.DiskFreeBytes)
			}
			for name, p := range map[string]float64{"cpu": s.CPUPercent, "mem": s.MemUsedPercent, "disk": s.DiskUsedPercent} {
				if p < 0 || p > 100 {
					t.Errorf("%s %% = %v", name, p)
				}
			}
			if math.Abs(s.LoadPerCPU-s.Load1/float64(s.CPUs)) > 1e-9 {
				t.Errorf("LoadPerCPU = %v, Load1 %v, CPUs %d", s.LoadPerCPU, s.Load1, s.CPUs)
			}
		})
		ran++
	}
	if ran == 0 {
		t.Skip("no POSIX shell found")
	}
}

func summary(s Sample) string {
	return fmt.Sprintf("cpu %.1f%% (%d CPUs), load/cpu %.2f, mem %.1f%% of %d MiB, disk %.1f%%",
		s.CPUPercent, s.CPUs, s.LoadPerCPU, s.MemUsedPercent, s.MemTotalBytes>>20, s.DiskUsedPercent)
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{debian, centos6, alpine, "", "@@end", "@@loadavg\n1 2 3\n@@end\n",
		strings.Replace(debian, "cpu  170298", "cpu  18446744073709551615", 1)} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, out []byte) {
		s, err := Parse(out, at)
		if err != nil {
			var se *SectionError
			if !errors.As(err, &se) || (!errors.Is(err, ErrMissingSection) && !errors.Is(err, ErrMalformed)) {
				t.Fatalf("error %v is not a SectionError", err)
			}
			return
		}
		for name, p := range map[string]float64{"cpu": s.CPUPercent, "mem": s.MemUsedPercent, "disk": s.DiskUsedPercent} {
			if !(p >= 0 && p <= 100) {
				t.Fatalf("%s %% = %v", name, p)
			}
		}
		if s.CPUs < 1 || s.MemAvailableBytes > s.MemTotalBytes || math.IsNaN(s.LoadPerCPU) || math.IsInf(s.LoadPerCPU, 0) {
			t.Fatalf("implausible sample %+v", s)
		}
		s.Busy(Thresholds{})
	})
}
