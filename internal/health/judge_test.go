package health

import (
	"fmt"
	"math"
	"testing"
	"time"
)

var j0 = time.Date(2030, 1, 2, 14, 0, 0, 0, time.UTC)

// feed judges cpu samples taken one minute apart.
func feed(r Rules, cpus ...float64) []Judgement {
	var out []Judgement
	var j Judgement
	for i, c := range cpus {
		j = r.Next(j, Sample{At: j0.Add(time.Duration(i) * time.Minute), CPUPercent: c, MemUsedPercent: 10})
		out = append(out, j)
	}
	return out
}

func TestJudgeOneSampleNeverBusy(t *testing.T) {
	js := feed(Rules{Smoothing: 2 * time.Minute}, 100)
	if js[0].Busy || js[0].CPUPercent != 100 || js[0].Samples != 1 {
		t.Fatalf("one sample of 100 %%: %+v", js[0])
	}
}

func TestJudgeSpikeIsSmoothed(t *testing.T) {
	// A quiet machine with one 200 ms spike to 98 % is not busy.
	js := feed(Rules{Smoothing: 2 * time.Minute}, 20, 20, 20, 98, 20, 20)
	for i, j := range js {
		if j.Busy {
			t.Fatalf("sample %d: busy on a single spike: %+v", i, j)
		}
	}
	// The average moved by 1-exp(-1/2) of the spike.
	want := 20 + (1-math.Exp(-0.5))*78
	if got := js[3].CPUPercent; math.Abs(got-want) > 1e-9 {
		t.Fatalf("average after the spike %.3f, want %.3f", got, want)
	}
}

func TestJudgeSustainedLoadAndHysteresis(t *testing.T) {
	r := Rules{Smoothing: 2 * time.Minute}
	js := feed(r, 98, 98, 98, 85, 85, 85, 85, 70, 70)
	if js[0].Busy || !js[1].Busy {
		t.Fatalf("sustained 98 %%: busy %v then %v, want false then true", js[0].Busy, js[1].Busy)
	}
	if !js[1].Since.Equal(j0.Add(time.Minute)) || js[1].Why != "CPU 98 % > 90 %" {
		t.Fatalf("busy since %v why %q", js[1].Since, js[1].Why)
	}
	// 85 % is below 90 but inside the band: still busy, same Since.
	for i := 3; i <= 6; i++ {
		if !js[i].Busy || !js[i].Since.Equal(j0.Add(time.Minute)) {
			t.Fatalf("sample %d (avg %.1f): busy %v since %v, want busy since the start", i, js[i].CPUPercent, js[i].Busy, js[i].Since)
		}
	}
	if want := fmt.Sprintf("CPU %.0f %% (busy until below 80 %%)", js[6].CPUPercent); js[6].Why != want {
		t.Fatalf("inside the band: why %q", js[6].Why)
	}
	// Below 80 %: free again.
	last := js[len(js)-1]
	if last.Busy || !last.Since.IsZero() || last.Why != "" {
		t.Fatalf("after 70 %%: %+v", last)
	}
}

func TestJudgeMemoryAndThresholds(t *testing.T) {
	r := Rules{Thresholds: Thresholds{CPUPercent: 50, MemPercent: 60}, Hysteresis: -1}
	var j Judgement
	for i := range 2 {
		j = r.Next(j, Sample{At: j0.Add(time.Duration(i) * time.Second), CPUPercent: 10, MemUsedPercent: 61})
	}
	if !j.Busy || j.Why != "memory 61 % > 60 %" {
		t.Fatalf("memory above 60: %+v", j)
	}
	j = r.Next(j, Sample{At: j0.Add(time.Minute), CPUPercent: 10, MemUsedPercent: 59.9})
	if j.Busy {
		t.Fatalf("no hysteresis band: still busy at 59.9 %%: %+v", j)
	}
}

func TestJudgeStaleAndOutOfOrder(t *testing.T) {
	r := Rules{Smoothing: time.Minute, Stale: 5 * time.Minute}
	js := feed(r, 99, 99)
	j := js[1]
	if !j.Busy {
		t.Fatal("not busy after two samples of 99 %")
	}
	// Out of order: ignored.
	if got := r.Next(j, Sample{At: j0, CPUPercent: 0}); got != j {
		t.Fatalf("an older sample changed the judgement: %+v", got)
	}
	// After a long gap the average starts again from one sample.
	got := r.Next(j, Sample{At: j.At.Add(time.Hour), CPUPercent: 10})
	if got.Samples != 1 || got.CPUPercent != 10 || got.Busy {
		t.Fatalf("after a stale gap: %+v", got)
	}
}

// Samples close together — several workers probing a machine as they start,
// or probes right after one another — never make a machine busy on their
// own, however high: the average must span half the time constant. Found
// when a second worker's first probe, 1.2 s after the first worker's, held
// priority-3 work on a loaded host until aging.
func TestJudgeBurstOfSamplesIsNotSustained(t *testing.T) {
	r := Rules{Smoothing: 2 * time.Minute}
	var j Judgement
	for i := range 10 { // ten probes of 100 % within 9 s
		j = r.Next(j, Sample{At: j0.Add(time.Duration(i) * time.Second), CPUPercent: 100, MemUsedPercent: 10})
		if j.Busy {
			t.Fatalf("busy after %d samples %s apart: %+v", i+1, time.Second, j)
		}
	}
	j = r.Next(j, Sample{At: j0.Add(time.Minute), CPUPercent: 100, MemUsedPercent: 10})
	if !j.Busy || !j.Since.Equal(j0.Add(time.Minute)) {
		t.Fatalf("100 %% sustained over τ/2: %+v, want busy since %v", j, j0.Add(time.Minute))
	}
	// A judgement stored before First was kept counts from its last sample.
	old := Judgement{CPUPercent: 100, MemPercent: 10, Samples: 3, At: j0}
	if j := r.Next(old, Sample{At: j0.Add(time.Second), CPUPercent: 100, MemUsedPercent: 10}); j.Busy || !j.First.Equal(j0) {
		t.Fatalf("old judgement + 1 s: %+v, want not busy, first %v", j, j0)
	}
	// No smoothing: only the sample count applies.
	j = Judgement{}
	for i := range 2 {
		j = Rules{Smoothing: 0}.Next(j, Sample{At: j0.Add(time.Duration(i) * time.Second), CPUPercent: 100, MemUsedPercent: 10})
	}
	if !j.Busy {
		t.Fatalf("no smoothing, 2 samples of 100 %%: %+v, want busy", j)
	}
}
