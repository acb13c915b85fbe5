package bolt

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/gmesh-dev/gmesh/internal/mesh"
	"github.com/gmesh-dev/gmesh/internal/store/storetest"
)

func echoStack(t testing.TB) []*mesh.Resource {
	t.Helper()
	b, err := os.ReadFile("../../mesh/testdata/echo-stack.yaml")
	if err != nil {
		t.Fatal(err)
	}
	rs, err := mesh.Decode("echo-stack.yaml", b)
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

func TestReopenKeepsEverything(t *testing.T) {
	ctx := storetest.Context(t)
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Commit(ctx, echoStack(t), nil); err != nil {
		t.Fatal(err)
	}
	ref := mesh.Ref{Kind: mesh.KindService, Mesh: "echo", Name: "echo-server"}
	if _, err := s.UpdateStatus(ctx, ref, map[string]any{"tasks": 2}, ""); err != nil {
		t.Fatal(err)
	}
	if err := s.PutEndpoint(ctx, &mesh.Endpoint{ID: "t1", Mesh: "echo", Service: "echo-server", Port: 50051, Attributes: map[string]string{"version": "0.9"}}); err != nil {
		t.Fatal(err)
	}
	before, _ := s.State(ctx)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	after, _ := s.State(ctx)
	if diff := cmp.Diff(before, after); diff != "" {
		t.Errorf("state after reopen (-before +after):\n%s", diff)
	}
	eps, _ := s.ListEndpoints(ctx)
	if len(eps) != 1 || eps[0].Attributes["version"] != "0.9" {
		t.Errorf("endpoints after reopen: got %+v", eps)
	}
	res, err := s.Commit(ctx, echoStack(t), nil)
	if err != nil || res.Revision != before.Revision {
		t.Errorf("re-apply after reopen: got revision %d, %v; want unchanged %d", res.Revision, err, before.Revision)
	}
}

func TestFileModes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "state.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	for _, tc := range []struct {
		path string
		want os.FileMode
	}{{dir, 0o700}, {path, 0o600}} {
		fi, err := os.Stat(tc.path)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != tc.want {
			t.Errorf("%s: got mode %o, want %o", tc.path, got, tc.want)
		}
	}
}

func TestSecondOpenFailsClearly(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, err = Open(path, Options{LockTimeout: 50 * 1e6})
	want := fmt.Sprintf("state directory %s is in use by another gmesh process (pid %d)", filepath.Dir(path), os.Getpid())
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("second Open: got %v, want it to contain %q", err, want)
	}
	if mesh.ErrorCode(err) != mesh.EUnavailable {
		t.Errorf("code: got %q, want %q", mesh.ErrorCode(err), mesh.EUnavailable)
	}
}

func TestDamagedFileIsRefused(t *testing.T) {
	ctx := storetest.Context(t)
	good := filepath.Join(t.TempDir(), "good.db")
	s, err := Open(good, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Commit(ctx, echoStack(t), nil); err != nil {
		t.Fatal(err)
	}
	s.Close()
	orig, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	ps := os.Getpagesize()
	for _, tc := range []struct {
		name    string
		corrupt func([]byte) []byte
		want    string
	}{
		{"empty", func([]byte) []byte { return nil }, "the file is empty"},
		{"truncated", func(b []byte) []byte { return b[:len(b)/2] }, "the file is truncated"},
		{"truncated to one page", func(b []byte) []byte { return b[:ps] }, "damaged"},
		{"text file", func([]byte) []byte { return []byte("hello, I am not a database\n") }, "not a bbolt database"},
		{"garbled meta pages", func(b []byte) []byte {
			for i := 16; i < 2*ps; i += 7 {
				b[i] ^= 0x5a
			}
			return b
		}, "damaged"},
		{"garbled resource", func(b []byte) []byte {
			i := bytes.Index(b, []byte(`"echo-server-route"`))
			if i < 0 {
				t.Fatal("no route in the file")
			}
			copy(b[i:], `{{{{{{{{{{{{{{{{{{{`)
			return b
		}, "damaged"},
		{"garbled data pages", func(b []byte) []byte {
			for i := 2 * ps; i < len(b); i += 3 {
				b[i] ^= 0xff
			}
			return b
		}, "damaged"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "state.db")
			if err := os.WriteFile(path, tc.corrupt(bytes.Clone(orig)), 0o600); err != nil {
				t.Fatal(err)
			}
			s, err := Open(path, Options{})
			if err == nil {
				s.Close()
				t.Fatalf("Open of a damaged file: got no error")
			}
			t.Log(err)
			for _, want := range []string{path, tc.want, "restore the file from a backup", "mv " + path} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("got %v\nwant it to contain %q", err, want)
				}
			}
		})
	}
}

