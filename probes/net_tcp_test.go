package probes

import (
	"reflect"
	"testing"
)

// Lines as Linux 6.x prints them (header, an IPv4 listener with 3 connections waiting for
// accept(), an accepted client connection, an outgoing connection), and tcp6's wildcard listener.
const netTCP = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000003 00:00000000 00000000     0        0 41224 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 0100007F:D2A4 01 00000000:00000000 00:00000000 00000000     0        0 41301 1 0000000000000000 20 4 30 10 -1
   2: 0100007F:9C40 0100007F:1538 01 00000000:00000000 00:00000000 00000000     0        0 41302 1 0000000000000000 20 4 30 10 -1
   3: garbage
`

const netTCP6 = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:1F91 00000000000000000000000000000000:0000 0A 00000000:00000800 00:00000000 00000000     0        0 52000 1 0000000000000000 100 0 0 10 0
`

func TestParseNetTCPRows(t *testing.T) {
	got := parseNetTCP([]byte(netTCP))
	want := []tcpRow{
		{local: "127.0.0.1:8080", remote: "0.0.0.0:0", port: "8080", state: "0A", rxq: 3, inode: 41224},
		{local: "127.0.0.1:8080", remote: "127.0.0.1:53924", port: "8080", state: "01", rxq: 0, inode: 41301},
		{local: "127.0.0.1:40000", remote: "127.0.0.1:5432", port: "40000", state: "01", rxq: 0, inode: 41302},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("tcp:\n got %+v\nwant %+v", got, want)
	}
	got6 := parseNetTCP([]byte(netTCP6))
	if len(got6) != 1 || got6[0].local != "[::]:8081" || got6[0].rxq != 0x800 || got6[0].state != tcpListen {
		t.Errorf("tcp6: %+v", got6)
	}
	for _, in := range []string{"", "header only\n", "h\n 0: 0100007F:1F90 00000000:0000 0A 00000000:zz 0 0 0 0 1\n"} {
		if r := parseNetTCP([]byte(in)); len(r) != 0 {
			t.Errorf("%q: %+v", in, r)
		}
	}
}

func TestParseNetTCP(t *testing.T) {
	const in = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n" +
		"   0: 0100007F:487B 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 32041 1 0 100 0 0 10 0\n" +
		"   1: 0100007F:C350 0500000A:1538 02 00000000:00000000 00:00000000 00000000     0        0 777 1 0 100 0 0 10 0\n" +
		"   2: 0100007F:C351 0500000A:1538 01 00000000:00000000 00:00000000 00000000     0        0 888 1 0 100 0 0 10 0\n" +
		"   3: garbage\n"
	got := sockets(parseNetTCP([]byte(in)), "tcp", map[uint64]bool{32041: true, 777: true})
	want := []Socket{
		{Proto: "tcp", Local: "127.0.0.1:18555", State: "LISTEN", Inode: 32041},
		{Proto: "tcp", Local: "127.0.0.1:50000", Remote: "10.0.0.5:5432", State: "SYN_SENT", Inode: 777},
	}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("got %+v, want %+v", got, want)
	}
	if wo := (Deep{Sockets: got}).WaitingOn(); len(wo) != 1 || wo[0] != "tcp 10.0.0.5:5432" {
		t.Errorf("waiting on %v", wo)
	}
}

func TestHexAddr(t *testing.T) {
	for in, want := range map[string]string{
		"0100007F:1F90":                         "127.0.0.1:8080",
		"0500000A:1538":                         "10.0.0.5:5432",
		"00000000000000000000000001000000:0050": "[::1]:80",
		"0000000000000000FFFF00000100007F:01BB": "127.0.0.1:443",
	} {
		if got, err := hexAddr(in); err != nil || got != want {
			t.Errorf("%s: %q %v, want %s", in, got, err, want)
		}
	}
	if _, err := hexAddr("zz:1"); err == nil {
		t.Error("garbage accepted")
	}
}
