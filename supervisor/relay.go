package supervisor

import (
	"bufio"
	"io"
)

// relay reads r to EOF and hands every line to on, newline stripped: lines of any length (up to
// max delivered whole, longer ones in max-sized pieces), any bytes, a last line without newline
// included. It never stops early: bufio.Scanner would, at 64 KiB.
func relay(r io.Reader, s Stream, max int, on func(Stream, []byte)) {
	br := bufio.NewReaderSize(r, 64<<10)
	var long []byte
	for {
		chunk, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			long = grow(long, len(chunk), max)
			long = append(long, chunk...)
			for len(long) > max {
				on(s, long[:max])
				long = append(long[:0], long[max:]...)
			}
			continue
		}
		line := chunk
		if len(long) > 0 {
			long = grow(long, len(chunk), max)
			long = append(long, chunk...)
			line = long
		}
		if err == nil {
			line = line[:len(line)-1]
		}
		for len(line) > max {
			on(s, line[:max])
			line = line[max:]
		}
		if err == nil {
			on(s, line)
			long = shrink(long)
			continue
		}
		if len(line) > 0 {
			on(s, line)
		}
		return
	}
}

// keepLong is the largest buffer kept between lines: one giant line must not keep its memory.
const keepLong = 256 << 10

// shrink empties buf once its line is delivered, and lets it go when a giant line grew it
// beyond keepLong.
func shrink(buf []byte) []byte {
	if cap(buf) > keepLong {
		return nil
	}
	return buf[:0]
}

// grow makes room for n more bytes in buf, doubling it (up to max and what the line needs):
// append's own growth on a buffer of megabytes is a quarter at a time, and a 4 MiB line would
// leave four times its size behind as garbage.
func grow(buf []byte, n, limit int) []byte {
	need := len(buf) + n
	if need <= cap(buf) {
		return buf
	}
	return append(make([]byte, 0, max(need, min(2*cap(buf), limit+n))), buf...)
}
