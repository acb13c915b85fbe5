package mesh

import (
	"strings"
	"testing"
	"time"
)

// TestHostileInputsAreCheap checks that inputs within the size limit but
// built to be slow are refused quickly and with a bounded error list.
func TestHostileInputsAreCheap(t *testing.T) {
	aliases := "a: &a [x, x, x, x, x, x, x, x, x]\n"
	for _, c := range "bcdefghi" {
		prev := string(c - 1)
		aliases += string(c) + ": &" + string(c) + " [" + strings.Repeat("*"+prev+", ", 8) + "*" + prev + "]\n"
	}
	for _, tc := range []struct {
		name, data, want string
	}{
		{"many bad documents", strings.Repeat("---\na: 1\n", 100000), "more errors"},
		{"deep nesting", strings.Repeat("[", 1<<20), "exceeded max depth"},
		{"alias bomb", aliases, "excessive aliasing"},
		{"deep YAML flow nesting", "a: " + strings.Repeat("[", 1<<20), "invalid YAML"},
		{"deep YAML block nesting", strings.Repeat("- ", 100000) + "x\n", "document 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			_, err := Decode("f.yaml", []byte(tc.data))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %.200v, want an error containing %q", err, tc.want)
			}
			if n := len(err.(Errors)); n > MaxReportedErrors+1 {
				t.Errorf("got %d errors, want at most %d", n, MaxReportedErrors+1)
			}
			// A hang guard, not a speed goal (a few seconds idle; 28 s was
			// seen under -race on a 2-core machine at load 20): an input
			// built to be slow must not run away.
			if d := time.Since(start); d > 2*time.Minute {
				t.Errorf("took %v", d)
			}
		})
	}
}
