package rest

import (
	"encoding/json"
	"fmt"
	"strings"
)

// The keys of a request's objects. encoding/json, which decodes them,
// keeps the last of a key given twice and matches keys case-insensitively;
// checkRequestKeys refuses both before it runs.
var (
	requestKeys = []string{"id", "parameters", "inputs", "outputs"}
	tensorKeys  = []string{"name", "shape", "datatype", "parameters", "data"}
	outputKeys  = []string{"name", "parameters"}
)

// checkRequestKeys walks a request header's JSON once, without allocating
// for the values it skips (tensor data), and refuses a key given twice in
// the request, an input or a requested output, and a key that matches one
// of the protocol's only when case is ignored ("Inputs"). Malformed JSON
// passes: json.Unmarshal reports it with its position.
func checkRequestKeys(b []byte) error {
	s := keyScanner{b: b}
	return s.object("request", -1, requestKeys, func(key string) error {
		var what string
		var known []string
		switch key {
		case "inputs":
			what, known = "input", tensorKeys
		case "outputs":
			what, known = "requested output", outputKeys
		default:
			return s.skip()
		}
		return s.array(func(i int) error {
			return s.object(what, i, known, func(string) error { return s.skip() })
		})
	})
}

// errMalformed stops a walk over JSON that json.Unmarshal will refuse.
var errMalformed = fmt.Errorf("malformed")

type keyScanner struct {
	b []byte
	i int
}

func (s *keyScanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// peek returns the next non-space byte, or 0 at the end.
func (s *keyScanner) peek() byte {
	s.ws()
	if s.i >= len(s.b) {
		return 0
	}
	return s.b[s.i]
}

// str reads a string and returns its value.
func (s *keyScanner) str() (string, error) {
	if s.peek() != '"' {
		return "", errMalformed
	}
	start, escaped := s.i, false
	for s.i++; s.i < len(s.b); s.i++ {
		switch s.b[s.i] {
		case '\\':
			escaped = true
			s.i++
		case '"':
			s.i++
			raw := s.b[start:s.i]
			if !escaped {
				return string(raw[1 : len(raw)-1]), nil
			}
			var v string
			if err := json.Unmarshal(raw, &v); err != nil {
				return "", errMalformed
			}
			return v, nil
		}
	}
	return "", errMalformed
}

// skip passes over one value of any kind.
func (s *keyScanner) skip() error {
	switch s.peek() {
	case '"':
		_, err := s.str()
		return err
	case '{', '[':
	default:
		for s.i < len(s.b) && !strings.ContainsRune(",}] \t\n\r", rune(s.b[s.i])) {
			s.i++
		}
		return nil
	}
	depth := 0
	for ; s.i < len(s.b); s.i++ {
		switch s.b[s.i] {
		case '"':
			if _, err := s.str(); err != nil {
				return err
			}
			s.i--
		case '{', '[':
			depth++
		case '}', ']':
			depth--
			if depth == 0 {
				s.i++
				return nil
			}
		}
	}
	return errMalformed
}

// object walks an object (null is none), checking its keys against known
// and calling value for each, positioned at the value. Errors name the
// object as what, followed by index unless it is negative.
func (s *keyScanner) object(what string, index int, known []string, value func(key string) error) error {
	name := func() string { // only for errors: no formatting on the way
		if index < 0 {
			return what
		}
		return fmt.Sprintf("%s %d", what, index)
	}
	switch s.peek() {
	case 'n':
		return s.skip()
	case '{':
		s.i++
	default:
		return nil // not an object: json.Unmarshal says so
	}
	var seen []string        // the first keys, compared in place
	var many map[string]bool // beyond them, so many keys stay linear
	for {
		if s.peek() == '}' {
			s.i++
			return nil
		}
		key, err := s.str()
		if err != nil {
			return nilIfMalformed(err)
		}
		if s.peek() != ':' {
			return nil
		}
		s.i++
		dup := many[key]
		for _, k := range seen {
			dup = dup || k == key
		}
		if dup {
			return invalidf("%s: key %q is given twice", name(), key)
		}
		if len(seen) < 8 {
			seen = append(seen, key)
		} else {
			if many == nil {
				many = map[string]bool{}
			}
			many[key] = true
		}
		for _, k := range known {
			if k != key && strings.EqualFold(k, key) {
				return invalidf("%s: key %q is not %q (keys are case-sensitive)", name(), key, k)
			}
		}
		if err := value(key); err != nil {
			return nilIfMalformed(err)
		}
		switch s.peek() {
		case ',':
			s.i++
		case '}':
		default:
			return nil
		}
	}
}

// array walks an array (null is none), calling elem at each element.
func (s *keyScanner) array(elem func(i int) error) error {
	switch s.peek() {
	case 'n':
		return s.skip()
	case '[':
		s.i++
	default:
		return s.skip()
	}
	for i := 0; ; i++ {
		if s.peek() == ']' {
			s.i++
			return nil
		}
		if err := elem(i); err != nil {
			return err
		}
		switch s.peek() {
		case ',':
			s.i++
		case ']':
		default:
			return errMalformed
		}
	}
}

func nilIfMalformed(err error) error {
	if err == errMalformed {
		return nil
	}
	return err
}
