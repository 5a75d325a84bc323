package inflight

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// escape renders b as printable text of at most max bytes of b: printable runes are kept,
// a backslash is doubled, control characters and other non-printing runes (bidi overrides,
// zero-width joiners) become \xNN or \uNNNN, and bytes that are not UTF-8 become \xNN. cut says
// that b was longer than max (the text then ends with "…").
func escape(b []byte, max int) (s string, cut bool) {
	if len(b) > max {
		// Cut before a whole rune that straddles the bound rather than through it.
		end := max
		for i := max; i > 0 && max-i < utf8.UTFMax; i-- {
			if utf8.RuneStart(b[i]) {
				if r, size := utf8.DecodeRune(b[i:]); i < max && (r != utf8.RuneError || size > 1) && i+size > max {
					end = i
				}
				break
			}
		}
		b = b[:end]
		cut = true
	}
	var w strings.Builder
	w.Grow(len(b))
	for len(b) > 0 {
		r, size := utf8.DecodeRune(b)
		switch {
		case r == utf8.RuneError && size <= 1:
			w.WriteString(`\x`)
			w.WriteByte(hexDigit[b[0]>>4])
			w.WriteByte(hexDigit[b[0]&0xf])
		case r == '\\':
			w.WriteString(`\\`)
		case unicode.IsPrint(r):
			w.Write(b[:size])
		case r < 0x80:
			w.WriteString(`\x`)
			w.WriteByte(hexDigit[r>>4])
			w.WriteByte(hexDigit[r&0xf])
		case r <= 0xffff:
			w.WriteString(`\u`)
			writeHex(&w, uint32(r), 4)
		default:
			w.WriteString(`\U`)
			writeHex(&w, uint32(r), 8)
		}
		b = b[size:]
	}
	if cut {
		w.WriteString(Ellipsis)
	}
	return w.String(), cut
}

const hexDigit = "0123456789abcdef"

func writeHex(w *strings.Builder, v uint32, digits int) {
	for shift := 4 * (digits - 1); shift >= 0; shift -= 4 {
		w.WriteByte(hexDigit[(v>>shift)&0xf])
	}
}

// isToken reports whether s is an HTTP token (RFC 9110 §5.6.2): what a method must be.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0 {
			continue
		}
		return false
	}
	return true
}
