package echo

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
)

// Environment variables read by the binaries. A flag of the same meaning
// overrides each.
const (
	EnvPort            = "PORT"
	EnvHost            = "HOST"
	EnvMetricsPort     = "METRICS_PORT"
	EnvSaid            = "ECHO_SAID"
	EnvTLSCert         = "ECHO_TLS_CERT"
	EnvTLSKey          = "ECHO_TLS_KEY"
	EnvTLSCA           = "ECHO_TLS_CA"
	EnvDrainDelay      = "ECHO_DRAIN_DELAY"
	EnvShutdownTimeout = "ECHO_SHUTDOWN_TIMEOUT"
	EnvFailRate        = "ECHO_FAIL_RATE"
	EnvFailCode        = "ECHO_FAIL_CODE"
	EnvLatency         = "ECHO_LATENCY"
	EnvEchoHost        = "ECHO_HOST"
	// EnvClientVersion overrides the version the echo client reports.
	EnvClientVersion = "ECHO_CLIENT_VERSION"
	EnvTimeout       = "ECHO_TIMEOUT"
	// The two ways to hand grpc-go its xDS bootstrap; grpc reads them itself.
	EnvXDSBootstrapConfig = "GRPC_XDS_BOOTSTRAP_CONFIG"
	EnvXDSBootstrapFile   = "GRPC_XDS_BOOTSTRAP"
)

// envReader reads environment variables, remembering the first bad value.
type envReader struct {
	getenv func(string) string
	errs   []error
}

func (e *envReader) str(key, def string) string {
	if v := e.getenv(key); v != "" {
		return v
	}
	return def
}

func (e *envReader) duration(key string, def time.Duration) time.Duration {
	v := e.getenv(key)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		e.errs = append(e.errs, fmt.Errorf("%s=%q: %w", key, v, err))
		return def
	}
	return d
}

func (e *envReader) float(key string, def float64) float64 {
	v := e.getenv(key)
	if v == "" {
		return def
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil {
		e.errs = append(e.errs, fmt.Errorf("%s=%q: %w", key, v, err))
		return def
	}
	return f
}

func checkPort(what, p string) error {
	n, err := strconv.Atoi(p)
	if err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%s %q is not a port number (0-65535)", what, p)
	}
	return nil
}

// ParseFailCode parses the ECHO_FAIL_CODE values: "unavailable" (also the
// empty string) or "internal", case-insensitive.
func ParseFailCode(s string) (codes.Code, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "unavailable":
		return codes.Unavailable, nil
	case "internal":
		return codes.Internal, nil
	}
	return codes.OK, fmt.Errorf("fail code %q is not unavailable or internal", s)
}

// ServerOptions is what the echo-server binary is told by its environment
// and flags.
type ServerOptions struct {
	Config ServerConfig
	// ShowVersion is set by --version: print the version and exit.
	ShowVersion bool
}

