package forecast

import (
	"math"
	"testing"
	"time"
)

const mib = 1 << 20

var t0 = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

func sec(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }

// feed gives the tracker ws(s) MiB every step seconds from a to b, and returns the warnings' times.
func feed(tr *Tracker, a, b, step float64, limit uint64, ws func(s float64) float64) []Growth {
	var warned []Growth
	for s := a; s <= b+1e-9; s += step {
		tr.Add(sec(s), uint64(ws(s)*mib), limit*mib)
		if g, ok := tr.Warn(); ok {
			warned = append(warned, g)
		}
	}
	return warned
}

func TestForecast(t *testing.T) {
	type want struct {
		warnings int
		rate     float64 // MiB/s of the first warning, ±10 %
		since    float64 // its Since (seconds), ±1.5
	}
	tests := []struct {
		name  string
		limit uint64
		until float64
		step  float64
		ws    func(s float64) float64
		want  want
	}{
		{"a steady leak of 2 MiB/s from 60 MiB: warned once, when the climb is 15 s and 15 MiB long", 300, 60, 1,
			func(s float64) float64 { return 60 + 2*s },
			want{warnings: 1, rate: 2, since: 0}},
		{"flat for a minute, then 2 MiB/s: the episode starts with the climb", 300, 120, 1,
			func(s float64) float64 {
				if s < 60 {
					return 60
				}
				return 60 + 2*(s-60)
			},
			want{warnings: 1, rate: 2, since: 60}},
		{"sampled ten times a second: the same", 300, 60, 0.1,
			func(s float64) float64 { return 60 + 2*s },
			want{warnings: 1, rate: 2, since: 0}},
		{"a slow leak (3 MiB a minute) far from the limit: no warning within 10 minutes of the limit yet", 3000, 300, 1,
			func(s float64) float64 { return 600 + 0.05*s },
			want{warnings: 0}},
		{"a request that takes 80 MiB within 5 s and gives it back: no warning", 300, 120, 1,
			func(s float64) float64 {
				if s >= 30 && s < 40 {
					return 60 + 16*math.Min(s-30, 5)
				}
				return 60
			},
			want{warnings: 0}},
		{"a step that stays flat (a cache filled once): no warning", 300, 120, 1,
			func(s float64) float64 {
				if s >= 30 {
					return 150
				}
				if s >= 20 {
					return 60 + 9*(s-20)
				}
				return 60
			},
			want{warnings: 0}},
		{"a leak that recycling keeps under the limit (sawtooth giving back half): one episode, one warning", 300, 120, 1,
			func(s float64) float64 {
				m := math.Mod(s, 40)
				base := 60.0
				if s >= 40 {
					base = 100 // half of the 80 MiB climb came back
				}
				return base + 2*m
			},
			want{warnings: 1, rate: 2, since: 0}},
		{"a leak killed back to its floor: a new episode, warned again", 300, 120, 1,
			func(s float64) float64 { return 60 + 4*math.Mod(s, 55) },
			want{warnings: 2, rate: 4, since: 0}},
		{"no limit: no forecast", 0, 60, 1,
			func(s float64) float64 { return 60 + 2*s },
			want{warnings: 0}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := New(Options{})
			got := feed(tr, 0, tc.until, tc.step, tc.limit, tc.ws)
			if len(got) != tc.want.warnings {
				t.Fatalf("%d warnings, want %d: %+v", len(got), tc.want.warnings, got)
			}
			if len(got) == 0 {
				return
			}
			g := got[0]
			if r := g.Rate / mib; math.Abs(r-tc.want.rate) > tc.want.rate/10 {
				t.Errorf("rate %.2f MiB/s, want %.2f", r, tc.want.rate)
			}
			// Since is the last sample within the noise (4 MiB here) of the floor.
			lag := 4 / tc.want.rate
			if s := g.Since.Sub(t0).Seconds(); s < tc.want.since || s > tc.want.since+lag+0.5 {
				t.Errorf("since %.1fs, want %.1fs (+ %.1fs at most)", s, tc.want.since, lag)
			}
			wantLeft := (float64(tc.limit)*mib - float64(g.Now)) / g.Rate
			if d := g.ToLimit.Seconds(); math.Abs(d-wantLeft) > 1 {
				t.Errorf("to the limit %.1fs, want %.1fs", d, wantLeft)
			}
		})
	}
}

// TestWarnTime checks when the first warning of a steady leak comes: as soon as the climb is
// MinSpan long and MinGrowth of the limit high, not later.
func TestWarnTime(t *testing.T) {
	tr := New(Options{})
	for s := 0.0; s <= 60; s++ {
		tr.Add(sec(s), uint64((60+2*s)*mib), 300*mib)
		if _, ok := tr.Warn(); ok {
			if s < 14 || s > 16.5 {
				t.Fatalf("warned at %.0fs, want about 15 s", s)
			}
			return
		}
	}
	t.Fatal("no warning")
}

func TestFast(t *testing.T) {
	tests := []struct {
		name string
		ws   []float64 // MiB at 1 Hz from 0 s, limit 300 MiB
		at   float64   // asked at
		woke float64   // a notification at (negative: none)
		want bool
	}{
		{"idle", []float64{60, 60, 61, 60}, 3.5, -1, false},
		{"above 80 % of the limit", []float64{60, 200, 241}, 2.5, -1, true},
		{"grew 2 % of the limit within a second", []float64{60, 60, 67}, 2.5, -1, true},
		{"grew 1 %: slow", []float64{60, 61, 64}, 2.5, -1, false},
		{"held for 2 s after it passed", []float64{60, 67, 67, 67}, 2.9, -1, true},
		{"over after 2 s", []float64{60, 67, 67, 67, 67}, 4.1, -1, false},
		{"a notification", []float64{60, 60}, 1.5, 1.2, true},
		{"a notification's hold is over", []float64{60, 60, 60, 60}, 3.5, 1.2, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := New(Options{})
			for i, ws := range tc.ws {
				tr.Add(sec(float64(i)), uint64(ws*mib), 300*mib)
			}
			if tc.woke >= 0 {
				tr.Woke(sec(tc.woke))
			}
			if got := tr.Fast(sec(tc.at)); got != tc.want {
				t.Errorf("Fast at %.1fs = %v, want %v", tc.at, got, tc.want)
			}
		})
	}
}

