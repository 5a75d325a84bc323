package inflight

import (
	"errors"
	"io"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// file builds request files for the tests, as the hook lays them out.
type file struct {
	b []byte
}

func newFile(slots int, model Model, query QueryMode, class string) *file {
	f := &file{b: make([]byte, HeaderSize+slots*SlotSize)}
	copy(f.b, magic)
	le.PutUint16(f.b[hVersion:], Version)
	le.PutUint16(f.b[hHeaderSize:], HeaderSize)
	le.PutUint16(f.b[hSlotSize:], SlotSize)
	le.PutUint16(f.b[hSlots:], uint16(slots))
	le.PutUint32(f.b[hPID:], 4242)
	le.PutUint64(f.b[hStart:], 777)
	f.b[hModel], f.b[hQuery] = byte(model), byte(query)
	copy(f.b[hClass:], class)
	return f
}

// req is what a slot holds.
type req struct {
	state                 uint8
	method, addr, path, q string
	pathTotal             int
	start, end, last      time.Duration
	served, thread, task  uint64
	gen, genTail          uint32 // genTail 0: as gen
	methodLen, addrLen    int    // -1: as the strings
	pathLen, queryLen     int
}

func (f *file) slot(i int, r req) *file {
	b := f.b[HeaderSize+i*SlotSize : HeaderSize+(i+1)*SlotSize]
	if r.gen == 0 {
		r.gen = 1
	}
	if r.genTail == 0 {
		r.genTail = r.gen
	}
	lens := func(n, def int) int {
		if n != 0 {
			return n
		}
		return def
	}
	le.PutUint32(b[sGen:], r.gen)
	le.PutUint32(b[sGenTail:], r.genTail)
	b[sState] = r.state
	le.PutUint64(b[sEnd:], uint64(r.end))
	le.PutUint64(b[sServed:], r.served)
	le.PutUint64(b[sLast:], uint64(r.last))
	le.PutUint64(b[sStart:], uint64(r.start))
	le.PutUint64(b[sThread:], r.thread)
	le.PutUint64(b[sTask:], r.task)
	b[sMethodLen] = byte(lens(r.methodLen, len(r.method)))
	b[sAddrLen] = byte(lens(r.addrLen, len(r.addr)))
	le.PutUint16(b[sPathLen:], uint16(lens(r.pathLen, len(r.path))))
	le.PutUint16(b[sQueryLen:], uint16(lens(r.queryLen, len(r.q))))
	le.PutUint32(b[sPathTotal:], uint32(max(r.pathTotal, len(r.path))))
	copy(b[sBlob:sGenTail], r.method+r.addr+r.path+r.q)
	if used := int(le.Uint16(f.b[hUsed:])); i+1 > used {
		le.PutUint16(f.b[hUsed:], uint16(i+1))
	}
	return f
}

func (f *file) set(off int, v ...byte) *file {
	copy(f.b[off:], v)
	return f
}

func (f *file) u16(off int, v uint16) *file { le.PutUint16(f.b[off:], v); return f }

func TestParseHeader(t *testing.T) {
	for _, c := range []struct {
		name string
		f    *file
		err  error
	}{
		{"magic", newFile(1, ModelThread, QueryNames, "sync").set(0, 'X'), ErrNotRequests},
		{"version", newFile(1, ModelThread, QueryNames, "sync").u16(hVersion, 2), ErrNotRequests},
		{"header size", newFile(1, ModelThread, QueryNames, "sync").u16(hHeaderSize, 64), ErrNotRequests},
		{"slot size", newFile(1, ModelThread, QueryNames, "sync").u16(hSlotSize, 4096), ErrNotRequests},
		{"slots", newFile(1, ModelThread, QueryNames, "sync").u16(hSlots, MaxSlots+1), ErrNotRequests},
		{"model", newFile(1, 9, QueryNames, "sync"), ErrNotRequests},
		{"query mode", newFile(1, ModelThread, 3, "sync"), ErrNotRequests},
		{"status", newFile(1, ModelThread, QueryNames, "sync").set(hStatus, 7), ErrNotRequests},
		{"short header", &file{b: []byte(magic)}, ErrShort},
		{"used past the end", &file{b: newFile(2, ModelThread, QueryNames, "sync").u16(hUsed, 2).b[:HeaderSize+SlotSize]}, ErrShort},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := Parse(c.f.b, QueryFull); !errors.Is(err, c.err) {
				t.Errorf("err %v, want %v", err, c.err)
			}
		})
	}
	t.Run("used beyond slots is bounded", func(t *testing.T) {
		f := newFile(1, ModelThread, QueryNames, "sync").slot(0, req{state: stateInFlight, method: "GET", path: "/", start: 5}).u16(hUsed, 9)
		tb, err := Parse(f.b, QueryFull)
		if err != nil || len(tb.InFlight) != 1 {
			t.Errorf("%+v, %v", tb, err)
		}
	})
	t.Run("class not recorded", func(t *testing.T) {
		f := newFile(0, 0, QueryNames, "TornadoWorker\x00junk").set(hStatus, byte(ClassNotRecorded))
		tb, err := Parse(f.b, QueryFull)
		if err != nil || tb.Status != ClassNotRecorded || tb.Class != "TornadoWorker" || tb.Slots != 0 || tb.PID != 4242 {
			t.Errorf("%+v, %v", tb, err)
		}
	})
	t.Run("hostile class name", func(t *testing.T) {
		f := newFile(1, ModelThread, QueryNames, "\x1b]0;pwn\x07"+strings.Repeat("é", 20))
		tb, err := Parse(f.b, QueryFull)
		if err != nil || !strings.HasPrefix(tb.Class, `\x1b]0;pwn\x07éé`) || !utf8.ValidString(tb.Class) {
			t.Errorf("%q, %v", tb.Class, err)
		}
	})
}

