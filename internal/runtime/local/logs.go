package local

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/gmesh-dev/gmesh/internal/clock"
)

const (
	// defaultMaxLogBytes is the size at which a task's log file is rotated
	// once (to <file>.1, replacing an older one).
	defaultMaxLogBytes = 10 << 20
	// tailLines is how many recent lines a task keeps in memory.
	tailLines = 200
	// maxLineBytes splits longer lines so one runaway line cannot grow memory.
	maxLineBytes = 64 << 10
)

// logSink is one task's log: a file that survives restarts of the task, with
// a timestamp and the task id on every line, plus the last lines in memory.
type logSink struct {
	taskID string
	path   string
	max    int64
	clock  clock.Clock

	mu   sync.Mutex
	f    *os.File
	size int64
	tail []string // ring of the last tailLines lines
	next int      // index in tail of the next write once full
	err  error    // first write error, reported once
}

func openLogSink(path, taskID string, max int64, clk clock.Clock) (*logSink, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("create log directory: %w", err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open task log: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("stat task log: %w", err)
	}
	return &logSink{taskID: taskID, path: path, max: max, clock: clk, f: f, size: st.Size()}, nil
}

// copyFrom reads lines from r until EOF and writes each one.
func (l *logSink) copyFrom(r io.Reader) {
	br := bufio.NewReaderSize(r, 4096)
	var partial []byte
	for {
		chunk, err := br.ReadSlice('\n')
		partial = append(partial, chunk...)
		switch {
		case err == nil:
			l.line(partial[:len(partial)-1])
			partial = partial[:0]
		case errors.Is(err, bufio.ErrBufferFull):
			if len(partial) >= maxLineBytes {
				l.line(partial)
				partial = partial[:0]
			}
		default:
			if len(partial) > 0 {
				l.line(partial)
			}
			return
		}
	}
}

// Note writes a line from the supervisor itself (start, exit) to the log.
func (l *logSink) note(format string, args ...any) {
	if l == nil {
		return
	}
	l.line([]byte("[gmesh] " + fmt.Sprintf(format, args...)))
}

func (l *logSink) line(b []byte) {
	if n := len(b); n > 0 && b[n-1] == '\r' {
		b = b[:n-1]
	}
	s := l.clock.Now().UTC().Format("2006-01-02T15:04:05.000Z") + " " + l.taskID + " " + string(b)
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.tail) < tailLines {
		l.tail = append(l.tail, s)
	} else {
		l.tail[l.next] = s
		l.next = (l.next + 1) % tailLines
	}
	if l.f == nil {
		return
	}
	if l.size >= l.max {
		l.rotate()
	}
	if l.f == nil {
		return
	}
	n, err := l.f.WriteString(s + "\n")
	l.size += int64(n)
	if err != nil && l.err == nil {
		l.err = err
	}
}

// rotate moves the full file to <path>.1 and starts a new one. Called with
// l.mu held.
func (l *logSink) rotate() {
	l.f.Close()
	l.f = nil
	if err := os.Rename(l.path, l.path+".1"); err != nil && l.err == nil {
		l.err = err
	}
	f, err := os.OpenFile(l.path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		if l.err == nil {
			l.err = err
		}
		return
	}
	l.f, l.size = f, 0
}

// lines returns the last lines, oldest first.
func (l *logSink) lines() []string {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]string, 0, len(l.tail))
	if len(l.tail) < tailLines {
		return append(out, l.tail...)
	}
	out = append(out, l.tail[l.next:]...)
	return append(out, l.tail[:l.next]...)
}

func (l *logSink) close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return l.err
	}
	err := l.f.Close()
	l.f = nil
	return errors.Join(l.err, err)
}

// elapsed is a helper for log notes.
func elapsed(from, to time.Time) string { return to.Sub(from).Round(time.Millisecond).String() }
