package org

import (
	"strings"
	"unicode"

	"github.com/mozillazg/go-pinyin"
)

// Pinyin returns a name's full pinyin without tones or spaces and its
// initials, for address-book search: 张三 → zhangsan, zs. ASCII letters and
// digits are kept (lower-cased); other characters are dropped. Safe for
// concurrent use.
func Pinyin(name string) (full, initials string) {
	args := pinyin.NewArgs() // Style Normal: no tones
	var f, in strings.Builder
	word := false // inside a run of ASCII letters/digits
	for _, r := range name {
		switch {
		case r < unicode.MaxASCII && (unicode.IsLetter(r) || unicode.IsDigit(r)):
			c := unicode.ToLower(r)
			f.WriteRune(c)
			if !word {
				in.WriteRune(c)
			}
			word = true
		case unicode.Is(unicode.Han, r):
			word = false
			py := pinyin.SinglePinyin(r, args)
			if len(py) > 0 && py[0] != "" {
				f.WriteString(py[0])
				in.WriteByte(py[0][0])
			}
		default:
			word = false
		}
	}
	return f.String(), in.String()
}
