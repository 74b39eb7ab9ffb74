// Package yamlx makes YAML decoding errors point at the offending text:
// yaml.v3 reports type errors by line only ("line 8: cannot unmarshal
// !!str `fast` into float64"), so Explain appends the source line, which
// names the field.
package yamlx

import (
	"regexp"
	"strconv"
	"strings"
)

var lineRE = regexp.MustCompile(`line (\d+):`)

// Explain returns err's message with the quoted source line of each line
// it mentions.
func Explain(data []byte, err error) string {
	msg := err.Error()
	lines := strings.Split(string(data), "\n")
	return lineRE.ReplaceAllStringFunc(msg, func(m string) string {
		n, convErr := strconv.Atoi(lineRE.FindStringSubmatch(m)[1])
		if convErr != nil || n < 1 || n > len(lines) {
			return m
		}
		src := strings.TrimSpace(lines[n-1])
		if len(src) > 80 {
			src = src[:80] + "…"
		}
		return strings.TrimSuffix(m, ":") + ` ("` + src + `"):`
	})
}
