// Package npy reads and writes NumPy .npy files (format versions 1–3,
// C order, little-endian) as tensors, so the CLI accepts arrays saved
// with numpy.save.
package npy

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/accelpool/accelpool/errdefs"
	"github.com/accelpool/accelpool/tensor"
)

var descrs = map[string]tensor.DataType{
	"|b1": tensor.Bool, "|u1": tensor.Uint8, "<u2": tensor.Uint16, "<u4": tensor.Uint32, "<u8": tensor.Uint64,
	"|i1": tensor.Int8, "<i2": tensor.Int16, "<i4": tensor.Int32, "<i8": tensor.Int64,
	"<f2": tensor.FP16, "<f4": tensor.FP32, "<f8": tensor.FP64,
}

var (
	descrRE   = regexp.MustCompile(`'descr':\s*'([^']*)'`)
	fortranRE = regexp.MustCompile(`'fortran_order':\s*(True|False)`)
	shapeRE   = regexp.MustCompile(`'shape':\s*\(([^)]*)\)`)
)

// Decode parses an .npy file.
func Decode(name string, b []byte) (tensor.Tensor, error) {
	bad := func(f string, a ...any) (tensor.Tensor, error) {
		return tensor.Tensor{}, errdefs.Invalid("npy: " + fmt.Sprintf(f, a...))
	}
	if len(b) < 10 || !bytes.Equal(b[:6], []byte("\x93NUMPY")) {
		return bad("not a .npy file (bad magic)")
	}
	var hlen, off int
	switch b[6] {
	case 1:
		hlen, off = int(binary.LittleEndian.Uint16(b[8:])), 10
	case 2, 3:
		if len(b) < 12 {
			return bad("truncated header")
		}
		hlen, off = int(binary.LittleEndian.Uint32(b[8:])), 12
	default:
		return bad("unsupported format version %d", b[6])
	}
	if hlen < 0 || off+hlen > len(b) {
		return bad("header length %d runs past the file", hlen)
	}
	h := string(b[off : off+hlen])
	m := descrRE.FindStringSubmatch(h)
	if m == nil {
		return bad("header has no descr")
	}
	dt, ok := descrs[m[1]]
	if !ok {
		return bad("dtype %q is not supported (want little-endian bool, ints, floats)", m[1])
	}
	if f := fortranRE.FindStringSubmatch(h); f == nil || f[1] == "True" {
		return bad("only C-ordered arrays are supported")
	}
	s := shapeRE.FindStringSubmatch(h)
	if s == nil {
		return bad("header has no shape")
	}
	shape := []int64{}
	for _, p := range strings.Split(s[1], ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		d, err := strconv.ParseInt(p, 10, 64)
		if err != nil {
			return bad("shape %q: %v", s[1], err)
		}
		shape = append(shape, d)
	}
	want, err := tensor.ExpectedBytes(dt, shape)
	if err != nil {
		return tensor.Tensor{}, err
	}
	data := b[off+hlen:]
	if int64(len(data)) != want {
		return bad("%s%v needs %d data bytes, file has %d", dt, shape, want, len(data))
	}
	return tensor.Tensor{Name: name, DataType: dt, Shape: shape, Data: data}, nil
}

// Encode writes t as a version 1 .npy file.
func Encode(t tensor.Tensor) ([]byte, error) {
	descr := ""
	for d, dt := range descrs {
		if dt == t.DataType {
			descr = d
		}
	}
	if descr == "" {
		return nil, errdefs.Invalid(fmt.Sprintf("npy: datatype %s has no .npy equivalent", t.DataType))
	}
	dims := make([]string, len(t.Shape))
	for i, d := range t.Shape {
		dims[i] = strconv.FormatInt(d, 10)
	}
	shape := strings.Join(dims, ", ")
	if len(dims) == 1 {
		shape += ","
	}
	h := fmt.Sprintf("{'descr': '%s', 'fortran_order': False, 'shape': (%s), }", descr, shape)
	pad := 64 - (10+len(h)+1)%64
	h += strings.Repeat(" ", pad%64) + "\n"
	out := append([]byte("\x93NUMPY\x01\x00"), 0, 0)
	binary.LittleEndian.PutUint16(out[8:], uint16(len(h)))
	out = append(out, h...)
	return append(out, t.Data...), nil
}