func TestParseSlots(t *testing.T) {
	const s = time.Second
	f := newFile(6, ModelThread, QueryFull, "gthread").
		slot(0, req{state: stateInFlight, method: "GET", addr: "10.0.0.7", path: "/late", q: "a=1", start: 9 * s, thread: 0x7f00, served: 3, last: 2 * s}).
		slot(1, req{state: stateEnded, method: "GET", path: "/x", start: 1 * s, end: 3 * s, served: 5, last: 20 * time.Millisecond}).
		slot(2, req{state: stateInFlight, method: "POST", path: "/early", start: 2 * s}).
		slot(3, req{state: stateCut, method: "GET", path: "/cut", start: 4 * s, end: 8 * s, served: 1, last: 4 * s}).
		slot(4, req{state: stateInFlight, method: "GET", path: "/torn", start: 5 * s, gen: 2, genTail: 3}).
		slot(5, req{state: stateUnused})
	le.PutUint32(f.b[hUnslotted:], 2)
	le.PutUint64(f.b[hUnrecorded:], 40)
	le.PutUint64(f.b[hAbort:], uint64(7*s))
	tb, err := Parse(f.b, QueryFull)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range tb.InFlight {
		got = append(got, r.String())
	}
	if strings.Join(got, "|") != "POST /early|GET /late?a=1 from 10.0.0.7" {
		t.Errorf("in flight, oldest first: %q", got)
	}
	if len(tb.Cut) != 1 || tb.Cut[0].Path != "/cut" || !tb.Cut[0].Cut || tb.Cut[0].Age(100*s) != 4*s {
		t.Errorf("cut: %+v", tb.Cut)
	}
	if tb.InFlight[1].Age(12*s) != 3*s || tb.InFlight[1].Age(1*s) != 0 || tb.InFlight[1].Thread != 0x7f00 {
		t.Errorf("age: %+v", tb.InFlight[1])
	}
	if tb.Served != 9 || tb.LastEnd != 8*s || tb.LastDuration != 4*s {
		t.Errorf("served %d, last %v ending %v", tb.Served, tb.LastDuration, tb.LastEnd)
	}
	if tb.Bad != 1 || tb.Unslotted != 2 || tb.Unrecorded != 40 || tb.Abort != 7*s || tb.Model != ModelThread || tb.Class != "gthread" {
		t.Errorf("table %+v", tb)
	}
	if r, ok := tb.Oldest(); !ok || r.Path != "/early" {
		t.Errorf("oldest %+v", r)
	}
	if !tb.Belongs(4242, 777) || tb.Belongs(4242, 778) || tb.Belongs(4243, 777) || !tb.Belongs(4242, 0) {
		t.Error("Belongs")
	}
}

