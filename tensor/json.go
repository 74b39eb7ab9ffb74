package tensor

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"unicode/utf8"

	"github.com/accelpool/accelpool/errdefs"
)

// MaxJSONDepth is the deepest array nesting DecodeJSONData accepts.
const MaxJSONDepth = 64

// DecodeJSONData parses the `data` field of a JSON tensor, a flat or nested
// array of elements in row-major order, into the raw representation of
// Tensor.Data. Nesting is flattened and its structure is not checked against
// shape; only the element count must equal NumElements(shape). A bare scalar
// counts as a one-element array.
//
// BOOL takes true/false; integer types take JSON integers in their range;
// FP16, BF16, FP32 and FP64 take numbers (rounded to nearest even) or one of
// the strings "NaN", "Infinity", "-Infinity", "inf", "-inf"; BYTES takes JSON
// strings and yields the 4-byte length-prefixed layout. Errors wrap
// errdefs.ErrInvalid and name the element index.
//
// The scanner walks the bytes once without building a generic tree, and
// allocates the result from shape, after checking that raw is long enough
// to hold that many elements.
func DecodeJSONData(dt DataType, shape []int64, raw []byte) ([]byte, error) {
	if !dt.Valid() {
		return nil, errdefs.Invalid(fmt.Sprintf("invalid datatype %v", dt))
	}
	n, err := NumElements(shape)
	if err != nil {
		return nil, err
	}
	d := jsonDecoder{b: raw, dt: dt, want: n}
	// Every element takes at least one byte and all but the last a comma, so
	// raw cannot hold more than (len+1)/2 of them. A shape that claims more
	// is rejected without allocating for it; one counting pass finds the
	// number the client actually sent so the error can say got vs want.
	if n > int64(len(raw)+1)/2 {
		d.countOnly = true
		if err := d.run(); err != nil {
			return nil, err
		}
		return nil, d.countError()
	}
	if dt == Bytes {
		// Each element's content is at most its token length minus the two
		// quotes, plus its 4-byte prefix: the result fits len(raw)+2n.
		d.out = make([]byte, 0, int64(len(raw))+2*n)
	} else {
		d.out = make([]byte, n*int64(dt.Size()))
	}
	if err := d.run(); err != nil {
		return nil, err
	}
	if d.count != n {
		return nil, d.countError()
	}
	return d.out, nil
}

type jsonDecoder struct {
	b         []byte
	pos       int
	dt        DataType
	want      int64
	count     int64 // elements seen so far
	out       []byte
	countOnly bool // no output: only count (and check) the elements
}

func (d *jsonDecoder) countError() error {
	return errdefs.Invalid(fmt.Sprintf("data holds %d elements, shape needs %d (%s)", d.count, d.want, d.dt))
}

func (d *jsonDecoder) syntaxError(what string) error {
	if d.pos >= len(d.b) {
		return errdefs.Invalid(fmt.Sprintf("data: unexpected end of input at element %d (byte %d): %s", d.count, d.pos, what))
	}
	return errdefs.Invalid(fmt.Sprintf("data: unexpected %s at element %d (byte %d): %s", quoteByte(d.b[d.pos]), d.count, d.pos, what))
}

func (d *jsonDecoder) elemError(format string, args ...any) error {
	return errdefs.Invalid(fmt.Sprintf("data element %d: ", d.count) + fmt.Sprintf(format, args...))
}

func quoteByte(c byte) string {
	if c >= 0x20 && c < 0x7f {
		return strconv.QuoteRune(rune(c))
	}
	return fmt.Sprintf("byte 0x%02x", c)
}

func (d *jsonDecoder) skipSpace() {
	for d.pos < len(d.b) {
		switch d.b[d.pos] {
		case ' ', '\t', '\n', '\r':
			d.pos++
		default:
			return
		}
	}
}

