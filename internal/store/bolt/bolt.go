// Package bolt is the durable store.Store: one bbolt file in the control
// plane's state directory.
//
// The file is locked while open: a second process (or a second Open) fails
// with a clear error naming the holder's pid, so all writers must go through
// the control plane process that holds it. Every commit is one bbolt
// transaction, fsynced before Commit returns; a crash leaves either the old
// or the new revision. Open checks the file (meta pages, size, bbolt's own
// consistency check, every stored resource) and refuses a damaged file with
// instructions rather than starting empty.
package bolt

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	bbolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/gmesh-dev/gmesh/internal/mesh"
	"github.com/gmesh-dev/gmesh/internal/store"
)

// SchemaVersion is the layout version this code writes and reads.
const SchemaVersion = 1

var (
	bucketMeta      = []byte("meta")
	bucketResources = []byte("resources")
	bucketEndpoints = []byte("endpoints")
	keySchema       = []byte("schema")
	keyRevision     = []byte("revision")
)

// Options tune Open.
type Options struct {
	store.Options
	// LockTimeout is how long Open waits for another process to release
	// the file (default 1s).
	LockTimeout time.Duration
	// CheckTimeout bounds bbolt's consistency check on open (default 10s);
	// past it, Open goes on and logs a warning.
	CheckTimeout time.Duration
	// NoSync skips fsync (tests only: not crash-safe).
	NoSync bool

	// failWrite, when set, is called inside every write transaction;
	// an error aborts the transaction (tests of failed commits).
	failWrite func() error
}

// Store is the bbolt-backed store.
type Store struct {
	*store.Engine
	path string
}

var _ store.Store = (*Store)(nil)

// Path returns the database file's path.
func (s *Store) Path() string { return s.path }

// Open opens (creating if needed) the store file at path, whose directory is
// created with mode 0700; the file gets mode 0600.
func Open(path string, opts Options) (*Store, error) {
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = time.Second
	}
	if opts.CheckTimeout <= 0 {
		opts.CheckTimeout = 10 * time.Second
	}
	if err := ensureDir(filepath.Dir(path)); err != nil {
		return nil, err
	}
	if err := precheck(path); err != nil {
		return nil, err
	}
	db, err := openDB(path, opts)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		db.Close()
		return nil, internal("set mode of state file %s: %v", path, err)
	}
	b := &backend{db: db, path: path, failWrite: opts.failWrite}
	if err := b.init(opts.CheckTimeout, opts.Logger); err != nil {
		db.Close()
		return nil, err
	}
	e, err := store.New(b, opts.Options)
	if err != nil {
		db.Close()
		return nil, err
	}
	return &Store{Engine: e, path: path}, nil
}

func internal(format string, args ...any) *mesh.Error {
	return mesh.Errorf(mesh.EInternal, format, args...)
}

// damaged is the error for a file that is not a sound store.
func damaged(path string, cause any) *mesh.Error {
	return internal("state file %s is damaged or is not a gmesh store (%v); gmesh will not start with an empty store in its place: "+
		"restore the file from a backup, or move it away (mv %s %s.broken) to start with an empty store", path, cause, path, path)
}

func ensureDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return internal("create state directory %s: %v", dir, err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return internal("state directory %s: %v", dir, err)
	}
	// Tighten a directory we own, but never a shared one such as /tmp.
	if fi.Mode().Perm()&0o077 != 0 && fi.Mode()&os.ModeSticky == 0 {
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) == os.Getuid() {
			if err := os.Chmod(dir, 0o700); err != nil {
				return internal("set mode 0700 on state directory %s: %v", dir, err)
			}
		}
	}
	return nil
}

func openDB(path string, opts Options) (db *bbolt.DB, err error) {
	defer func() {
		if p := recover(); p != nil {
			db, err = nil, damaged(path, fmt.Sprint("bbolt: ", p))
		}
	}()
	db, err = bbolt.Open(path, 0o600, &bbolt.Options{Timeout: opts.LockTimeout, NoSync: opts.NoSync, NoFreelistSync: false})
	switch {
	case err == nil:
		return db, nil
	case errors.Is(err, berrors.ErrTimeout):
		holder := ""
		if pid := lockHolder(path); pid > 0 {
			holder = fmt.Sprintf(" (pid %d)", pid)
		}
		return nil, &mesh.Error{Code: mesh.EUnavailable, Err: err, Message: fmt.Sprintf(
			"state directory %s is in use by another gmesh process%s: only one control plane may use a state directory; talk to it (gmesh --state-dir %s ...) or stop it first",
			filepath.Dir(path), holder, filepath.Dir(path))}
	case errors.Is(err, os.ErrPermission):
		return nil, internal("open state file %s: %v", path, err)
	}
	return nil, damaged(path, err)
}

