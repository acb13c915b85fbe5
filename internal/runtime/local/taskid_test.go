package local

import "testing"

func TestParseTaskID(t *testing.T) {
	for _, tc := range []struct {
		id, set string
		n       int
		ok      bool
	}{
		{TaskID("echo-server-0-9", 1), "echo-server-0-9", 1, true},
		{TaskID("echo-server-1-0", 12), "echo-server-1-0", 12, true},
		{"a-3", "a", 3, true},
		{"echo-server", "", 0, false}, // "server" is no number
		{"echo-0", "", 0, false},      // tasks count from 1
		{"echo-01", "", 0, false},     // TaskID never pads
		{"echo-+1", "", 0, false},
		{"echo-", "", 0, false},
		{"-1", "", 0, false},
		{"", "", 0, false},
		{"mesh/echo/virtualNode/billing/h-1", "mesh/echo/virtualNode/billing/h", 1, true},
	} {
		set, n, ok := ParseTaskID(tc.id)
		if set != tc.set || n != tc.n || ok != tc.ok {
			t.Errorf("ParseTaskID(%q) = %q, %d, %v; want %q, %d, %v", tc.id, set, n, ok, tc.set, tc.n, tc.ok)
		}
	}
}
