package repository

import (
	"errors"
	"strings"
	"testing"

	"github.com/accelpool/accelpool/errdefs"
)

func TestParsePreprocess(t *testing.T) {
	c, err := ParseConfig([]byte(`
preprocess:
  image:
    width: 224
    height: 160
    layout: NHWC
    scale: 0.0078125
    mean: [0.485, 0.456, 0.406]
    std: [0.229, 0.224, 0.225]
    bgr: true
    datatype: FP16
  other: {}
`))
	if err != nil {
		t.Fatal(err)
	}
	p := c.Preprocess["image"]
	if p.Width != 224 || p.Height != 160 || p.Layout != "NHWC" || p.Scale == nil || *p.Scale != 0.0078125 ||
		len(p.Mean) != 3 || p.Std[2] != 0.225 || !p.BGR || p.DataType != "FP16" {
		t.Errorf("parsed %+v", p)
	}
	if o, ok := c.Preprocess["other"]; !ok || o.Scale != nil || o.Width != 0 {
		t.Errorf("empty entry: %+v %v", o, ok)
	}
	for doc, field := range map[string]string{
		"preprocess: {x: {layout: CHW}}":         "preprocess.x.layout",
		"preprocess: {x: {mean: [1, 2]}}":        "preprocess.x.mean",
		"preprocess: {x: {std: [1, 0, 1]}}":      "preprocess.x.std[1]",
		"preprocess: {x: {std: [1, 1, 1, 1]}}":   "preprocess.x.std",
		"preprocess: {x: {scale: 0}}":            "preprocess.x.scale",
		"preprocess: {x: {scale: .nan}}":         "preprocess.x.scale",
		"preprocess: {x: {width: -1}}":           "preprocess.x.width",
		"preprocess: {x: {height: 100000}}":      "preprocess.x.height",
		"preprocess: {x: {datatype: INT8}}":      "preprocess.x.datatype",
		"preprocess: {x: {mean: [1, .inf, 1]}}":  "preprocess.x.mean[1]",
		"preprocess: {x: {widht: 3}}":            "widht",
		"preprocess: {x: {width: wide}}":         "width: wide",
		"preprocess: {'': {}}":                   "preprocess",
		"preprocess: [x]":                        "preprocess",
		"preprocess: {a: {}, b: {layout: nchw}}": "preprocess.b.layout",
	} {
		if _, err := ParseConfig([]byte(doc)); !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), field) {
			t.Errorf("%q: %v (want ErrInvalid naming %s)", doc, err, field)
		}
	}
}
