package scheduler

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/accelpool/accelpool/cluster"
)

// Explanation is the record of one decision: how every candidate fared,
// how many each checker rejected (Nomad's "filtered by" summary) and what
// was chosen. It is plain data (JSON-friendly) for the API and
// `accelpool explain APP`; Format renders it as text.
type Explanation struct {
	App         string `json:"app"`
	MemoryBytes int64  `json:"memoryBytes"`
	Count       int    `json:"count"`
	// Checkers are the policy's checker names, in evaluation order.
	Checkers []string       `json:"checkers"`
	Rankers  []RankerWeight `json:"rankers"`
	// Nodes is the number of nodes considered; Evaluated the number of
	// candidates (accelerators, plus one per node without any).
	Nodes     int `json:"nodes"`
	Evaluated int `json:"evaluated"`
	// Candidates are the candidates as evaluated before the first
	// placement, in node-name then accelerator-ID order: every one, or
	// with Policy.Top = N the N best-ranked and the first N rejected by
	// each checker. A node without accelerators appears as one candidate
	// rejected by "accelerators".
	Candidates []Outcome `json:"candidates"`
	// Omitted is the number of candidates evaluated but not recorded.
	Omitted int `json:"omitted,omitempty"`
	// Feasible candidates passed every checker; Fallbacks passed every
	// hard checker but not a soft one.
	Feasible  int `json:"feasible"`
	Fallbacks int `json:"fallbacks"`
	// Unchecked of the Feasible and Fallbacks candidates were ranked
	// below the recorded best and never run through the policy's
	// deferred checkers (DeferredChecker); they passed every other one.
	Unchecked int `json:"unchecked,omitempty"`
	// Filtered counts the candidates each checker rejected, in checker
	// order, omitting zeros.
	Filtered []Filtered `json:"filtered,omitempty"`
	// Placements are the chosen candidates, in order.
	Placements []Placement `json:"placements,omitempty"`
	// Failure says why fewer than Count instances were placed; empty on
	// success.
	Failure string `json:"failure,omitempty"`
	// FailedReevaluated are, when a placement after the first failed, the
	// candidates of the last placement's node evaluated again before the
	// failed attempt.
	FailedReevaluated []Outcome `json:"failedReevaluated,omitempty"`
}

// RankerWeight names a ranker and its normalised weight.
type RankerWeight struct {
	Name   string  `json:"name"`
	Weight float64 `json:"weight"`
}

// Filtered is the number of candidates one checker rejected.
type Filtered struct {
	Checker string `json:"checker"`
	Count   int    `json:"count"`
}

// Outcome is one candidate's evaluation: rejected (Checker and Reason
// set), or scored (Scores, one per ranker, their weighted Score, and Rank
// among the eligible candidates, 1 the best).
type Outcome struct {
	Node        string `json:"node"`
	Accelerator string `json:"accelerator,omitempty"`
	// Checker and Reason name the first checker that rejected the
	// candidate and why.
	Checker string `json:"checker,omitempty"`
	Reason  string `json:"reason,omitempty"`
	// Fallback is set on an eligible candidate a soft checker rejected
	// ("anti-affinity: node already runs 1 instance of x"); such
	// candidates rank after every candidate without one.
	Fallback string    `json:"fallback,omitempty"`
	Scores   []float64 `json:"scores,omitempty"`
	Score    float64   `json:"score"`
	// Rank is 0 for a rejected candidate and in re-evaluations.
	Rank int `json:"rank,omitempty"`
}

// Rejected reports whether a checker rejected the candidate.
func (o Outcome) Rejected() bool { return o.Checker != "" }

// Why is "checker: reason" for a rejected candidate.
func (o Outcome) Why() string {
	if o.Checker == "" {
		return ""
	}
	return o.Checker + ": " + o.Reason
}

// Placement is one chosen candidate.
type Placement struct {
	// Instance is the new instance: App, Node, Accelerator, model,
	// batching and MemoryBytes set; the caller assigns ID and Created.
	Instance cluster.Instance `json:"instance"`
	Score    float64          `json:"score"`
	Scores   []float64        `json:"scores,omitempty"`
	// Fallback is set when no candidate passed every checker and a soft
	// one was relaxed: that checker's reason on the chosen candidate.
	Fallback string `json:"fallback,omitempty"`
	// Reevaluated are the candidates of the previous placement's node,
	// evaluated again with that placement counted, before this one was
	// chosen.
	Reevaluated []Outcome `json:"reevaluated,omitempty"`
}

