package k8stest

import (
	"archive/tar"
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

func TestBuildImage(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "hello")
	content := []byte("not really a binary")
	if err := os.WriteFile(bin, content, 0o755); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "img.tar")
	spec := ImageSpec{Ref: "gmesh.local/hello:1", Binary: bin, Path: "/hello", Args: []string{"-v"}, Env: []string{"A=b"}}
	if err := BuildImage(spec, out); err != nil {
		t.Fatal(err)
	}
	tag, _ := name.NewTag(spec.Ref)
	img, err := tarball.ImageFromPath(out, &tag)
	if err != nil {
		t.Fatalf("read the image back: %v", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.OS != "linux" || cf.Architecture != runtime.GOARCH {
		t.Errorf("platform: got %s/%s, want linux/%s", cf.OS, cf.Architecture, runtime.GOARCH)
	}
	if diff := cmp.Diff([]string{"/hello"}, cf.Config.Entrypoint); diff != "" {
		t.Errorf("entrypoint (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"PATH=/", "A=b"}, cf.Config.Env); diff != "" {
		t.Errorf("env (-want +got):\n%s", diff)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers: got %d (%v), want 1", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	found := false
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Name == "hello" {
			found = true
			if h.Mode != 0o755 {
				t.Errorf("mode of /hello: got %o, want 755", h.Mode)
			}
			b, _ := io.ReadAll(tr)
			if string(b) != string(content) {
				t.Errorf("content of /hello: got %q, want %q", b, content)
			}
		}
	}
	if !found {
		t.Error("the layer has no /hello")
	}
}

func TestParseMountinfo(t *testing.T) {
	tests := []struct {
		line, mp, fstype string
	}{
		{"36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue", "/mnt2", "ext3"},
		{"30 25 0:26 / /sys/fs/cgroup/cpu rw,relatime shared:9 - cgroup cgroup rw,cpu", "/sys/fs/cgroup/cpu", "cgroup"},
		{`40 25 0:50 / /var/lib/with\040space rw - tmpfs shm rw`, "/var/lib/with space", "tmpfs"},
		{"garbage", "", ""},
	}
	for _, tt := range tests {
		mp, fstype, _ := parseMountinfo(tt.line)
		if mp != tt.mp || fstype != tt.fstype {
			t.Errorf("parseMountinfo(%q): got %q %q, want %q %q", tt.line, mp, fstype, tt.mp, tt.fstype)
		}
	}
}

func TestStateRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	j := &journal{path: path, st: State{Root: "/r", Sysctls: map[string]string{"kernel.panic": "1"}}}
	if err := j.update(func(s *State) { s.Procs = append(s.Procs, Proc{Name: "etcd", Pid: 42, Exe: "/bin/etcd"}) }); err != nil {
		t.Fatal(err)
	}
	got, ok, err := ReadState(path)
	if err != nil || !ok {
		t.Fatalf("ReadState: ok=%v err=%v", ok, err)
	}
	if diff := cmp.Diff(j.state(), got); diff != "" {
		t.Errorf("state (-want +got):\n%s", diff)
	}
	if _, ok, err := ReadState(filepath.Join(t.TempDir(), "none.json")); ok || err != nil {
		t.Errorf("ReadState of a missing file: got ok=%v err=%v, want false, nil", ok, err)
	}
}
