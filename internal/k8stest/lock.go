package k8stest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// acquireLock takes the machine's cluster lock (a file in the cache
// directory), waiting while another process holds it: the kubelet's fixed
// paths and the bridge allow one cluster per machine.
func acquireLock(ctx context.Context, log *slog.Logger) (*os.File, error) {
	cache, err := CacheDir()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return nil, fmt.Errorf("make %s: %w", cache, err)
	}
	path := filepath.Join(cache, "cluster.lock")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open the cluster lock: %w", err)
	}
	waited := false
	err = poll(ctx, 100*time.Millisecond, func() (bool, error) {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if errors.Is(err, syscall.EWOULDBLOCK) {
			if !waited {
				log.Info("waiting for another cluster on this machine to stop", "lock", path)
				waited = true
			}
			return false, nil
		}
		return err == nil, err
	})
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("take the cluster lock %s: %w", path, err)
	}
	return f, nil
}

func releaseLock(f *os.File) {
	_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	_ = f.Close()
}

// cleanupStale undoes a run whose state file is still under root: its owner
// died or was killed, since it no longer holds the lock.
func cleanupStale(ctx context.Context, log *slog.Logger, root string) error {
	st, ok, err := ReadState(stateFile(root))
	if err != nil {
		return err
	}
	if !ok {
		if _, err := os.Stat(root); err == nil {
			// A root without a state file: nothing recorded, but it may
			// hold mounts; clean what is under it.
			st = State{Root: root}
		} else {
			return nil
		}
	}
	log.Warn("cleaning up after an earlier cluster run", "root", root, "owner", st.Owner)
	return Cleanup(ctx, log, st)
}

// CleanupRootChecked is CleanupRoot that also returns what st (a killed
// run's state) still has on the machine (Leftovers), looked at before the
// lock is released: after that, the next cluster (another test package's,
// waiting on the lock) may already be making the same root directory.
func CleanupRootChecked(ctx context.Context, log *slog.Logger, root string, st State) ([]string, error) {
	lock, err := acquireLock(ctx, log)
	if err != nil {
		return nil, err
	}
	defer releaseLock(lock)
	err = cleanupStale(ctx, log, rootDir(root))
	return Leftovers(st), err
}

// CleanupRoot undoes whatever the state file under root records (the
// `gmesh-k8stest cleanup` command). It takes the cluster lock first, so it
// waits for a live cluster's owner to stop it.
func CleanupRoot(ctx context.Context, log *slog.Logger, root string) error {
	lock, err := acquireLock(ctx, log)
	if err != nil {
		return err
	}
	defer releaseLock(lock)
	return cleanupStale(ctx, log, rootDir(root))
}
