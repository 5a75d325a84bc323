package probes

import "testing"

func TestIsGunicornCmdline(t *testing.T) {
	for _, c := range []struct {
		argv string
		want bool
	}{
		{"/usr/bin/gunicorn\x00app:app\x00", true},
		{"gunicorn\x00-w\x002\x00app:app\x00", true},
		{"/usr/bin/python3\x00/usr/bin/gunicorn\x00app:app\x00", true},
		{"python3.11\x00-u\x00-m\x00gunicorn\x00app:app\x00", true},
		{"python3\x00-mgunicorn\x00app:app\x00", true},
		{"gunicorn: master [app:app]", true},
		{"gunicorn: worker [app:app]", false},
		{"sh\x00-c\x00python3 migrate.py; exec gunicorn app:app\x00", false},
		{"/usr/bin/python3\x00migrate.py\x00", false},
		{"python3\x00-m\x00uvicorn\x00app:app\x00", false},
		{"python3\x00-m\x00gunicorn.app.wsgiapp\x00app:app\x00", true},
		{"python3\x00-c\x00from gunicorn.app.wsgiapp import run; run()\x00app:app\x00", true},
		{"python3\x00-X\x00dev\x00-c\x00from gunicorn.app.wsgiapp import run; run()\x00", true},
		{"python3\x00-c\x00import uvicorn; uvicorn.run()\x00", false},
		{"python3\x00-c\x00print('Starting gunicorn 20.1.0')\x00", false},
		{"python3\x00server.py\x00", false},
		{"", false},
	} {
		if got := IsGunicornCmdline([]byte(c.argv)); got != c.want {
			t.Errorf("IsGunicornCmdline(%q) = %v, want %v", c.argv, got, c.want)
		}
	}
}

func TestKillPending(t *testing.T) {
	for _, c := range []struct {
		name, status string
		want         bool
	}{
		{"none", "Name:\tx\nSigPnd:\t0000000000000000\nShdPnd:\t0000000000000000\nSigBlk:\t0\n", false},
		{"shared SIGKILL", "Name:\tx\nSigPnd:\t0000000000000000\nShdPnd:\t0000000000000100\n", true},
		{"thread SIGKILL", "Name:\tx\nSigPnd:\t0000000000000100\nShdPnd:\t0000000000000000\n", true},
		{"SIGTERM only", "Name:\tx\nShdPnd:\t0000000000004000\n", false},
		{"SIGKILL and more", "Name:\tx\nShdPnd:\t0000000000004f00\n", true},
		{"missing", "Name:\tx\n", false},
	} {
		if got := killPending([]byte(c.status)); got != c.want {
			t.Errorf("%s: killPending = %v, want %v", c.name, got, c.want)
		}
	}
}