// Format writes the explanation as the tables `accelpool explain` shows:
// a summary, the placements, the ranked candidates with their scores and
// the rejected ones with their reasons.
func (e Explanation) Format(w io.Writer) error {
	ew := &errWriter{w: w}
	plural := "s"
	if e.Count == 1 {
		plural = ""
	}
	rankers := make([]string, len(e.Rankers))
	for i, r := range e.Rankers {
		rankers[i] = r.Name + "=" + strconv.FormatFloat(r.Weight, 'g', 3, 64)
	}
	ew.printf("app %s: %d instance%s of %s; rankers %s; checkers %s\n",
		e.App, e.Count, plural, FormatBytes(e.MemoryBytes), strings.Join(rankers, " "), strings.Join(e.Checkers, ", "))
	rejected := e.Evaluated - e.Feasible - e.Fallbacks
	ew.printf("%d candidates on %d nodes: %d feasible, %d fallback, %d rejected", e.Evaluated, e.Nodes, e.Feasible, e.Fallbacks, rejected)
	if len(e.Filtered) > 0 {
		parts := make([]string, len(e.Filtered))
		for i, f := range e.Filtered {
			parts[i] = f.Checker + " " + strconv.Itoa(f.Count)
		}
		ew.printf(" (%s)", strings.Join(parts, ", "))
	}
	ew.printf("\n")
	if e.Unchecked > 0 {
		ew.printf("%d of the feasible and fallback candidates ranked below the best were not run through the deferred checkers\n", e.Unchecked)
	}
	if e.Omitted > 0 {
		ew.printf("showing the best-ranked and a sample of the rejected; %d more not recorded\n", e.Omitted)
	}

	ew.printf("\nPlaced:\n")
	if len(e.Placements) == 0 {
		ew.printf("  none\n")
	} else {
		notes := slices.ContainsFunc(e.Placements, func(p Placement) bool { return p.Fallback != "" })
		t := newTable(ew, notes)
		t.row("#", "NODE", "ACCELERATOR", "SCORE")
		t.note("NOTE")
		for i, p := range e.Placements {
			t.row(strconv.Itoa(i+1), p.Instance.Node, p.Instance.Accelerator, score(p.Score))
			t.note(relaxed(p.Fallback))
		}
		t.flush()
		for i, p := range e.Placements {
			reevaluated(ew, i, e.Placements, p.Reevaluated)
		}
		reevaluated(ew, len(e.Placements), e.Placements, e.FailedReevaluated)
	}
	if e.Failure != "" {
		ew.printf("  not placed: %s\n", e.Failure)
	}

	var ranked []Outcome
	for _, o := range e.Candidates {
		if !o.Rejected() {
			ranked = append(ranked, o)
		}
	}
	slices.SortStableFunc(ranked, func(a, b Outcome) int { return a.Rank - b.Rank })
	ew.printf("\nRanked:\n")
	if len(ranked) == 0 {
		ew.printf("  none\n")
	} else {
		t := newTable(ew, e.Fallbacks > 0)
		t.row("RANK", "NODE", "ACCELERATOR", "SCORE")
		for _, r := range e.Rankers {
			t.row(strings.ToUpper(r.Name))
		}
		t.note("NOTE")
		for _, o := range ranked {
			t.row(strconv.Itoa(o.Rank), o.Node, o.Accelerator, score(o.Score))
			for _, v := range o.Scores {
				t.row(score(v))
			}
			t.note(fallbackNote(o.Fallback))
		}
		t.flush()
	}

	ew.printf("\nRejected:\n")
	if len(ranked) == len(e.Candidates) {
		ew.printf("  none\n")
	} else {
		t := newTable(ew, true)
		t.row("NODE", "ACCELERATOR", "CHECKER")
		t.note("REASON")
		for _, o := range e.Candidates {
			if o.Rejected() {
				t.row(o.Node, dash(o.Accelerator), o.Checker)
				t.note(o.Reason)
			}
		}
		t.flush()
	}
	return ew.err
}

// table is an indented tabwriter table whose last column (the note) is
// left out when a table has no notes, so lines carry no trailing blanks.
type table struct {
	tw    *tabwriter.Writer
	notes bool
	line  []string
}

func newTable(w io.Writer, notes bool) *table {
	return &table{tw: tabwriter.NewWriter(w, 0, 0, 2, ' ', 0), notes: notes}
}

// row adds cells to the current line.
func (t *table) row(cells ...string) { t.line = append(t.line, cells...) }

// note ends the current line with the note cell.
func (t *table) note(s string) {
	if t.notes {
		t.line = append(t.line, s)
	}
	fmt.Fprintf(t.tw, "  %s\n", strings.TrimRight(strings.Join(t.line, "\t"), "\t"))
	t.line = t.line[:0]
}

func (t *table) flush() { t.tw.Flush() }

func score(v float64) string { return strconv.FormatFloat(v, 'f', 3, 64) }

// reevaluated writes the candidates evaluated again before attempt i+1.
func reevaluated(ew *errWriter, i int, ps []Placement, outs []Outcome) {
	if len(outs) == 0 || i == 0 {
		return
	}
	ew.printf("  before #%d, after #%d on %s:\n", i+1, i, ps[i-1].Instance.Node)
	t := newTable(ew, true)
	for _, o := range outs {
		t.row("  "+o.Node, o.Accelerator)
		t.note(outcomeNote(o))
	}
	t.flush()
}

func outcomeNote(o Outcome) string {
	if o.Rejected() {
		return "rejected, " + o.Why()
	}
	s := "score " + strconv.FormatFloat(o.Score, 'f', 3, 64)
	if o.Fallback != "" {
		s += ", " + fallbackNote(o.Fallback)
	}
	return s
}

func relaxed(fallback string) string {
	if fallback == "" {
		return ""
	}
	return "relaxed " + fallback
}

func fallbackNote(fallback string) string {
	if fallback == "" {
		return ""
	}
	return "fallback, " + fallback
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// errWriter keeps the first write error.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	n, err := e.w.Write(p)
	e.err = err
	return n, err
}

func (e *errWriter) printf(format string, a ...any) { fmt.Fprintf(e, format, a...) }
