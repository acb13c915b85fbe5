package bolt

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.etcd.io/bbolt"

	"github.com/gmesh-dev/gmesh/internal/mesh"
)

// TestLoadsEndpointWithTopLevelProcessFields opens a store holding an
// endpoint written before mesh.ProcessStatus existed, with pid, restarts,
// lastExit and restartAt at the top level: they come back as its Process.
func TestLoadsEndpointWithTopLevelProcessFields(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	path := filepath.Join(t.TempDir(), "state", "state.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	old := `{"id":"echo-v1-1","mesh":"echo","service":"echo-server","address":"127.0.0.2","port":8080,` +
		`"attributes":{"taskSet":"echo-v1","version":"1.0"},"pid":4242,"restarts":3,"state":"STOPPED","health":"UNKNOWN",` +
		`"lastExit":"exit status 3","restartAt":"2026-01-02T03:04:05Z"}`
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketEndpoints).Put([]byte("echo-v1-1"), []byte(old))
	}); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	s, err = Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	eps, err := s.ListEndpoints(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []*mesh.Endpoint{{
		ID: "echo-v1-1", Mesh: "echo", Service: "echo-server", Address: "127.0.0.2", Port: 8080,
		Attributes: map[string]string{"taskSet": "echo-v1", "version": "1.0"},
		State:      mesh.TaskStopped, Health: mesh.HealthUnknown,
		Process: &mesh.ProcessStatus{PID: 4242, Restarts: 3, LastExit: "exit status 3", RestartAt: "2026-01-02T03:04:05Z"},
	}}
	if d := cmp.Diff(want, eps); d != "" {
		t.Errorf("loaded endpoints (-want +got):\n%s", d)
	}
}