// run scans the whole input: nested arrays with a depth counter (no
// recursion), elements through d.element.
func (d *jsonDecoder) run() error {
	d.skipSpace()
	if d.pos >= len(d.b) {
		return errdefs.Invalid("data is empty")
	}
	depth := 0
	for {
		// At the start of a value.
		if d.b[d.pos] == '[' {
			depth++
			if depth > MaxJSONDepth {
				return errdefs.Invalid(fmt.Sprintf("data: array nesting depth exceeds %d (byte %d)", MaxJSONDepth, d.pos))
			}
			d.pos++
			d.skipSpace()
			if d.pos >= len(d.b) {
				return d.syntaxError("want a value or ']'")
			}
			if d.b[d.pos] != ']' {
				continue
			}
			d.pos++ // empty array: a finished value
			depth--
		} else {
			if err := d.element(); err != nil {
				return err
			}
		}
		// After a value: close arrays until a comma opens the next value.
		for {
			d.skipSpace()
			if depth == 0 {
				if d.pos != len(d.b) {
					return d.syntaxError("want end of data")
				}
				return nil
			}
			if d.pos >= len(d.b) {
				return d.syntaxError("want ',' or ']'")
			}
			c := d.b[d.pos]
			if c == ']' {
				d.pos++
				depth--
				continue
			}
			if c != ',' {
				return d.syntaxError("want ',' or ']'")
			}
			d.pos++
			d.skipSpace()
			if d.pos >= len(d.b) {
				return d.syntaxError("want a value")
			}
			break
		}
	}
}

// element decodes one scalar at d.pos and stores it as element d.count.
func (d *jsonDecoder) element() error {
	i := d.count
	if i >= d.want && !d.countOnly {
		// More elements than the shape holds: count the rest, keep nothing.
		d.countOnly = true
	}
	var err error
	switch d.dt {
	case Bool:
		err = d.boolElem(i)
	case Uint8, Uint16, Uint32, Uint64, Int8, Int16, Int32, Int64:
		err = d.intElem(i)
	case FP16, BF16, FP32, FP64:
		err = d.floatElem(i)
	case Bytes:
		err = d.bytesElem()
	}
	if err != nil {
		return err
	}
	d.count++
	return nil
}

func (d *jsonDecoder) literal(word string) bool {
	if len(d.b)-d.pos >= len(word) && string(d.b[d.pos:d.pos+len(word)]) == word {
		d.pos += len(word)
		return true
	}
	return false
}

func (d *jsonDecoder) boolElem(i int64) error {
	var v byte
	switch {
	case d.literal("true"):
		v = 1
	case d.literal("false"):
	default:
		return d.elemError("%s is not a BOOL (want true or false)", d.tokenText())
	}
	if !d.countOnly {
		d.out[i] = v
	}
	return nil
}

// tokenText returns the text of the token at d.pos for error messages,
// shortened to a readable length.
func (d *jsonDecoder) tokenText() string {
	end := d.pos
	if end < len(d.b) && d.b[end] == '"' {
		end++
		for end < len(d.b) && d.b[end] != '"' {
			if d.b[end] == '\\' {
				end++
			}
			end++
		}
		end++
	} else {
		for end < len(d.b) {
			c := d.b[end]
			if c == ',' || c == ']' || c == '[' || c == ' ' || c == '\t' || c == '\n' || c == '\r' {
				break
			}
			end++
		}
	}
	end = min(end, len(d.b))
	if end == d.pos {
		if end < len(d.b) {
			return quoteByte(d.b[end])
		}
		return "end of input"
	}
	s := string(d.b[d.pos:end])
	if len(s) > 40 {
		s = s[:40] + "..."
	}
	return s
}

