package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/gmesh-dev/gmesh/internal/agent"
	"github.com/gmesh-dev/gmesh/internal/artifact"
	"github.com/gmesh-dev/gmesh/internal/controlplane"
	"github.com/gmesh-dev/gmesh/internal/dashboard"
	"github.com/gmesh-dev/gmesh/internal/gateway"
	"github.com/gmesh-dev/gmesh/internal/mesh"
	"github.com/gmesh-dev/gmesh/internal/pki"
	"github.com/gmesh-dev/gmesh/internal/runtime/local"
	"github.com/gmesh-dev/gmesh/internal/stack"
	"github.com/gmesh-dev/gmesh/internal/statedir"
	"github.com/gmesh-dev/gmesh/internal/store/bolt"
)

type upOptions struct {
	file     string
	listen   string
	detach   bool
	cpAddr   string
	ipBase   string
	workDir  string
	readyFor time.Duration
	dashAddr string
	// dashHosts are the names the dashboard answers to besides loopback.
	dashHosts []string
	ca        caOptions
}

func newUpCmd(g *globals, stdio IO) *cobra.Command {
	o := &upOptions{}
	cmd := &cobra.Command{
		Use:   "up [-f stack.yaml]",
		Short: "Run the whole mesh on this machine: control plane, tasks, gateway (default: the built-in echo stack)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := dashboard.CheckAllowedHosts(o.dashHosts); err != nil {
				return fmt.Errorf("--dashboard-allowed-hosts: %w", err)
			}
			if o.detach {
				return upDetached(cmd.Context(), g, o, stdio)
			}
			return runUp(cmd.Context(), g, o, stdio)
		},
	}
	cmd.Flags().StringVarP(&o.file, "filename", "f", "", "stack manifest (default: the built-in echo stack; gmesh init writes it out)")
	cmd.Flags().StringVar(&o.listen, "listen", "", "public endpoint of the gateway (default: the stack's virtual gateway, 127.0.0.1:8080)")
	cmd.Flags().BoolVarP(&o.detach, "detach", "d", false, "run in the background (stop it with gmesh down)")
	cmd.Flags().StringVar(&o.cpAddr, "controlplane-addr", "", "control plane address (default: as recorded in the state directory, else a free loopback port)")
	cmd.Flags().StringVar(&o.ipBase, "task-ip-base", "127.0.0", "first three octets of the tasks' loopback addresses")
	cmd.Flags().StringVar(&o.dashAddr, "dashboard", "127.0.0.1:0", "address of the live dashboard (\"off\": none)")
	cmd.Flags().StringSliceVar(&o.dashHosts, "dashboard-allowed-hosts", nil, "host names the dashboard answers to besides localhost and its own address (NAME: any port, NAME:PORT: that port; comma-separated or repeated), e.g. a reverse proxy's or SSH tunnel's; requests by them need the token")
	cmd.Flags().DurationVar(&o.readyFor, "ready-timeout", 2*time.Minute, "how long to wait for the first request to succeed through the gateway")
	cmd.Flags().StringVar(&o.ca.certFile, "ca-cert", "", "the mesh CA's certificate (PEM) for workload certificates, with --ca-key (default: the state directory's own CA, made when a mesh first has TLS on)")
	cmd.Flags().StringVar(&o.ca.keyFile, "ca-key", "", "the mesh CA's private key (PEM, mode 0600)")
	cmd.Flags().DurationVar(&o.ca.lifetime, "cert-lifetime", pki.DefaultLifetime, "lifetime of each workload certificate; renewed at half of it")
	return cmd
}

// lockDir takes the state directory's `up` lock, or says who holds it.
func lockDir(dir statedir.Dir) (*os.File, error) {
	f, err := os.OpenFile(dir.LockPath(), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		who := ""
		if info, rerr := dir.ReadUpInfo(); rerr == nil && info.PID > 0 {
			who = fmt.Sprintf(" (pid %d)", info.PID)
		}
		return nil, fmt.Errorf("state directory %s is in use by another running `gmesh up`%s; stop it with `gmesh down --state-dir %s` or use another --state-dir", dir.Path, who, shellQuote(dir.Path))
	}
	return f, nil
}

// loadStack reads and fully validates the stack before anything starts.
func loadStack(file string) ([]*mesh.Resource, error) {
	var rs []*mesh.Resource
	var err error
	if file == "" {
		rs, err = mesh.Decode("built-in echo stack", stack.Echo)
	} else {
		rs, err = readManifests([]string{file})
	}
	if err != nil {
		return nil, err
	}
	if err := validateStack(rs); err != nil {
		return nil, err
	}
	return rs, nil
}

