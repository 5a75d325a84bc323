package probes

import (
	"encoding/binary"
	"reflect"
	"testing"
)

// nlmsg builds one netlink message of type typ around body, padded to 4 bytes.
func nlmsg(typ uint16, body []byte) []byte {
	b := make([]byte, nlmsgHdrLen, nlmsgHdrLen+len(body)+3)
	binary.NativeEndian.PutUint32(b[0:], uint32(nlmsgHdrLen+len(body)))
	binary.NativeEndian.PutUint16(b[4:], typ)
	b = append(b, body...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// diagMsg builds a unix_diag_msg for inode ino with the given attributes.
func diagMsg(ino uint32, attrs ...[]byte) []byte {
	b := make([]byte, unixDiagMsgLen)
	b[0], b[1], b[2] = afUnix, 1, 1 // family, SOCK_STREAM, TCP_ESTABLISHED
	binary.NativeEndian.PutUint32(b[4:], ino)
	for _, a := range attrs {
		b = append(b, a...)
	}
	return b
}

// attr builds one netlink attribute, padded.
func attr(typ uint16, payload []byte) []byte {
	b := make([]byte, nlaHdrLen, nlaHdrLen+len(payload)+3)
	binary.NativeEndian.PutUint16(b[0:], uint16(nlaHdrLen+len(payload)))
	binary.NativeEndian.PutUint16(b[2:], typ)
	b = append(b, payload...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func u32(v uint32) []byte { return binary.NativeEndian.AppendUint32(nil, v) }

func TestParseUnixDiag(t *testing.T) {
	name := attr(0, []byte("/run/x.sock\x00")) // UNIX_DIAG_NAME, 12 bytes: padding checked
	errMsg := func(errno int32) []byte { return nlmsg(nlmsgError, u32(uint32(-errno))) }
	cat := func(bs ...[]byte) []byte {
		var out []byte
		for _, b := range bs {
			out = append(out, b...)
		}
		return out
	}
	want := map[uint64]bool{100: true, 300: true}
	for _, tc := range []struct {
		name  string
		in    []byte
		peers map[uint64]uint64
		done  bool
		err   bool
	}{
		{"peer of a wanted socket", nlmsg(sockDiagByFam, diagMsg(100, attr(unixDiagPeer, u32(200)))), map[uint64]uint64{100: 200}, false, false},
		{"name before the peer", nlmsg(sockDiagByFam, diagMsg(300, name, attr(unixDiagPeer, u32(301)))), map[uint64]uint64{300: 301}, false, false},
		{"a socket not asked about", nlmsg(sockDiagByFam, diagMsg(999, attr(unixDiagPeer, u32(1)))), map[uint64]uint64{}, false, false},
		{"no peer attribute (unconnected)", nlmsg(sockDiagByFam, diagMsg(100, name)), map[uint64]uint64{}, false, false},
		{"peer 0 is no peer", nlmsg(sockDiagByFam, diagMsg(100, attr(unixDiagPeer, u32(0)))), map[uint64]uint64{}, false, false},
		{"several messages then done", cat(nlmsg(sockDiagByFam, diagMsg(100, attr(unixDiagPeer, u32(200)))),
			nlmsg(sockDiagByFam, diagMsg(300, attr(unixDiagPeer, u32(301)))), nlmsg(nlmsgDone, u32(0))), map[uint64]uint64{100: 200, 300: 301}, true, false},
		{"done alone", nlmsg(nlmsgDone, u32(0)), map[uint64]uint64{}, true, false},
		{"an error reply", errMsg(-13), map[uint64]uint64{}, false, true},
		{"an ack (errno 0) is no error", errMsg(0), map[uint64]uint64{}, false, false},
		{"length beyond the buffer", nlmsg(sockDiagByFam, diagMsg(100))[:20], map[uint64]uint64{}, false, true},
		{"body shorter than unix_diag_msg", nlmsg(sockDiagByFam, make([]byte, 8)), map[uint64]uint64{}, false, true},
		{"attribute beyond the message", nlmsg(sockDiagByFam, append(diagMsg(100), 40, 0, 2, 0)), map[uint64]uint64{}, false, true},
		{"empty", nil, map[uint64]uint64{}, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			peers := map[uint64]uint64{}
			done, err := parseUnixDiag(tc.in, want, peers)
			if done != tc.done || (err != nil) != tc.err || !reflect.DeepEqual(peers, tc.peers) {
				t.Errorf("done %v err %v peers %v; want %v %v %v", done, err, peers, tc.done, tc.err, tc.peers)
			}
		})
	}
}

func TestUnixDiagRequest(t *testing.T) {
	b := unixDiagRequest(7)
	ne := binary.NativeEndian
	if len(b) != 40 || ne.Uint32(b[0:]) != 40 || ne.Uint16(b[4:]) != 20 || ne.Uint16(b[6:]) != 0x301 || ne.Uint32(b[8:]) != 7 {
		t.Errorf("header % x", b[:16])
	}
	if r := b[16:]; r[0] != 1 || ne.Uint32(r[4:]) != 0xffffffff || ne.Uint32(r[8:]) != 0 || ne.Uint32(r[12:]) != 4 {
		t.Errorf("unix_diag_req % x", r)
	}
}

// TestResolveUnixPeers: a client of a listening path gets that path (the accepted socket shows
// it in /proc/net/unix); datagram sockets, listeners, unnamed peers and sockets without a known
// peer stay without one; WaitingOn names the path, after TCP peers and before the wait channel.
func TestResolveUnixPeers(t *testing.T) {
	const netUnix = "Num       RefCount Protocol Flags    Type St Inode Path\n" +
		"0000000000000001: 00000002 00000000 00010000 0001 01  500 /var/run/postgresql/.s.PGSQL.5432\n" +
		"0000000000000002: 00000003 00000000 00000000 0001 03  501 /var/run/postgresql/.s.PGSQL.5432\n" + // accepted, server side
		"0000000000000003: 00000003 00000000 00000000 0001 03  600\n" + // the worker's client end
		"0000000000000004: 00000003 00000000 00000000 0002 03  601\n" + // the worker's syslog datagram
		"0000000000000005: 00000002 00000000 00000000 0002 01  700 /dev/log\n" +
		"0000000000000006: 00000003 00000000 00000000 0001 03  602\n" + // connected to an unnamed socketpair
		"0000000000000007: 00000003 00000000 00000000 0001 03  603\n" + // peer unknown
		"0000000000000008: 00000003 00000000 00000000 0001 03  604\n"
	worker := map[uint64]bool{600: true, 601: true, 602: true, 603: true}
	ss := parseNetUnix([]byte(netUnix), worker)
	want := connectedUnix(ss)
	if !reflect.DeepEqual(want, map[uint64]bool{600: true, 602: true, 603: true}) {
		t.Errorf("asked about %v", want)
	}
	resolveUnixPeers(ss, map[uint64]uint64{600: 501, 601: 700, 602: 604}, unixPaths([]byte(netUnix)))
	got := map[uint64]string{}
	for _, s := range ss {
		got[s.Inode] = s.Remote
	}
	if !reflect.DeepEqual(got, map[uint64]string{600: "/var/run/postgresql/.s.PGSQL.5432", 601: "", 602: "", 603: ""}) {
		t.Errorf("remotes %v", got)
	}
	d := Deep{Wchan: "unix_stream_read_generic", Sockets: append([]Socket{{Proto: "tcp", Local: "10.0.0.2:4100", Remote: "10.0.0.5:5432", State: "ESTABLISHED"}}, ss...)}
	if wo := d.WaitingOn(); !reflect.DeepEqual(wo, []string{"tcp 10.0.0.5:5432", "unix /var/run/postgresql/.s.PGSQL.5432", "wchan unix_stream_read_generic"}) {
		t.Errorf("waiting on %v", wo)
	}
}

// TestWaitingOnLeavesOutAcceptedUnixConnections: a worker serving on a unix path (--bind
// unix:…) is not "waiting on" its own clients.
func TestWaitingOnLeavesOutAcceptedUnixConnections(t *testing.T) {
	d := Deep{Sockets: []Socket{{Proto: "unix", Type: "stream", Local: "/run/gunicorn.sock", State: "LISTEN"},
		{Proto: "unix", Type: "stream", Local: "/run/gunicorn.sock", Remote: "/run/nginx-client.sock", State: "CONNECTED"}}}
	if wo := d.WaitingOn(); len(wo) != 0 {
		t.Errorf("waiting on %v", wo)
	}
}
