package bolt

import (
	"path/filepath"
	"testing"

	"github.com/gmesh-dev/gmesh/internal/store"
	"github.com/gmesh-dev/gmesh/internal/store/storetest"
)

func openTemp(t *testing.T, opts Options) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "state", "state.db"), opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// failable lets the conformance suite make writes fail.
type failable struct {
	*Store
	fail *error
}

func (f failable) FailWrites(err error) { *f.fail = err }

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T, opts store.Options) store.Store {
		var fail error
		s := openTemp(t, Options{Options: opts, failWrite: func() error { return fail }})
		return failable{s, &fail}
	})
}