// TestFastTenHertz: at 10 Hz, a climb of 2 % of the limit over a second is seen even though each
// step is small.
func TestFastTenHertz(t *testing.T) {
	tr := New(Options{})
	for i := 0; i <= 10; i++ {
		tr.Add(sec(float64(i)/10), uint64((60+0.7*float64(i))*mib), 300*mib)
	}
	if !tr.Fast(sec(1)) {
		t.Error("7 MiB in a second (2.3 % of 300 MiB), sampled at 10 Hz: not fast")
	}
}

// TestGrowthAt: the growth that led to a death, asked after the death's samples came in.
func TestGrowthAt(t *testing.T) {
	tests := []struct {
		name   string
		until  float64 // fed at 1 Hz from 0 s to until
		ws     func(s float64) float64
		at     float64 // asked at
		ok     bool
		rate   float64 // MiB/s, ±10 %
		since  float64 // ±3 s
		nowMiB float64 // the working set at its last sample up to at, ±3
	}{
		{"a leak of 2 MiB/s killed back to its floor at 100 s: the ended episode", 105,
			func(s float64) float64 {
				if s > 100 {
					return 60
				}
				return 60 + 2*s
			}, 100.5, true, 2, 0, 260},
		{"flat for 30 s, then 3 MiB/s, asked as the climb goes on: the current episode", 70,
			func(s float64) float64 { return 60 + 3*math.Max(0, s-30) }, 70, true, 3, 30, 180},
		{"a leak that lost a little after the death: fitted up to the death only", 80,
			func(s float64) float64 {
				if s > 60 {
					return 160 // gave back 20 of 120 MiB: the same episode goes on
				}
				return 60 + 2*s
			}, 60, true, 2, 0, 180},
		{"flat: no growth", 60, func(float64) float64 { return 60 }, 50, false, 0, 0, 0},
		{"a death long after an ended episode: not its growth", 200,
			func(s float64) float64 {
				if s > 100 {
					return 60
				}
				return 60 + 2*s
			}, 150, false, 0, 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := New(Options{})
			feed(tr, 0, tc.until, 1, 300, tc.ws)
			g, ok := tr.GrowthAt(sec(tc.at))
			if ok != tc.ok {
				t.Fatalf("ok %v, want %v (%+v)", ok, tc.ok, g)
			}
			if !ok {
				return
			}
			if !g.Known {
				t.Fatalf("rate not fitted: %+v", g)
			}
			if r := g.Rate / mib; math.Abs(r-tc.rate) > tc.rate/10 {
				t.Errorf("rate %.2f MiB/s, want %.2f", r, tc.rate)
			}
			if s := g.Since.Sub(t0).Seconds(); math.Abs(s-tc.since) > 3 {
				t.Errorf("since %.1fs, want %.1fs", s, tc.since)
			}
			if n := float64(g.Now) / mib; math.Abs(n-tc.nowMiB) > 3 {
				t.Errorf("now %.0f MiB, want %.0f", n, tc.nowMiB)
			}
			if g.At.After(sec(tc.at)) {
				t.Errorf("its last sample %v is after %v", g.At, sec(tc.at))
			}
		})
	}
}

// TestGrowthMean: a climb too short to fit still has its mean rate.
func TestGrowthMean(t *testing.T) {
	tr := New(Options{})
	for i := 0; i <= 5; i++ { // 150 MiB to 300 MiB within 500 ms, at 10 Hz
		tr.Add(sec(10+float64(i)/10), uint64((150+30*float64(i))*mib), 300*mib)
	}
	g, ok := tr.GrowthAt(sec(10.5))
	if !ok || g.Known {
		t.Fatalf("ok %v known %v, want a growth with no fitted rate: %+v", ok, g.Known, g)
	}
	if r := g.Mean() / mib; math.Abs(r-300) > 30 {
		t.Errorf("mean %.0f MiB/s, want about 300", r)
	}
}

// TestGrowthAtPeak: at 10 Hz a kill's memory comes back over a few samples; the ended episode's
// growth is the climb's up to its peak, not to a sample halfway down.
func TestGrowthAtPeak(t *testing.T) {
	tr := New(Options{})
	for i := 0; i <= 300; i++ { // 30 s at 10 Hz, 8 MiB/s from 24 MiB
		tr.Add(sec(float64(i)/10), uint64((24+0.8*float64(i))*mib), 300*mib)
	}
	for i, ws := range []float64{250, 200, 120, 30} { // the kill's memory coming back
		tr.Add(sec(30.1+float64(i)/10), uint64(ws*mib), 300*mib)
	}
	g, ok := tr.GrowthAt(sec(30.05))
	if !ok || !g.Known {
		t.Fatalf("ok %v: %+v", ok, g)
	}
	if n := float64(g.Now) / mib; n < 260 {
		t.Errorf("the growth ends at %.0f MiB, want the peak (264 MiB)", n)
	}
	if r := g.Rate / mib; math.Abs(r-8) > 0.8 {
		t.Errorf("rate %.2f MiB/s, want 8", r)
	}
}