// number scans a JSON number at d.pos and returns its end and whether it has
// a fraction or an exponent. It does not move d.pos.
func (d *jsonDecoder) number() (end int, integer bool, ok bool) {
	b, p := d.b, d.pos
	if p < len(b) && b[p] == '-' {
		p++
	}
	switch {
	case p < len(b) && b[p] == '0':
		p++
	case p < len(b) && b[p] >= '1' && b[p] <= '9':
		for p < len(b) && b[p] >= '0' && b[p] <= '9' {
			p++
		}
	default:
		return p, false, false
	}
	integer = true
	if p < len(b) && b[p] == '.' {
		integer = false
		p++
		s := p
		for p < len(b) && b[p] >= '0' && b[p] <= '9' {
			p++
		}
		if p == s {
			return p, false, false
		}
	}
	if p < len(b) && (b[p] == 'e' || b[p] == 'E') {
		integer = false
		p++
		if p < len(b) && (b[p] == '+' || b[p] == '-') {
			p++
		}
		s := p
		for p < len(b) && b[p] >= '0' && b[p] <= '9' {
			p++
		}
		if p == s {
			return p, false, false
		}
	}
	return p, integer, true
}

func (d *jsonDecoder) intElem(i int64) error {
	end, integer, ok := d.number()
	if !ok {
		return d.elemError("%s is not a number (%s)", d.tokenText(), d.dt)
	}
	tok := d.b[d.pos:end]
	if !integer {
		return d.elemError("%s is not an integer (%s)", d.tokenText(), d.dt)
	}
	neg := tok[0] == '-'
	digits := tok
	if neg {
		digits = tok[1:]
	}
	// Magnitude with overflow detection; anything above 2^64-1 is out of
	// range for every integer type.
	var mag uint64
	over := false
	for _, c := range digits {
		v := uint64(c - '0')
		if mag > (math.MaxUint64-v)/10 {
			over = true
			break
		}
		mag = mag*10 + v
	}
	var lo, hi uint64 // allowed magnitude for negative and positive values
	switch d.dt {
	case Uint8:
		hi = math.MaxUint8
	case Uint16:
		hi = math.MaxUint16
	case Uint32:
		hi = math.MaxUint32
	case Uint64:
		hi = math.MaxUint64
	case Int8:
		lo, hi = 1<<7, 1<<7-1
	case Int16:
		lo, hi = 1<<15, 1<<15-1
	case Int32:
		lo, hi = 1<<31, 1<<31-1
	case Int64:
		lo, hi = 1<<63, 1<<63-1
	}
	if over || (neg && mag > lo) || (!neg && mag > hi) {
		return d.elemError("%s is out of range for %s", d.tokenText(), d.dt)
	}
	d.pos = end
	if d.countOnly {
		return nil
	}
	v := mag
	if neg {
		v = -mag // two's complement of the magnitude
	}
	sz := int64(d.dt.Size())
	o := d.out[i*sz:]
	switch sz {
	case 1:
		o[0] = byte(v)
	case 2:
		binary.LittleEndian.PutUint16(o, uint16(v))
	case 4:
		binary.LittleEndian.PutUint32(o, uint32(v))
	case 8:
		binary.LittleEndian.PutUint64(o, v)
	}
	return nil
}