// validateStack checks a stack as the control plane's apply would, so that
// errors are reported before anything starts.
func validateStack(rs []*mesh.Resource) error {
	if err := mesh.CheckDuplicates(rs); err != nil {
		return err
	}
	clones := make([]*mesh.Resource, len(rs))
	for i, r := range rs {
		clones[i] = r.Clone()
	}
	if err := mesh.DefaultAndValidate(clones...); err != nil {
		return err
	}
	st := mesh.NewState()
	for _, r := range clones {
		st.Put(r)
	}
	return mesh.ValidateState(st)
}

func findGateway(rs []*mesh.Resource) (*mesh.Resource, *mesh.VirtualGatewaySpec) {
	for _, r := range rs {
		if gw := r.VirtualGateway(); gw != nil {
			return r, gw
		}
	}
	return nil, nil
}

func runUp(ctx context.Context, g *globals, o *upOptions, stdio IO) error {
	started := time.Now()
	dir, err := statedir.Open(g.stateDir)
	if err != nil {
		return err
	}
	lock, err := lockDir(dir)
	if err != nil {
		return err
	}
	defer lock.Close()
	logger := slog.New(slog.NewTextHandler(stdio.Err, &slog.HandlerOptions{Level: slog.LevelWarn}))

	stackRes, err := loadStack(o.file)
	if err != nil {
		return err
	}
	// The mesh CA, when there is one: a key others may read, an expired
	// CA, a key that does not match stop `gmesh up` here.
	ids, err := newIdentities(dir, &o.ca, logger.With("component", "pki"))
	if err != nil {
		return err
	}
	// Refuse a damaged store now, with the store's own error (naming the
	// file and the way to recover), not as a control plane that never
	// answers.
	if _, err := os.Stat(dir.StorePath()); err == nil {
		st, err := bolt.Open(dir.StorePath(), bolt.Options{})
		if err != nil {
			return err
		}
		st.Close()
	}
	workDir := o.workDir
	if workDir == "" {
		workDir, _ = os.Getwd()
	}
	if o.file != "" {
		workDir = filepath.Dir(o.file)
		if abs, err := filepath.Abs(workDir); err == nil {
			workDir = abs
		}
		if root, ok := findModuleRoot(workDir); ok {
			workDir = root
		}
	}

	// The gateway's port first: a port in use is a one-line error with
	// nothing started.
	gwRes, gwSpec := findGateway(stackRes)
	listen := o.listen
	if listen == "" && gwSpec != nil && len(gwSpec.Listeners) > 0 {
		host := gwSpec.Address
		if host == "" {
			host = "127.0.0.1"
		}
		listen = net.JoinHostPort(host, fmt.Sprint(gwSpec.Listeners[0].PortMapping.Port))
	}
	var gwLn net.Listener
	if gwRes != nil {
		gwLn, err = net.Listen("tcp", listen)
		if err != nil {
			return fmt.Errorf("public endpoint %s is already in use or not available (%v); stop what uses it or pass --listen 127.0.0.1:PORT", listen, unwrapOp(err))
		}
		defer gwLn.Close()
	}

	// Build every service's program before starting anything.
	builds, err := buildServices(ctx, stackRes, workDir, dir, stdio)
	if err != nil {
		return err
	}

	// The control plane, as its own supervised process.
	cp, err := startControlPlane(ctx, dir, o.cpAddr, o.ca.controlPlaneArgs(), logger)
	if err != nil {
		return err
	}
	defer cp.stop()
	cpInfo, err := cp.waitReady(ctx, 30*time.Second)
	if err != nil {
		return err
	}
	client, err := controlplane.Dial(cpInfo.Addr, "")
	if err != nil {
		return err
	}
	defer client.Close()

	if err := seedState(ctx, client, stackRes, builds, stdio); err != nil {
		return err
	}

	ids.serverURI = cpInfo.Addr
	sup, err := local.New(local.Config{
		Logger:      logger.With("component", "supervisor"),
		StateDir:    dir.Path,
		Registrar:   client,
		Bootstrap:   ids.bootstrap,
		Released:    ids.released,
		Certificate: ids.certificate,
		IPBase:      o.ipBase,
	})
	if err != nil {
		return err
	}
	ids.refresh = sup.Refresh
	var gw *gateway.Gateway
	gwName := ""
	if gwRes != nil {
		gwName = gwRes.Metadata.Name
		gw, err = gateway.New(gateway.Config{Logger: logger.With("component", "gateway"), Addr: gwLn.Addr().String(), MaxBodyBytes: gwSpec.MaxRequestBytes})
		if err != nil {
			return err
		}
	}
	ag := agent.New(agent.Config{API: client.API(), Supervisor: sup, Gateway: gatewayOrNil(gw), GatewayName: gwName, Logger: logger.With("component", "agent")})
	runCtx, cancelRun := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); ag.Run(runCtx) }()
	go func() { defer wg.Done(); ids.run(runCtx) }()
	gwErr := make(chan error, 1)
	public := ""
	if gw != nil {
		public = "http://" + gwLn.Addr().String()
		go func() { gwErr <- gw.Serve(gwLn) }()
	}

	var gwListen map[string]string
	if gw != nil {
		gwListen = map[string]string{gwRes.Metadata.Mesh + "/" + gwName: gwLn.Addr().String()}
	}
	dashURL, stopDash, err := startDashboard(runCtx, o.dashAddr, o.dashHosts, client, dir, gwListen, logger)
	if err != nil {
		cancelRun()
		wg.Wait()
		return err
	}
	fmt.Fprintf(stdio.Out, "Control plane: %s (admin API and xDS, pid %d)\n", cpInfo.Addr, cpInfo.PID)
	if public != "" {
		fmt.Fprintf(stdio.Out, "Public endpoint: %s\n", public)
	}
	if dashURL != "" {
		fmt.Fprintf(stdio.Out, "Dashboard: %s\n", dashURL)
		if !controlplane.IsLoopback(o.dashAddr) || len(o.dashHosts) > 0 {
			fmt.Fprintf(stdio.Out, "  from another machine or an allowed host, open it once with ?token= and the token in %s\n", filepath.Join(dir.Path, "token"))
		}
	}
	fmt.Fprintf(stdio.Out, "State: %s\nLogs: %s (gmesh logs SERVICE%s)\n", dir.Path, dir.LogDir(), g.stateDirFlag())
	info := statedir.UpInfo{PID: os.Getpid(), Public: public, Dashboard: dashURL, ControlPlane: cpInfo.Addr}
	_ = dir.WriteUpInfo(info)
	defer os.Remove(dir.UpInfoPath())

	shutdown := func() error {
		sctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		fmt.Fprintln(stdio.Out, "Stopping: draining the gateway and the tasks...")
		if gw != nil {
			_ = gw.Shutdown(sctx)
		}
		stopDash(sctx)
		err := sup.Shutdown(sctx)
		cancelRun()
		wg.Wait()
		cp.stop()
		fmt.Fprintln(stdio.Out, "Stopped.")
		return err
	}

	if public != "" {
		reply, err := waitFirstReply(ctx, public+"/?name=gmesh", o.readyFor)
		if err != nil {
			if ctx.Err() != nil {
				return shutdown()
			}
			_ = shutdown()
			return fmt.Errorf("the mesh did not answer through %s within %s: %v (see `gmesh status%s` and %s)", public, o.readyFor, err, g.stateDirFlag(), dir.LogDir())
		}
		fmt.Fprintf(stdio.Out, "Ready in %s: curl '%s/?name=Yusuke'\n  %s\n", time.Since(started).Round(time.Millisecond), public, reply)
	} else {
		fmt.Fprintf(stdio.Out, "Ready in %s\n", time.Since(started).Round(time.Millisecond))
	}
	info.Ready = true
	_ = dir.WriteUpInfo(info)

	select {
	case <-ctx.Done():
	case err := <-gwErr:
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			fmt.Fprintf(stdio.Err, "gateway stopped: %v\n", err)
		}
	}
	return shutdown()
}

