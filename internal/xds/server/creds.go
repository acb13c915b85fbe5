package server

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"net"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// TLSOrPlaintext returns server transport credentials that serve TLS with
// cfg to a client that starts a TLS handshake and plain text to one that
// does not, on the same port: the control plane serves its admin API and
// plaintext xDS (meshes without TLS) and authenticated xDS (meshes with
// TLS) on one address. The first byte decides: a TLS connection opens
// with a handshake record (0x16), an HTTP/2 connection with its preface
// ("PRI ..."). Which one a stream came over is in its peer's AuthInfo
// (credentials.TLSInfo for TLS), which MeshAuth reads.
func TLSOrPlaintext(cfg *tls.Config) credentials.TransportCredentials {
	return &tlsOrPlain{tls: credentials.NewTLS(cfg), plain: insecure.NewCredentials()}
}

type tlsOrPlain struct {
	tls, plain credentials.TransportCredentials
}

// recordTypeHandshake is the first byte of every TLS connection.
const recordTypeHandshake = 0x16

// peekedConn is a net.Conn whose first bytes were read into r.
type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *peekedConn) Read(b []byte) (int, error) { return c.r.Read(b) }

func (t *tlsOrPlain) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	r := bufio.NewReaderSize(conn, 1024)
	first, err := r.Peek(1)
	if err != nil {
		return nil, nil, err
	}
	pc := &peekedConn{Conn: conn, r: r}
	if first[0] == recordTypeHandshake {
		return t.tls.ServerHandshake(pc)
	}
	return t.plain.ServerHandshake(pc)
}

func (t *tlsOrPlain) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("tls-or-plaintext credentials are for servers only")
}

// Info reports "tls": grpc-go only reads it on the client side.
func (t *tlsOrPlain) Info() credentials.ProtocolInfo { return t.tls.Info() }

func (t *tlsOrPlain) Clone() credentials.TransportCredentials {
	return &tlsOrPlain{tls: t.tls.Clone(), plain: t.plain.Clone()}
}

func (t *tlsOrPlain) OverrideServerName(string) error { return nil }
