package probes

import (
	"encoding/binary"
	"reflect"
	"testing"

	"golang.org/x/sys/unix"
)

// inetDiagMsg builds a SOCK_DIAG_BY_FAMILY reply as the kernel does (struct inet_diag_msg).
func inetDiagMsg(typ uint16, family, state uint8, addr []byte, port uint16, inode, rq, wq uint32) []byte {
	b := make([]byte, 16+72)
	ne := binary.NativeEndian
	ne.PutUint32(b[0:], uint32(len(b)))
	ne.PutUint16(b[4:], typ)
	d := b[16:]
	d[0], d[1] = family, state
	binary.BigEndian.PutUint16(d[4:], port)
	copy(d[8:], addr)
	ne.PutUint32(d[56:], rq)
	ne.PutUint32(d[60:], wq)
	ne.PutUint32(d[68:], inode)
	return b
}

func TestParseInetDiag(t *testing.T) {
	mapped := append(make([]byte, 10), 0xff, 0xff, 127, 0, 0, 1)
	dgram := append(inetDiagMsg(unix.SOCK_DIAG_BY_FAMILY, unix.AF_INET, tcpStateListen, []byte{127, 0, 0, 1}, 8080, 41224, 3, 2048),
		inetDiagMsg(unix.SOCK_DIAG_BY_FAMILY, unix.AF_INET6, tcpStateListen, make([]byte, 16), 8081, 52000, 0, 128)...)
	dgram = append(dgram, inetDiagMsg(unix.SOCK_DIAG_BY_FAMILY, unix.AF_INET6, tcpStateEstablished, mapped, 8081, 52001, 5, 0)...)
	done, rows, err := parseInetDiag(dgram, nil)
	want := []tcpRow{
		{local: "127.0.0.1:8080", port: "8080", state: tcpListen, rxq: 3, inode: 41224, max: 2048, maxKnown: true},
		{local: "[::]:8081", port: "8081", state: tcpListen, rxq: 0, inode: 52000, max: 128, maxKnown: true},
		{local: "127.0.0.1:8081", port: "8081", state: tcpEstablished, rxq: 5, inode: 52001},
	}
	if err != nil || done || !reflect.DeepEqual(rows, want) {
		t.Fatalf("done %v err %v\n got %+v\nwant %+v", done, err, rows, want)
	}
	doneMsg := inetDiagMsg(unix.NLMSG_DONE, 0, 0, nil, 0, 0, 0, 0)[:20]
	binary.NativeEndian.PutUint32(doneMsg, 20)
	if done, _, err := parseInetDiag(doneMsg, nil); !done || err != nil {
		t.Errorf("DONE: %v %v", done, err)
	}
	short := inetDiagMsg(unix.SOCK_DIAG_BY_FAMILY, unix.AF_INET, 1, nil, 0, 1, 0, 0)[:16+40]
	binary.NativeEndian.PutUint32(short, uint32(len(short)))
	if _, _, err := parseInetDiag(short, nil); err == nil {
		t.Error("a truncated inet_diag_msg parsed")
	}
	e := inetDiagMsg(unix.NLMSG_ERROR, 0, 0, nil, 0, 0, 0, 0)
	errno := -int32(unix.EPERM)
	binary.NativeEndian.PutUint32(e[16:], uint32(errno))
	if _, _, err := parseInetDiag(e, nil); err == nil {
		t.Error("NLMSG_ERROR EPERM parsed as success")
	}
}

func BenchmarkSockDiag(b *testing.B) {
	for _, bm := range []struct {
		name   string
		states uint32
	}{{"listen", 1 << tcpStateListen}, {"listen+established", 1<<tcpStateListen | 1<<tcpStateEstablished}} {
		b.Run(bm.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := tcpSockets(bm.states); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