func (d *jsonDecoder) floatElem(i int64) error {
	start := d.pos
	var f float64
	finite := false
	if d.b[d.pos] == '"' {
		switch {
		case d.literal(`"NaN"`):
			f = math.NaN()
		case d.literal(`"Infinity"`), d.literal(`"inf"`):
			f = math.Inf(1)
		case d.literal(`"-Infinity"`), d.literal(`"-inf"`):
			f = math.Inf(-1)
		default:
			return d.elemError("%s is not a number (%s takes numbers and \"NaN\", \"Infinity\", \"-Infinity\")", d.tokenText(), d.dt)
		}
	} else {
		end, _, ok := d.number()
		if !ok {
			return d.elemError("%s is not a number (%s)", d.tokenText(), d.dt)
		}
		bits := 64
		if d.dt == FP32 {
			bits = 32 // straight to float32: one correct rounding
		}
		v, err := strconv.ParseFloat(string(d.b[d.pos:end]), bits)
		if err != nil {
			return d.elemError("%s is out of range for %s", d.tokenText(), d.dt)
		}
		f, finite = v, true
		d.pos = end
	}
	var h uint16
	switch d.dt {
	case FP16:
		h = Float32ToFP16(float64ToFloat32Odd(f))
		if finite && h&0x7fff == 0x7c00 {
			d.pos = start
			return d.elemError("%s is out of range for FP16", d.tokenText())
		}
	case BF16:
		h = Float32ToBF16(float64ToFloat32Odd(f))
		if finite && h&0x7fff == 0x7f80 {
			d.pos = start
			return d.elemError("%s is out of range for BF16", d.tokenText())
		}
	}
	if d.countOnly {
		return nil
	}
	switch d.dt {
	case FP16, BF16:
		binary.LittleEndian.PutUint16(d.out[2*i:], h)
	case FP32:
		binary.LittleEndian.PutUint32(d.out[4*i:], math.Float32bits(float32(f)))
	case FP64:
		binary.LittleEndian.PutUint64(d.out[8*i:], math.Float64bits(f))
	}
	return nil
}

// float64ToFloat32Odd narrows f to float32 rounding to odd: truncate, then
// set the last bit when the result is inexact. Rounding that again to a
// format at least two bits narrower (FP16, BF16) gives the correctly rounded
// result, which plain float32(f) followed by a second rounding does not.
func float64ToFloat32Odd(f float64) float32 {
	t := float32(f)
	if float64(t) == f || f != f {
		return t
	}
	b := math.Float32bits(t)
	if math.Abs(float64(t)) > math.Abs(f) {
		b-- // rounded away from zero (maybe to Inf): step back toward zero
	}
	return math.Float32frombits(b | 1)
}

func (d *jsonDecoder) bytesElem() error {
	b := d.b
	if b[d.pos] != '"' {
		return d.elemError("%s is not a string (BYTES takes JSON strings)", d.tokenText())
	}
	start := d.pos
	p := start + 1
	escaped := false
	for {
		if p >= len(b) {
			return d.elemError("unterminated string")
		}
		c := b[p]
		if c == '"' {
			break
		}
		if c < 0x20 {
			d.pos = p
			return d.elemError("control character 0x%02x in string (byte %d)", c, p)
		}
		if c == '\\' {
			escaped = true
			p++ // the escaped character cannot end the string
		}
		p++
	}
	tok := b[start : p+1]
	content := tok[1 : len(tok)-1]
	if escaped {
		// Escapes are rare: let encoding/json decode this one token.
		var s string
		if err := json.Unmarshal(tok, &s); err != nil {
			return d.elemError("invalid string %s: %v", d.tokenText(), err)
		}
		content = []byte(s)
	}
	if int64(len(content)) > math.MaxUint32 {
		return d.elemError("string of %d bytes is too long", len(content))
	}
	d.pos = p + 1
	if !d.countOnly {
		d.out = binary.LittleEndian.AppendUint32(d.out, uint32(len(content)))
		d.out = append(d.out, content...)
	}
	return nil
}