// ParseServerConfig reads the echo server's environment (through getenv)
// and flags (args, without the program name); flags win. Usage and flag
// errors go to stderr; -h returns flag.ErrHelp. The returned Config has no
// Version and no Logger: the binary sets them.
func ParseServerConfig(args []string, getenv func(string) string, stderr io.Writer) (ServerOptions, error) {
	env := &envReader{getenv: getenv}
	var (
		port            = env.str(EnvPort, "50051")
		host            = env.str(EnvHost, "")
		metricsPort     = env.str(EnvMetricsPort, "")
		said            = env.str(EnvSaid, "")
		cert            = env.str(EnvTLSCert, "")
		key             = env.str(EnvTLSKey, "")
		drain           = env.duration(EnvDrainDelay, 2*time.Second)
		shutdownTimeout = env.duration(EnvShutdownTimeout, 10*time.Second)
		failRate        = env.float(EnvFailRate, 0)
		failCode        = env.str(EnvFailCode, "unavailable")
		latency         = env.duration(EnvLatency, 0)
		showVersion     bool
	)
	if err := errors.Join(env.errs...); err != nil {
		return ServerOptions{}, err
	}
	fs := flag.NewFlagSet("echo-server", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&port, "port", port, "gRPC port; 0 picks a free one ($PORT)")
	fs.StringVar(&host, "host", host, "bind address, and the Said address when an IP; empty = all interfaces ($HOST)")
	fs.StringVar(&metricsPort, "metrics-port", metricsPort, "Prometheus /metrics port; empty = off, 0 = a free one ($METRICS_PORT)")
	fs.StringVar(&said, "said", said, "address reported in replies; empty = the address each call arrived on ($ECHO_SAID)")
	fs.StringVar(&cert, "tls-cert", cert, "TLS certificate file, PEM; TLS is on when cert and key are set ($ECHO_TLS_CERT)")
	fs.StringVar(&key, "tls-key", key, "TLS private key file, PEM ($ECHO_TLS_KEY)")
	fs.DurationVar(&drain, "drain-delay", drain, "how long health is NOT_SERVING before the graceful stop ($ECHO_DRAIN_DELAY)")
	fs.DurationVar(&shutdownTimeout, "shutdown-timeout", shutdownTimeout, "graceful stop deadline, then a hard stop ($ECHO_SHUTDOWN_TIMEOUT)")
	fs.Float64Var(&failRate, "fail-rate", failRate, "fault: fraction 0..1 of calls that fail ($ECHO_FAIL_RATE)")
	fs.StringVar(&failCode, "fail-code", failCode, "fault: code of failed calls, unavailable or internal ($ECHO_FAIL_CODE)")
	fs.DurationVar(&latency, "latency", latency, "fault: latency added to each call ($ECHO_LATENCY)")
	fs.BoolVar(&showVersion, "version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return ServerOptions{}, err
	}
	if fs.NArg() > 0 {
		return ServerOptions{}, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if showVersion {
		return ServerOptions{ShowVersion: true}, nil
	}
	if err := checkPort("port", port); err != nil {
		return ServerOptions{}, err
	}
	code, err := ParseFailCode(failCode)
	if err != nil {
		return ServerOptions{}, err
	}
	cfg := ServerConfig{
		Addr:            net.JoinHostPort(host, port),
		Said:            said,
		TLSCertFile:     cert,
		TLSKeyFile:      key,
		DrainDelay:      drain,
		ShutdownTimeout: shutdownTimeout,
		FailRate:        failRate,
		FailCode:        code,
		Latency:         latency,
	}
	if metricsPort != "" {
		if err := checkPort("metrics port", metricsPort); err != nil {
			return ServerOptions{}, err
		}
		cfg.MetricsAddr = net.JoinHostPort(host, metricsPort)
	}
	if (cert == "") != (key == "") {
		return ServerOptions{}, errors.New("tls needs both a certificate file and a key file (ECHO_TLS_CERT and ECHO_TLS_KEY)")
	}
	if bs := readXDSBootstrap(getenv); bs.ServerListenerResourceNameTemplate != "" {
		if cert != "" {
			return ServerOptions{}, errors.New("the xDS bootstrap has a server listener template (the control plane secures this server) and ECHO_TLS_CERT is set too: use one")
		}
		cfg.XDS = true
	}
	if err := validateFaults(cfg.FailRate, cfg.FailCode, cfg.Latency); err != nil {
		return ServerOptions{}, err
	}
	if drain < 0 || shutdownTimeout <= 0 {
		return ServerOptions{}, fmt.Errorf("drain delay %v must be >= 0 and shutdown timeout %v > 0", drain, shutdownTimeout)
	}
	return ServerOptions{Config: cfg}, nil
}

// ParseClientConfig reads the echo client's environment (through getenv)
// and flags; flags win. For an xds:/// target it checks that a bootstrap is
// set in the environment (grpc-go reads it from there). The returned Config
// has no Logger.
func ParseClientConfig(args []string, getenv func(string) string, stderr io.Writer) (ClientConfig, error) {
	env := &envReader{getenv: getenv}
	var (
		port            = env.str(EnvPort, "8080")
		host            = env.str(EnvHost, "")
		metricsPort     = env.str(EnvMetricsPort, "")
		target          = env.str(EnvEchoHost, "localhost:50051")
		timeout         = env.duration(EnvTimeout, 2*time.Second)
		shutdownTimeout = env.duration(EnvShutdownTimeout, 10*time.Second)
		ca              = env.str(EnvTLSCA, "")
		version         = env.str(EnvClientVersion, ClientVersion)
		showVersion     bool
	)
	if err := errors.Join(env.errs...); err != nil {
		return ClientConfig{}, err
	}
	fs := flag.NewFlagSet("echo-client", flag.ContinueOnError)
	fs.BoolVar(&showVersion, "version", false, "print the version and exit")
	fs.SetOutput(stderr)
	fs.StringVar(&port, "port", port, "HTTP port; 0 picks a free one ($PORT)")
	fs.StringVar(&host, "host", host, "bind address; empty = all interfaces ($HOST)")
	fs.StringVar(&metricsPort, "metrics-port", metricsPort, "Prometheus /metrics port; empty = off, 0 = a free one ($METRICS_PORT)")
	fs.StringVar(&target, "echo-host", target, "gRPC target: host:port or xds:///name ($ECHO_HOST)")
	fs.DurationVar(&timeout, "timeout", timeout, "deadline of each call to the server ($ECHO_TIMEOUT)")
	fs.DurationVar(&shutdownTimeout, "shutdown-timeout", shutdownTimeout, "how long to wait for in-flight requests at shutdown ($ECHO_SHUTDOWN_TIMEOUT)")
	fs.StringVar(&ca, "tls-ca", ca, "CA file (PEM) to verify a TLS server; empty = plaintext ($ECHO_TLS_CA)")
	if err := fs.Parse(args); err != nil {
		return ClientConfig{}, err
	}
	if fs.NArg() > 0 {
		return ClientConfig{}, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if showVersion {
		return ClientConfig{ShowVersion: true, Version: version}, nil
	}
	if err := checkPort("port", port); err != nil {
		return ClientConfig{}, err
	}
	if version == "" || len(version) > 64 || strings.ContainsAny(version, " \t\r\n") {
		return ClientConfig{}, fmt.Errorf("version %q (%s): want a short label without spaces", version, EnvClientVersion)
	}
	if timeout <= 0 || shutdownTimeout <= 0 {
		return ClientConfig{}, fmt.Errorf("timeout %v and shutdown timeout %v must be > 0", timeout, shutdownTimeout)
	}
	if strings.HasPrefix(target, "xds:") && getenv(EnvXDSBootstrapConfig) == "" && getenv(EnvXDSBootstrapFile) == "" {
		return ClientConfig{}, fmt.Errorf("target %s needs an xDS bootstrap: set %s (the JSON) or %s (its file)", target, EnvXDSBootstrapConfig, EnvXDSBootstrapFile)
	}
	cfg := ClientConfig{
		Addr:            net.JoinHostPort(host, port),
		Version:         version,
		Target:          target,
		Timeout:         timeout,
		ShutdownTimeout: shutdownTimeout,
	}
	if metricsPort != "" {
		if err := checkPort("metrics port", metricsPort); err != nil {
			return ClientConfig{}, err
		}
		cfg.MetricsAddr = net.JoinHostPort(host, metricsPort)
	}
	if ca != "" {
		creds, err := credentials.NewClientTLSFromFile(ca, "")
		if err != nil {
			return ClientConfig{}, fmt.Errorf("load tls ca %q: %w", ca, err)
		}
		cfg.Creds = creds
	}
	if strings.HasPrefix(target, "xds:") {
		if bs := readXDSBootstrap(getenv); len(bs.CertificateProviders) > 0 {
			if ca != "" {
				return ClientConfig{}, errors.New("the xDS bootstrap has certificate providers (the control plane secures calls) and ECHO_TLS_CA is set too: use one")
			}
			var err error
			if cfg.Creds, err = xdsClientCreds(); err != nil {
				return ClientConfig{}, fmt.Errorf("xds client credentials: %w", err)
			}
		}
	}
	return cfg, nil
}