// lockHolder finds the pid holding a lock on path in /proc/locks (Linux), or 0.
func lockHolder(path string) int {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0
	}
	f, err := os.Open("/proc/locks")
	if err != nil {
		return 0
	}
	defer f.Close()
	suffix := ":" + strconv.FormatUint(st.Ino, 10)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// 1: FLOCK  ADVISORY  WRITE 12345 fd:01:1234567 0 EOF
		fields := strings.Fields(sc.Text())
		if len(fields) >= 6 && fields[1] == "FLOCK" && strings.HasSuffix(fields[5], suffix) {
			if pid, err := strconv.Atoi(fields[4]); err == nil {
				return pid
			}
		}
	}
	return 0
}

// precheck reads bbolt's two meta pages itself, so that a truncated file is
// refused before bbolt maps it (reading past the end of a mapped file kills
// the process, it cannot be recovered).
func precheck(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return internal("open state file %s: %v", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return internal("state file %s: %v", path, err)
	}
	size := fi.Size()
	if size == 0 {
		return damaged(path, "the file is empty")
	}
	const (
		pageHeader = 16
		magic      = 0xED0CDAED
		metaLen    = 64 // through the checksum
	)
	type meta struct {
		pageSize    uint32
		pgid, txid  uint64
		valid       bool
		description string
	}
	readMeta := func(off int64) meta {
		buf := make([]byte, pageHeader+metaLen)
		if _, err := f.ReadAt(buf, off); err != nil && !errors.Is(err, io.EOF) {
			return meta{description: err.Error()}
		}
		m := buf[pageHeader:]
		le := binary.LittleEndian
		if le.Uint32(m[0:]) != magic {
			return meta{description: "bad magic number"}
		}
		h := fnv.New64a()
		h.Write(m[:56])
		if h.Sum64() != le.Uint64(m[56:]) {
			return meta{description: "meta page checksum mismatch"}
		}
		return meta{pageSize: le.Uint32(m[8:]), pgid: le.Uint64(m[40:]), txid: le.Uint64(m[48:]), valid: true}
	}
	m0 := readMeta(0)
	ps := int64(m0.pageSize)
	if !m0.valid || ps < 512 || ps > 1<<20 {
		ps = int64(os.Getpagesize())
	}
	m1 := readMeta(ps)
	best := m0
	if !m0.valid || (m1.valid && m1.txid > m0.txid) {
		best = m1
	}
	if !best.valid {
		return damaged(path, "not a bbolt database: "+m0.description)
	}
	if need := int64(best.pgid) * int64(best.pageSize); size < need {
		return damaged(path, fmt.Sprintf("the file is truncated: %d bytes, want at least %d", size, need))
	}
	return nil
}

type backend struct {
	db        *bbolt.DB
	path      string
	failWrite func() error
}

// init creates the buckets of a new file, or checks an existing one.
func (b *backend) init(checkTimeout time.Duration, log *slog.Logger) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = damaged(b.path, fmt.Sprint("bbolt: ", p))
		}
	}()
	if err := b.check(checkTimeout, log); err != nil {
		return err
	}
	return b.db.Update(func(tx *bbolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if meta == nil {
			empty := true
			tx.ForEach(func([]byte, *bbolt.Bucket) error { empty = false; return nil })
			if !empty {
				return damaged(b.path, "a bbolt database without gmesh's meta bucket")
			}
			for _, name := range [][]byte{bucketMeta, bucketResources, bucketEndpoints} {
				if _, err := tx.CreateBucket(name); err != nil {
					return internal("initialize state file %s: %v", b.path, err)
				}
			}
			return tx.Bucket(bucketMeta).Put(keySchema, []byte(strconv.Itoa(SchemaVersion)))
		}
		v, err := strconv.Atoi(string(meta.Get(keySchema)))
		switch {
		case err != nil:
			return damaged(b.path, fmt.Sprintf("bad schema version %q", meta.Get(keySchema)))
		case v > SchemaVersion:
			return internal("state file %s has schema version %d, newer than this gmesh understands (%d); use a newer gmesh", b.path, v, SchemaVersion)
		}
		if tx.Bucket(bucketResources) == nil || tx.Bucket(bucketEndpoints) == nil {
			return damaged(b.path, "missing buckets")
		}
		return nil
	})
}