func TestParseNonsenseSlots(t *testing.T) {
	for _, c := range []struct {
		name string
		r    req
	}{
		{"state", req{state: 9, method: "GET", path: "/", start: 1}},
		{"method length", req{state: stateInFlight, method: "GET", path: "/", start: 1, methodLen: maxMethod + 1}},
		{"address length", req{state: stateInFlight, method: "GET", path: "/", start: 1, addrLen: maxAddr + 1}},
		{"path length", req{state: stateInFlight, method: "GET", path: "/", start: 1, pathLen: maxPath + 1}},
		{"query length", req{state: stateInFlight, method: "GET", path: "/", start: 1, queryLen: maxQuery + 1}},
		{"no start", req{state: stateInFlight, method: "GET", path: "/"}},
		{"cut before it started", req{state: stateCut, method: "GET", path: "/", start: 9, end: 3}},
	} {
		t.Run(c.name, func(t *testing.T) {
			tb, err := Parse(newFile(1, ModelThread, QueryFull, "sync").slot(0, c.r).b, QueryFull)
			if err != nil || tb.Bad != 1 || len(tb.InFlight)+len(tb.Cut) != 0 {
				t.Errorf("%+v, %v", tb, err)
			}
		})
	}
	t.Run("huge numbers saturate", func(t *testing.T) {
		f := newFile(1, ModelThread, QueryFull, "sync").slot(0, req{state: stateInFlight, method: "GET", path: "/", start: 1, served: 1<<64 - 1, last: -1, pathTotal: 0})
		le.PutUint64(f.b[HeaderSize+sLast:], 1<<64-1)
		le.PutUint64(f.b[hAbort:], 1<<64-1)
		tb, err := Parse(f.b, QueryFull)
		if err != nil || tb.Abort <= 0 || tb.Served != 1<<64-1 || len(tb.InFlight) != 1 {
			t.Errorf("%+v, %v", tb, err)
		}
	})
}

// tearing is a ReaderAt over a file whose slot 0 reads torn the first n times.
type tearing struct {
	b     []byte
	n     int
	reads int
}

