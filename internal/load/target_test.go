package load

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestCheckTarget(t *testing.T) {
	tests := []struct {
		url         string
		allowRemote bool
		wantErr     bool
		wantRemote  bool // the error wraps ErrRemoteTarget
	}{
		{url: "http://127.0.0.1:8080/", wantErr: false},
		{url: "http://127.9.8.7/echo", wantErr: false},
		{url: "http://[::1]:8080/", wantErr: false},
		{url: "http://[::ffff:127.0.0.1]:8080/", wantErr: false},
		{url: "https://localhost:8443/", wantErr: false},
		{url: "http://LOCALHOST./", wantErr: false},
		{url: "http://10.1.2.3/", wantErr: true, wantRemote: true},
		{url: "http://0.0.0.0:80/", wantErr: true, wantRemote: true},
		{url: "http://[::]:80/", wantErr: true, wantRemote: true},
		{url: "http://[2001:db8::1]/", wantErr: true, wantRemote: true},
		{url: "http://example.com/", wantErr: true, wantRemote: true},
		{url: "http://foo.localhost/", wantErr: true, wantRemote: true},
		{url: "http://2130706433/", wantErr: true, wantRemote: true}, // 127.0.0.1 as an integer: not an IP literal to us
		{url: "http://10.1.2.3/", allowRemote: true, wantErr: false},
		{url: "http://example.com/", allowRemote: true, wantErr: false},
		{url: "ftp://127.0.0.1/", wantErr: true},
		{url: "127.0.0.1:8080", wantErr: true},
		{url: "http:///path", wantErr: true},
		{url: "", wantErr: true},
		{url: "http://user:pw@127.0.0.1/", wantErr: true},
		{url: "http://%zz/", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			err := CheckTarget(tt.url, tt.allowRemote)
			if (err != nil) != tt.wantErr {
				t.Fatalf("CheckTarget(%q, %v) = %v, want error: %v", tt.url, tt.allowRemote, err, tt.wantErr)
			}
			if got := errors.Is(err, ErrRemoteTarget); got != tt.wantRemote {
				t.Errorf("CheckTarget(%q) = %v, got wraps ErrRemoteTarget %v, want %v", tt.url, err, got, tt.wantRemote)
			}
		})
	}
}

func TestLoopbackOnly(t *testing.T) {
	tests := []struct {
		address string
		wantErr bool
	}{
		{"127.0.0.1:80", false},
		{"[::1]:80", false},
		{"10.1.2.3:80", true},
		{"93.184.216.34:443", true},
		{"not-an-address", true},
	}
	for _, tt := range tests {
		if err := loopbackOnly("tcp", tt.address, nil); (err != nil) != tt.wantErr {
			t.Errorf("loopbackOnly(%q) = %v, want error: %v", tt.address, err, tt.wantErr)
		}
	}
}

// TestRunRefusesRemote checks that Run refuses a remote target before
// sending anything: with no route to these addresses a dial would time out
// or fail with another error, and Every would be called.
func TestRunRefusesRemote(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, u := range []string{"http://10.1.2.3/", "http://example.com/"} {
		res, err := Run(ctx, Config{
			URL:      u,
			Duration: time.Second,
			Every:    func(Report) { t.Errorf("Run(%q) reported a second, want refusal before any load", u) },
		})
		if !errors.Is(err, ErrRemoteTarget) {
			t.Errorf("Run(%q) error = %v, want ErrRemoteTarget", u, err)
		}
		if res != nil {
			t.Errorf("Run(%q) result = %+v, want nil", u, res)
		}
	}
}