// gatewayOrNil avoids a typed-nil interface.
func gatewayOrNil(gw *gateway.Gateway) agent.Routes {
	if gw == nil {
		return nil
	}
	return gw
}

func unwrapOp(err error) error {
	var op *net.OpError
	if errors.As(err, &op) {
		return op.Err
	}
	return err
}

// build is a service's program ready to run.
type build struct {
	command []string
	digest  string
	version string
}

// buildServices builds (or locates) each Service's program and asks it its
// version.
func buildServices(ctx context.Context, rs []*mesh.Resource, workDir string, dir statedir.Dir, stdio IO) (map[string]build, error) {
	out := map[string]build{}
	for _, r := range rs {
		svc := r.Service()
		if svc == nil {
			continue
		}
		b, err := buildProgram(ctx, r.Metadata.Name, svc.Program, svc.Version, workDir, dir, stdio)
		if err != nil {
			return nil, err
		}
		out[r.Metadata.Name] = b
	}
	return out, nil
}

func buildProgram(ctx context.Context, name string, p mesh.Program, version, workDir string, dir statedir.Dir, stdio IO) (build, error) {
	var b build
	if p.Package != "" {
		fmt.Fprintf(stdio.Out, "Building %s (%s)...\n", name, p.Package)
		a, err := artifact.Build(ctx, workDir, p.Package, dir.ArtifactDir())
		if err != nil {
			return b, fmt.Errorf("service %s: %w", name, err)
		}
		b.command = []string{a.Path}
		b.digest = a.Digest
	} else {
		b.command = append([]string(nil), p.Command...)
		if path, err := exec.LookPath(b.command[0]); err == nil {
			b.command[0] = path
		} else {
			return b, fmt.Errorf("service %s: program %q: %w", name, p.Command[0], err)
		}
	}
	b.version = version
	if b.version == "" {
		v, err := artifact.Version(ctx, b.command[0])
		if err != nil {
			return b, fmt.Errorf("service %s: %w; or set spec.version", name, err)
		}
		b.version = v
	}
	return b, nil
}

