// Package echo holds the logic of the two echo services of gmesh, the
// workload that every other part of the mesh is exercised with.
//
// [Server] is the gRPC echo server (proto.echo.EchoService, grpc.health.v1,
// reflection, Prometheus metrics, fault knobs and a draining shutdown).
// [Client] is the HTTP front end that calls it over one long-lived gRPC
// connection, either directly (host:port) or through the mesh (xds:///name).
//
// The binaries in cmd/echo-server and cmd/echo-client only parse their
// configuration with [ParseServerConfig] or [ParseClientConfig], wire signals
// and call Run, so tests start the same code on port 0.
package echo
