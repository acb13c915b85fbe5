package load

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"
)

// ErrRemoteTarget is wrapped by the errors CheckTarget and the dialer return
// for a target that is not on this machine when remote targets are not
// allowed.
var ErrRemoteTarget = errors.New("target is not a loopback address (use --allow-remote to load a remote target)")

// resolveTimeout bounds the lookup of "localhost".
const resolveTimeout = 2 * time.Second

// CheckTarget checks that rawURL is an http or https URL with a host and,
// unless allowRemote, that the host is a loopback address: an IP in
// 127.0.0.0/8 or ::1, or "localhost" resolving only to such addresses. Other
// host names are refused without being resolved, so nothing leaves the
// machine. With allowRemote only the URL's form is checked.
func CheckTarget(rawURL string, allowRemote bool) error {
	u, err := parseTarget(rawURL)
	if err != nil {
		return err
	}
	if allowRemote {
		return nil
	}
	host := u.Hostname()
	if addr, err := netip.ParseAddr(host); err == nil {
		if !isLoopback(addr) {
			return fmt.Errorf("load: target %q: address %s: %w", rawURL, host, ErrRemoteTarget)
		}
		return nil
	}
	if !strings.EqualFold(strings.TrimSuffix(host, "."), "localhost") {
		return fmt.Errorf("load: target %q: host %q is neither a loopback IP nor \"localhost\": %w", rawURL, host, ErrRemoteTarget)
	}
	ctx, cancel := context.WithTimeout(context.Background(), resolveTimeout)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", "localhost")
	if err != nil {
		return fmt.Errorf("load: target %q: resolving localhost: %w", rawURL, err)
	}
	if len(addrs) == 0 {
		return fmt.Errorf("load: target %q: localhost resolves to no address", rawURL)
	}
	for _, a := range addrs {
		if !isLoopback(a) {
			return fmt.Errorf("load: target %q: localhost resolves to %s: %w", rawURL, a, ErrRemoteTarget)
		}
	}
	return nil
}

func parseTarget(rawURL string) (*url.URL, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("load: target: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("load: target %q: scheme must be http or https", rawURL)
	}
	if u.Hostname() == "" {
		return nil, fmt.Errorf("load: target %q: no host", rawURL)
	}
	if u.User != nil {
		return nil, fmt.Errorf("load: target %q: user information is not supported", rawURL)
	}
	return u, nil
}

func isLoopback(a netip.Addr) bool {
	return a.Unmap().WithZone("").IsLoopback()
}

// loopbackOnly is a net.Dialer Control function refusing any connection to a
// non-loopback address. It backs CheckTarget up at dial time, after name
// resolution, whatever the request's host.
func loopbackOnly(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("load: dial %s %s: %w", network, address, err)
	}
	if !isLoopback(ap.Addr()) {
		return fmt.Errorf("load: dial %s %s: %w", network, address, ErrRemoteTarget)
	}
	return nil
}
