package memstore

import (
	"testing"

	"github.com/gmesh-dev/gmesh/internal/store"
	"github.com/gmesh-dev/gmesh/internal/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T, opts store.Options) store.Store { return New(opts) })
}