func (r *tearing) ReadAt(p []byte, off int64) (int, error) {
	n := copy(p, r.b[off:])
	if off <= HeaderSize && off+int64(n) >= HeaderSize+SlotSize && r.reads < r.n {
		r.reads++
		i := HeaderSize - int(off)
		le.PutUint32(p[i+sGenTail:], le.Uint32(p[i+sGen:])+1)
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func TestReadRetriesTornSlot(t *testing.T) {
	f := newFile(1, ModelThread, QueryFull, "sync").slot(0, req{state: stateInFlight, method: "GET", path: "/a", start: 1})
	for _, c := range []struct {
		torn    int
		inFight int
		bad     int
	}{{0, 1, 0}, {1, 1, 0}, {maxRetries, 1, 0}, {maxRetries + 1, 0, 1}} {
		r := &tearing{b: f.b, n: c.torn}
		tb, err := Read(r, QueryFull)
		if err != nil || len(tb.InFlight) != c.inFight || tb.Bad != c.bad {
			t.Errorf("torn %d times: %+v, %v", c.torn, tb, err)
		}
	}
}

func TestEscape(t *testing.T) {
	for _, c := range []struct {
		in   string
		max  int
		want string
		cut  bool
	}{
		{"/api/report", 64, "/api/report", false},
		{"/caf\xc3\xa9", 64, "/café", false},
		{"/a\x00\n\t\x7f", 64, `/a\x00\x0a\x09\x7f`, false},
		{"/\xff\xfe", 64, `/\xff\xfe`, false},
		{`/back\slash`, 64, `/back\\slash`, false},
		{"/\u202eevil\u200b", 64, `/\u202eevil\u200b`, false},
		{"/\U000e0001tag", 64, `/\U000e0001tag`, false},
		{"/abcdef", 4, "/abc…", true},
		{"/ab\xc3\xa9", 4, "/ab…", true},      // é would straddle the bound: cut before it
		{"/a\xc3\xa9x", 4, "/aé…", true},      // é ends at the bound
		{"/ab\xe2\x82", 4, `/ab\xe2…`, true},  // not UTF-8 to begin with: bytes as they come
		{"/\xf0\x9f\x98\x80x", 4, "/…", true}, // a 4-byte rune straddling the bound
		{strings.Repeat("é", 400), 640, strings.Repeat("é", 320) + "…", true},
	} {
		got, cut := escape([]byte(c.in), c.max)
		if got != c.want || cut != c.cut {
			t.Errorf("escape(%q, %d) = %q, %v; want %q, %v", c.in, c.max, got, cut, c.want, c.cut)
		}
	}
}

func TestRedact(t *testing.T) {
	long := strings.Repeat("n", maxName+1)
	for _, c := range []struct {
		q    string
		mode QueryMode
		want string
	}{
		{"token=s3cret&x=1", QueryNames, "token=…&x=…"},
		{"token=&x=", QueryNames, "token=…&x=…"}, // as the hook records names: the same
		{"bare&s3cret", QueryNames, "…&…"},
		{long + "=v&a=b=c", QueryNames, "…&a=…"},
		{"&&a=1", QueryNames, "…&…&a=…"},
		{"\x1b[2J=1", QueryNames, `\x1b[2J=…`},
		{"token=s3cret", QueryOff, ""},
		{"token=s3cret&x=\x00", QueryFull, `token=s3cret&x=\x00`},
		{"", QueryNames, ""},
	} {
		if got := redact([]byte(c.q), c.mode); got != c.want {
			t.Errorf("redact(%q, %s) = %q, want %q", c.q, c.mode, got, c.want)
		}
	}
}

func TestParseQueryMode(t *testing.T) {
	for _, s := range []string{"off", "names", "full"} {
		m, err := ParseQueryMode(s)
		if err != nil || m.String() != s {
			t.Errorf("%s: %v %v", s, m, err)
		}
	}
	if _, err := ParseQueryMode("values"); err == nil {
		t.Error("values is not a mode")
	}
}

// FuzzParse: no file makes Read fail other than with an error, nor show anything but
// printable, bounded text, nor a query value where names were asked for.
func FuzzParse(f *testing.F) {
	f.Add(newFile(2, ModelThread, QueryFull, "gthread").
		slot(0, req{state: stateInFlight, method: "GET", addr: "10.0.0.7", path: "/sleep/30", q: "token=s3cret", start: 9}).
		slot(1, req{state: stateCut, method: "POST", path: "/a\x00\xff", start: 3, end: 5}).b)
	f.Add(newFile(1, ModelTask, QueryNames, "uvicorn").slot(0, req{state: stateEnded, served: 3, last: 4, end: 9}).b)
	f.Add(newFile(0, 0, QueryNames, "TornadoWorker").set(hStatus, byte(ClassNotRecorded)).b)
	f.Add([]byte(magic))
	f.Fuzz(func(t *testing.T, b []byte) {
		tb, err := Parse(b, QueryNames)
		if err != nil {
			return
		}
		if tb.Slots > MaxSlots || len(tb.InFlight)+len(tb.Cut)+tb.Bad > tb.Slots {
			t.Fatalf("slots %d: %d in flight, %d cut, %d bad", tb.Slots, len(tb.InFlight), len(tb.Cut), tb.Bad)
		}
		for _, r := range append(tb.InFlight, tb.Cut...) {
			for _, s := range []string{r.Method, r.Path, r.Query, r.Remote, tb.Class} {
				if !utf8.ValidString(s) || strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
					t.Fatalf("%q is not escaped", s)
				}
				if len(s) > 4*maxPath+len(Ellipsis) {
					t.Fatalf("%d bytes: not bounded", len(s))
				}
			}
			for _, el := range strings.Split(r.Query, "&") {
				if _, v, ok := strings.Cut(el, "="); ok && v != Ellipsis || !ok && el != Ellipsis && el != "" {
					t.Fatalf("query %q shows a value under names", r.Query)
				}
			}
		}
	})
}