func TestFailedCommitKeepsState(t *testing.T) {
	ctx := storetest.Context(t)
	var fail error
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := Open(path, Options{failWrite: func() error { return fail }})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Commit(ctx, echoStack(t), nil); err != nil {
		t.Fatal(err)
	}
	before, _ := s.State(ctx)
	fail = syscall.ENOSPC
	rs := echoStack(t)
	rs[3].Route().GRPCRoute.Action.WeightedTargets[0].Weight = 50
	_, err = s.Commit(ctx, rs, nil)
	if !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), "nothing was changed") {
		t.Errorf("commit on a full disk: got %v, want ENOSPC and nothing changed", err)
	}
	fail = nil
	s.Close()
	s, err = Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	after, _ := s.State(ctx)
	if diff := cmp.Diff(before, after); diff != "" {
		t.Errorf("state after a failed commit and reopen (-before +after):\n%s", diff)
	}
}

const crashEnv = "GMESH_STORE_CRASH_CHILD"

// TestCrashChild is the child of TestCrash: it commits in a loop, printing
// each committed revision, until it is killed.
func TestCrashChild(t *testing.T) {
	path := os.Getenv(crashEnv)
	if path == "" {
		t.Skip("only run as TestCrash's child")
	}
	ctx := context.Background()
	s, err := Open(path, Options{})
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(2)
	}
	base := echoStack(t)
	for i := 0; ; i++ {
		// A weight change, a new node and its removal: several keys per
		// transaction, so a torn write would show.
		node := mesh.New(mesh.KindVirtualNode, "echo", "n"+strconv.Itoa(i), nil)
		puts := []*mesh.Resource{node}
		if i == 0 {
			puts = append(puts, base...)
		} else {
			r := base[3].Clone()
			r.Route().GRPCRoute.Action.WeightedTargets[0].Weight = 1 + i%100
			puts = append(puts, r)
		}
		var deletes []mesh.Ref
		if i > 0 {
			deletes = []mesh.Ref{{Kind: mesh.KindVirtualNode, Mesh: "echo", Name: "n" + strconv.Itoa(i-1)}}
		}
		res, err := s.Commit(ctx, puts, deletes)
		if err != nil {
			fmt.Println("commit:", err)
			os.Exit(2)
		}
		fmt.Println(res.Revision)
	}
}

func TestCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("re-execs the test binary")
	}
	path := filepath.Join(t.TempDir(), "state.db")
	for round := 0; round < 3; round++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$")
		cmd.Env = append(os.Environ(), crashEnv+"="+path)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(out)
		var last uint64
		for n := 0; n < 30+round*20 && sc.Scan(); n++ {
			rev, err := strconv.ParseUint(sc.Text(), 10, 64)
			if err != nil {
				t.Fatalf("child: %s", sc.Text())
			}
			last = rev
		}
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		cmd.Wait()
		if last == 0 {
			t.Fatal("the child committed nothing")
		}

		s, err := Open(path, Options{})
		if err != nil {
			t.Fatalf("round %d: reopen after SIGKILL: %v", round, err)
		}
		st, err := s.State(storetest.Context(t))
		if err != nil {
			t.Fatal(err)
		}
		if st.Revision < last {
			t.Errorf("round %d: got revision %d, want at least the last reported %d", round, st.Revision, last)
		}
		if err := mesh.ValidateState(st); err != nil {
			t.Errorf("round %d: ValidateState after crash: %v", round, err)
		}
		nodes := 0
		for _, r := range st.List(mesh.KindVirtualNode, "echo") {
			if strings.HasPrefix(r.Metadata.Name, "n") {
				nodes++
			}
			if err := mesh.Validate(r); err != nil {
				t.Errorf("round %d: stored %s does not validate: %v", round, r.Ref(), err)
			}
		}
		if nodes != 1 {
			t.Errorf("round %d: got %d loop nodes, want exactly 1 (a torn commit?)", round, nodes)
		}
		for _, r := range st.Resources {
			if v, _ := strconv.ParseUint(r.Metadata.ResourceVersion, 10, 64); v == 0 || v > st.Revision {
				t.Errorf("round %d: %s has version %q, store revision %d", round, r.Ref(), r.Metadata.ResourceVersion, st.Revision)
			}
		}
		s.Close()
		// The next round's child starts from this state: make it start over.
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
	}
}

func BenchmarkCommitRouteUpdate(b *testing.B) {
	ctx := context.Background()
	s, err := Open(filepath.Join(b.TempDir(), "state.db"), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	base := echoStack(b)
	for i := 0; len(base) < 100; i++ {
		base = append(base, mesh.New(mesh.KindVirtualNode, "echo", fmt.Sprintf("filler-%02d", i), &mesh.VirtualNodeSpec{
			Listeners: []mesh.Listener{{PortMapping: mesh.PortMapping{Port: 50051, Protocol: "grpc"}}}}))
	}
	if _, err := s.Commit(ctx, base, nil); err != nil {
		b.Fatal(err)
	}
	route := base[3]
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r := route.Clone()
		r.Route().GRPCRoute.Action.WeightedTargets[0].Weight = 1 + i%100
		if _, err := s.Commit(ctx, []*mesh.Resource{r}, nil); err != nil {
			b.Fatal(err)
		}
	}
}