// check runs bbolt's consistency check, bounded by timeout.
func (b *backend) check(timeout time.Duration, log *slog.Logger) error {
	result := make(chan error, 1)
	go func() {
		result <- b.db.View(func(tx *bbolt.Tx) error {
			var errs []string
			for err := range tx.Check() {
				if len(errs) < 5 {
					errs = append(errs, err.Error())
				}
			}
			if len(errs) > 0 {
				return damaged(b.path, strings.Join(errs, "; "))
			}
			return nil
		})
	}()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case err := <-result:
		return err
	case <-timer.C:
		if log != nil {
			log.Warn("state file check did not finish in time; going on", "path", b.path, "timeout", timeout)
		}
		return nil
	}
}

func resourceKey(ref mesh.Ref) []byte {
	return []byte(string(ref.Kind) + "\x00" + ref.Mesh + "\x00" + ref.Name)
}

func (b *backend) Load() (st *mesh.State, eps []*mesh.Endpoint, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = damaged(b.path, fmt.Sprint("bbolt: ", p))
		}
	}()
	st = mesh.NewState()
	err = b.db.View(func(tx *bbolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if v := meta.Get(keyRevision); v != nil {
			if len(v) != 8 {
				return damaged(b.path, "bad revision")
			}
			st.Revision = binary.BigEndian.Uint64(v)
		}
		err := tx.Bucket(bucketResources).ForEach(func(k, v []byte) error {
			var r mesh.Resource
			if err := json.Unmarshal(v, &r); err != nil {
				return damaged(b.path, fmt.Sprintf("resource %q does not decode: %v", strings.ReplaceAll(string(k), "\x00", "/"), err))
			}
			if string(resourceKey(r.Ref())) != string(k) {
				return damaged(b.path, fmt.Sprintf("resource %q is stored under the wrong key", strings.ReplaceAll(string(k), "\x00", "/")))
			}
			st.Put(&r)
			return nil
		})
		if err != nil {
			return err
		}
		return tx.Bucket(bucketEndpoints).ForEach(func(k, v []byte) error {
			var ep mesh.Endpoint
			dec := json.NewDecoder(strings.NewReader(string(v)))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&ep); err != nil {
				return damaged(b.path, fmt.Sprintf("endpoint %q does not decode: %v", k, err))
			}
			eps = append(eps, &ep)
			return nil
		})
	})
	if err != nil {
		return nil, nil, err
	}
	return st, eps, nil
}

func (b *backend) update(fn func(tx *bbolt.Tx) error) error {
	return b.db.Update(func(tx *bbolt.Tx) error {
		if b.failWrite != nil {
			if err := b.failWrite(); err != nil {
				return err
			}
		}
		return fn(tx)
	})
}

func (b *backend) Write(rev uint64, puts []*mesh.Resource, deletes []mesh.Ref) error {
	err := b.update(func(tx *bbolt.Tx) error {
		res := tx.Bucket(bucketResources)
		for _, r := range puts {
			v, err := json.Marshal(r)
			if err != nil {
				return fmt.Errorf("encode %s: %w", r.Ref(), err)
			}
			if err := res.Put(resourceKey(r.Ref()), v); err != nil {
				return err
			}
		}
		for _, ref := range deletes {
			if err := res.Delete(resourceKey(ref)); err != nil {
				return err
			}
		}
		var v [8]byte
		binary.BigEndian.PutUint64(v[:], rev)
		return tx.Bucket(bucketMeta).Put(keyRevision, v[:])
	})
	if err != nil {
		return fmt.Errorf("write %s: %w", b.path, err)
	}
	return nil
}

func (b *backend) PutEndpoint(ep *mesh.Endpoint) error {
	v, err := json.Marshal(ep)
	if err != nil {
		return err
	}
	return b.update(func(tx *bbolt.Tx) error { return tx.Bucket(bucketEndpoints).Put([]byte(ep.ID), v) })
}

func (b *backend) DeleteEndpoint(id string) error {
	return b.update(func(tx *bbolt.Tx) error { return tx.Bucket(bucketEndpoints).Delete([]byte(id)) })
}

func (b *backend) Close() error { return b.db.Close() }
