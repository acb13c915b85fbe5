package statedir

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

func TestLookupMakesNothing(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "state")
	d, err := Lookup(missing)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Lookup(missing) error = %v, want fs.ErrNotExist", err)
	}
	if d.Path != missing {
		t.Errorf("Lookup(missing).Path = %q, want %q", d.Path, missing)
	}
	if _, err := os.Stat(missing); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Lookup made %s (stat: %v)", missing, err)
	}

	made, err := Open(missing)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Lookup(missing)
	if err != nil || got != made {
		t.Errorf("Lookup(existing) = %v, %v; want %v, nil", got, err, made)
	}

	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Lookup(file); err == nil {
		t.Errorf("Lookup(a file) succeeded, want an error")
	}
}

func TestLookupDefault(t *testing.T) {
	t.Chdir(t.TempDir())
	d, err := Lookup("")
	if !errors.Is(err, fs.ErrNotExist) || filepath.Base(d.Path) != Default {
		t.Errorf("Lookup(\"\") = %v, %v; want ./%s and fs.ErrNotExist", d, err, Default)
	}
	if _, err := os.Stat(Default); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Lookup made ./%s", Default)
	}
}