// seedState applies the stack when the state directory is new, and makes
// a first TaskSet for every Service that has none. An existing state wins:
// it may hold deploys made since.
func seedState(ctx context.Context, c *controlplane.Client, rs []*mesh.Resource, builds map[string]build, stdio IO) error {
	meshes, err := c.List(ctx, mesh.KindMesh, "")
	if err != nil {
		return err
	}
	if len(meshes) == 0 {
		if _, _, err := c.Apply(ctx, "stack", rs, false); err != nil {
			return err
		}
		fmt.Fprintf(stdio.Out, "Applied the stack: %d resources\n", len(rs))
	} else {
		fmt.Fprintf(stdio.Out, "Resuming the stored state (%d meshes)\n", len(meshes))
	}
	services, err := c.List(ctx, mesh.KindService, "")
	if err != nil {
		return err
	}
	sets, err := c.List(ctx, mesh.KindTaskSet, "")
	if err != nil {
		return err
	}
	var newSets []*mesh.Resource
	for _, s := range services {
		has := false
		for _, ts := range sets {
			if spec := ts.TaskSet(); spec != nil && ts.Metadata.Mesh == s.Metadata.Mesh && spec.Service == s.Metadata.Name {
				has = true
			}
		}
		if has {
			continue
		}
		b, ok := builds[s.Metadata.Name]
		if !ok {
			return fmt.Errorf("service %s has no task set and is not in the stack file, so gmesh cannot build it", s.Metadata.Name)
		}
		spec := s.Service()
		newSets = append(newSets, mesh.New(mesh.KindTaskSet, s.Metadata.Mesh, TaskSetName(s.Metadata.Name, b.version), &mesh.TaskSetSpec{
			Service:      s.Metadata.Name,
			VirtualNode:  spec.VirtualNode,
			Version:      b.version,
			Revision:     1,
			Command:      b.command,
			Artifact:     b.digest,
			Env:          spec.Env,
			DesiredCount: spec.DesiredCount,
			Port:         spec.Port,
		}))
	}
	if len(newSets) > 0 {
		if _, _, err := c.Apply(ctx, "gmesh up", newSets, false); err != nil {
			return err
		}
	}
	return nil
}

// TaskSetName names a service's task set for a version: echo-server-0-9.
func TaskSetName(service, version string) string { return mesh.VersionName(service, version) }

// waitFirstReply polls url until it answers 200, and returns the body.
func waitFirstReply(ctx context.Context, url string, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	client := &http.Client{Timeout: 3 * time.Second}
	var last error
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := client.Do(req)
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return strings.TrimSpace(string(body)), nil
			}
			last = fmt.Errorf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(body)))
		} else {
			last = err
		}
		t := time.NewTimer(50 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return "", last
		case <-t.C:
		}
	}
}

// findModuleRoot walks up from dir to the directory holding go.mod.
func findModuleRoot(dir string) (string, bool) {
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, true
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", false
		}
		dir = parent
	}
}

// startDashboard serves the live dashboard on addr ("off": none) and returns
// its URL and a stop function. It answers to loopback names and addresses
// and to allowedHosts; every request that is not straight from loopback,
// reads included, needs the admin API's bearer token (the state
// directory's token file), as the admin API does. gwListen is where each
// gateway really listens, by "mesh/name".
func startDashboard(ctx context.Context, addr string, allowedHosts []string, c *controlplane.Client, dir statedir.Dir, gwListen map[string]string, logger *slog.Logger) (string, func(context.Context), error) {
	if addr == "" || addr == "off" {
		return "", func(context.Context) {}, nil
	}
	token, err := dir.Token()
	if err != nil {
		return "", nil, err
	}
	d, err := dashboard.New(dashboard.Config{Source: c, Token: token, AllowedHosts: allowedHosts, GatewayListen: gwListen, Logger: logger.With("component", "dashboard")})
	if err != nil {
		return "", nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, fmt.Errorf("dashboard address %s: %v", addr, unwrapOp(err))
	}
	dctx, cancel := context.WithCancel(ctx)
	go func() { _ = d.Run(dctx) }()
	srv := &http.Server{Handler: d.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	stop := func(sctx context.Context) {
		cancel() // ends the event streams, so Shutdown does not wait on them
		_ = srv.Shutdown(sctx)
	}
	return "http://" + ln.Addr().String(), stop, nil
}
