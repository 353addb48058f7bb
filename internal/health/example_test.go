package health_test

import (
	"fmt"
	"time"

	"github.com/rediacc/rediacc/internal/health"
)

func ExampleParse() {
	// What health.Script() printed on a machine (after a login banner).
	out := `Welcome!
@@loadavg
3.10 2.50 2.00 4/200 999
@@meminfo
MemTotal: 8000000
MemAvailable: 400000
@@stat1
cpu  1000 0 1000 8000 0 0 0 0 0 0
@@stat2
cpu  1090 0 1090 8020 0 0 0 0 0 0
@@nproc
4
@@df
Filesystem     1024-blocks     Used Available Capacity Mounted on
/dev/sda1         10000000  7500000   2500000      75% /
@@end
`
	s, err := health.Parse([]byte(out), time.Now())
	if err != nil {
		panic(err)
	}
	fmt.Printf("cpu %.0f%%, load/cpu %.2f, mem %.0f%%, disk %.0f%%, busy %v\n",
		s.CPUPercent, s.LoadPerCPU, s.MemUsedPercent, s.DiskUsedPercent, s.Busy(health.Thresholds{}))
	// Output:
	// cpu 90%, load/cpu 0.78, mem 95%, disk 75%, busy true
}