// AppendJSONData appends t's elements to dst as a flat JSON array, the
// `data` field of a JSON tensor. Floats use the shortest representation that
// reads back to the same value (32-bit for FP32, FP16 and BF16); NaN and
// infinities are written as the strings "NaN", "Infinity" and "-Infinity".
// BYTES elements become JSON strings and must be valid UTF-8: other contents
// can only travel in the binary tensor extension, and the error (wrapping
// errdefs.ErrInvalid) says so.
func AppendJSONData(dst []byte, t *Tensor) ([]byte, error) {
	if err := t.Validate(); err != nil {
		return dst, err
	}
	d := t.Data
	n := len(d)
	if sz := t.DataType.Size(); sz > 0 {
		n /= sz
	}
	// A guess at the size that avoids most regrowth.
	switch t.DataType {
	case Bytes:
		dst = slices.Grow(dst, len(d)+2)
	case Bool:
		dst = slices.Grow(dst, 6*n+2)
	case FP16, BF16, FP32, FP64:
		dst = slices.Grow(dst, 12*n+2)
	default:
		dst = slices.Grow(dst, (t.DataType.Size()*3+1)*n+2)
	}
	dst = append(dst, '[')
	if t.DataType == Bytes {
		i := 0
		for off := 0; off < len(d); i++ {
			l := int(binary.LittleEndian.Uint32(d[off:]))
			off += 4
			s := d[off : off+l]
			off += l
			if !utf8.Valid(s) {
				return dst, errdefs.Invalid(fmt.Sprintf("tensor %q: BYTES element %d is not valid UTF-8 and cannot be written as JSON; request this output with binary_data", t.Name, i))
			}
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = AppendJSONString(dst, string(s))
		}
		return append(dst, ']'), nil
	}
	for i := range n {
		if i > 0 {
			dst = append(dst, ',')
		}
		switch t.DataType {
		case Bool:
			if d[i] != 0 {
				dst = append(dst, "true"...)
			} else {
				dst = append(dst, "false"...)
			}
		case Uint8:
			dst = strconv.AppendUint(dst, uint64(d[i]), 10)
		case Uint16:
			dst = strconv.AppendUint(dst, uint64(binary.LittleEndian.Uint16(d[2*i:])), 10)
		case Uint32:
			dst = strconv.AppendUint(dst, uint64(binary.LittleEndian.Uint32(d[4*i:])), 10)
		case Uint64:
			dst = strconv.AppendUint(dst, binary.LittleEndian.Uint64(d[8*i:]), 10)
		case Int8:
			dst = strconv.AppendInt(dst, int64(int8(d[i])), 10)
		case Int16:
			dst = strconv.AppendInt(dst, int64(int16(binary.LittleEndian.Uint16(d[2*i:]))), 10)
		case Int32:
			dst = strconv.AppendInt(dst, int64(int32(binary.LittleEndian.Uint32(d[4*i:]))), 10)
		case Int64:
			dst = strconv.AppendInt(dst, int64(binary.LittleEndian.Uint64(d[8*i:])), 10)
		case FP16:
			dst = appendFloat(dst, float64(FP16ToFloat32(binary.LittleEndian.Uint16(d[2*i:]))), 32)
		case BF16:
			dst = appendFloat(dst, float64(BF16ToFloat32(binary.LittleEndian.Uint16(d[2*i:]))), 32)
		case FP32:
			dst = appendFloat(dst, float64(math.Float32frombits(binary.LittleEndian.Uint32(d[4*i:]))), 32)
		case FP64:
			dst = appendFloat(dst, math.Float64frombits(binary.LittleEndian.Uint64(d[8*i:])), 64)
		}
	}
	return append(dst, ']'), nil
}

func appendFloat(dst []byte, f float64, bits int) []byte {
	switch {
	case math.IsNaN(f):
		return append(dst, `"NaN"`...)
	case math.IsInf(f, 1):
		return append(dst, `"Infinity"`...)
	case math.IsInf(f, -1):
		return append(dst, `"-Infinity"`...)
	}
	return strconv.AppendFloat(dst, f, 'g', -1, bits)
}

const jsonHex = "0123456789abcdef"

// AppendJSONString appends s as a JSON string literal; invalid UTF-8
// becomes U+FFFD.
func AppendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRuneInString(s[i:])
			if r != utf8.RuneError || size != 1 {
				i += size
				continue
			}
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		dst = append(dst, s[start:i]...)
		switch c {
		case '"', '\\':
			dst = append(dst, '\\', c)
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\r':
			dst = append(dst, '\\', 'r')
		case '\t':
			dst = append(dst, '\\', 't')
		default:
			dst = append(dst, '\\', 'u', '0', '0', jsonHex[c>>4], jsonHex[c&0xf])
		}
		i++
		start = i
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
