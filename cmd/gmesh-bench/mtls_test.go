package main

import "testing"

// TestReplaceSection: -mtls rewrites its own section wherever it is, or
// adds it first in the kept part, and leaves the rest of the file as is.
func TestReplaceSection(t *testing.T) {
	const h = "## M"
	kept := keptMarker + " x -->\n"
	for _, tc := range []struct{ name, doc, want string }{
		{"replaced before another section", "# T\n\n" + kept + "\n" + h + "\n\nold\n\n## Next\n\nrest\n", "# T\n\n" + kept + "\n" + h + "\n\nnew\n\n## Next\n\nrest\n"},
		{"replaced at the end", "# T\n\n" + h + "\n\nold\n", "# T\n\n" + h + "\n\nnew\n\n"},
		{"inserted after the marker", "# T\n\n" + kept + "\n## Next\n", "# T\n\n" + kept + "\n" + h + "\n\nnew\n\n## Next\n"},
		{"appended without a marker", "# T\n", "# T\n\n" + h + "\n\nnew\n\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := replaceSection(tc.doc, h, h+"\n\nnew\n"); got != tc.want {
				t.Errorf("got\n%q\nwant\n%q", got, tc.want)
			}
		})
	}
}
