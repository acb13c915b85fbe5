// Package memstore is an in-memory store.Store for tests: the same commit
// logic as the durable store (store.Engine), over a backend that keeps
// nothing but can be told to fail.
package memstore

import (
	"sync"

	"github.com/gmesh-dev/gmesh/internal/mesh"
	"github.com/gmesh-dev/gmesh/internal/store"
)

// Store is an in-memory store.
type Store struct {
	*store.Engine
	b *backend
}

var _ store.Store = (*Store)(nil)

// New returns an empty in-memory store.
func New(opts store.Options) *Store {
	b := &backend{}
	e, err := store.New(b, opts)
	if err != nil {
		panic("memstore: " + err.Error()) // an empty backend cannot fail to load
	}
	return &Store{Engine: e, b: b}
}

// FailWrites makes every later write fail with err (nil: succeed again), to
// test that a failed commit changes nothing.
func (s *Store) FailWrites(err error) {
	s.b.mu.Lock()
	s.b.fail = err
	s.b.mu.Unlock()
}

// backend keeps no copy: Engine's in-memory snapshot is the state.
type backend struct {
	mu   sync.Mutex
	fail error
}

func (b *backend) Load() (*mesh.State, []*mesh.Endpoint, error) { return mesh.NewState(), nil, nil }

func (b *backend) err() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.fail
}

func (b *backend) Write(uint64, []*mesh.Resource, []mesh.Ref) error { return b.err() }
func (b *backend) PutEndpoint(*mesh.Endpoint) error                 { return b.err() }
func (b *backend) DeleteEndpoint(string) error                      { return b.err() }
func (b *backend) Close() error                                     { return nil }
