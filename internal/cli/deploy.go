package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	meshv1 "github.com/gmesh-dev/gmesh/api/mesh/v1"
	"github.com/gmesh-dev/gmesh/internal/artifact"
	"github.com/gmesh-dev/gmesh/internal/controlplane"
	"github.com/gmesh-dev/gmesh/internal/mesh"
	"github.com/gmesh-dev/gmesh/internal/rollout"
	"github.com/gmesh-dev/gmesh/internal/statedir"
)

type deployOptions struct {
	binary      string
	version     string
	env         []string
	force       bool
	steps       string
	interval    time.Duration
	timeout     time.Duration
	minSuccess  float64
	maxP99      time.Duration
	minRequests int64
	detach      bool
	ackTimeout  time.Duration
	onStalled   string
}

func (o *deployOptions) flags(cmd *cobra.Command) {
	cmd.Flags().StringVar(&o.steps, "steps", "50,100", "the new version's weights in percent, ascending, ending at 100")
	cmd.Flags().DurationVar(&o.interval, "interval", 15*time.Second, "bake time after each step, while the new version is analysed")
	cmd.Flags().DurationVar(&o.timeout, "timeout", 5*time.Minute, "deadline of every wait (tasks RUNNING, HEALTHY, clients' ACKs); past it the deploy rolls back")
	cmd.Flags().Float64Var(&o.minSuccess, "min-success", 0.99, "gate: least success rate of the new version over a bake (0..1)")
	cmd.Flags().DurationVar(&o.maxP99, "max-p99", 500*time.Millisecond, "gate: highest p99 latency of the new version over a bake")
	cmd.Flags().Int64Var(&o.minRequests, "min-requests", 20, "requests the new version must serve in a bake before it is judged")
	cmd.Flags().DurationVar(&o.ackTimeout, "ack-timeout", 10*time.Second, "how long a step waits for the xDS clients that use the shifted route to ACK it; then --on-stalled-client applies")
	cmd.Flags().StringVar(&o.onStalled, "on-stalled-client", mesh.StalledPause, "what a step does about clients that have not ACKed in time, which it names: Pause (hold the weight; resume waits again), Proceed (go on without them) or Rollback")
	cmd.Flags().BoolVar(&o.detach, "detach", false, "start the rollout and return; follow it with: gmesh rollout status SERVICE --watch")
}

func parseSteps(s string) ([]int, error) {
	var steps []int
	for _, p := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(p), "%")))
		if err != nil {
			return nil, fmt.Errorf("--steps %q: %q is not a number", s, p)
		}
		steps = append(steps, n)
	}
	// The rule is the rollout's own (mesh.CheckSteps), said in the flag's
	// terms.
	if err := mesh.CheckSteps("steps", steps); err != nil {
		var e *mesh.Error
		if errors.As(err, &e) {
			return nil, fmt.Errorf("--steps %q: %s", s, e.Message)
		}
		return nil, fmt.Errorf("--steps %q: %w", s, err)
	}
	return steps, nil
}

func newDeployCmd(g *globals, stdio IO) *cobra.Command {
	o := &deployOptions{}
	k := &kubeDeployOptions{}
	cmd := &cobra.Command{
		Use:   "deploy SERVICE",
		Short: "Roll out a new version of a service: build, start, health-gate, shift traffic step by step with analysis, retire the old version",
		Long: `Roll out a new version of a service: build, start, health-gate, shift
traffic step by step with analysis, retire the old version.

On a Kubernetes cluster (--kubernetes, or --kubeconfig FILE) it creates the
Rollout object SERVICE (rollouts.gmesh.dev) in the namespace -n, or makes a
new revision of the one there once its last rollout ended, and follows its
status with the same lines; the control plane carries it out. There the new
version is --image [CONTAINER=]IMAGE (its tag is the version unless
--version), and these flags apply: --version, --env (a patch of the pod
template), --force, --steps, --interval, --timeout, --ack-timeout,
--on-stalled-client, --min-success, --max-p99, --min-requests, --detach,
and the cluster's own --image, --replicas, --router (default SERVICE),
--route, --stable-deployment, -n. --binary is local only.
See docs/kubernetes-rollouts.md.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := k.check(cmd, kubeOnlyDeployFlags...); err != nil {
				return err
			}
			if k.enabled() {
				return runKubeDeploy(cmd, g, o, k, args[0], stdio)
			}
			return runDeploy(cmd.Context(), g, o, args[0], stdio)
		},
	}
	cmd.Flags().StringVar(&o.binary, "binary", "", "deploy this executable instead of building the service's package (local only)")
	cmd.Flags().StringVar(&o.version, "version", "", "version label (default: asked from the program with --version; on a cluster, the image's tag)")
	cmd.Flags().StringArrayVar(&o.env, "env", nil, "KEY=VALUE environment for the new version's tasks (repeatable; on a cluster, set in the --image containers through the Rollout's templatePatch)")
	cmd.Flags().BoolVar(&o.force, "force", false, "deploy even if this version already runs")
	o.flags(cmd)
	k.flags(cmd)
	return cmd
}

// parseEnv parses --env's KEY=VALUE pairs.
func parseEnv(kvs []string) (map[string]string, error) {
	env := map[string]string{}
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--env %q: want KEY=VALUE", kv)
		}
		env[k] = v
	}
	return env, nil
}

// engineSpec is the rollout engine's spec the flags ask for, with target
// as the new version: the same for a local deploy and a Rollout object
// (which takes it through rollouts.FromSpec).
func (o *deployOptions) engineSpec(service string, steps []int, target mesh.TaskSetSpec) *mesh.RolloutSpec {
	return &mesh.RolloutSpec{
		Service:          service,
		Target:           target,
		Steps:            steps,
		IntervalMillis:   o.interval.Milliseconds(),
		TimeoutMillis:    o.timeout.Milliseconds(),
		AckTimeoutMillis: min(o.ackTimeout, o.timeout).Milliseconds(),
		OnStalledClient:  o.onStalled,
		Gates:            mesh.Gates{MinSuccessRate: o.minSuccess, MaxP99Millis: float64(o.maxP99.Milliseconds()), MinRequests: o.minRequests},
		Force:            o.force,
	}
}

func (o *deployOptions) printDeploying(w io.Writer, service, version string) {
	fmt.Fprintf(w, "Deploying %s version %s (steps %s, bake %s)\n", service, version, o.steps, o.interval)
}

func runDeploy(ctx context.Context, g *globals, o *deployOptions, service string, stdio IO) error {
	steps, err := parseSteps(o.steps)
	if err != nil {
		return err
	}
	env, err := parseEnv(o.env)
	if err != nil {
		return err
	}
	c, meshName, err := g.clientInMesh(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	svc, err := c.Get(ctx, mesh.Ref{Kind: mesh.KindService, Mesh: meshName, Name: service})
	if err != nil {
		return err
	}
	spec := svc.Service()
	dir, err := statedir.Open(g.stateDir)
	if err != nil {
		return err
	}
	var b build
	if o.binary != "" {
		a, err := artifact.Import(o.binary, dir.ArtifactDir())
		if err != nil {
			return err
		}
		b = build{command: []string{a.Path}, digest: a.Digest, version: o.version}
		if b.version == "" {
			if b.version, err = artifact.Version(ctx, a.Path); err != nil {
				return err
			}
		}
	} else {
		wd, _ := os.Getwd()
		if root, ok := findModuleRoot(wd); ok {
			wd = root
		}
		b, err = buildProgram(ctx, service, spec.Program, o.version, wd, dir, stdio)
		if err != nil {
			return err
		}
	}
	merged := map[string]string{}
	for k, v := range spec.Env {
		merged[k] = v
	}
	for k, v := range env {
		merged[k] = v
	}
	r := mesh.New(mesh.KindRollout, meshName, service, o.engineSpec(service, steps, mesh.TaskSetSpec{
		Service:      service,
		Version:      b.version,
		Command:      b.command,
		Artifact:     b.digest,
		Env:          merged,
		DesiredCount: spec.DesiredCount,
		Port:         spec.Port,
	}))
	o.printDeploying(stdio.Out, service, b.version)
	if _, err := c.StartRollout(ctx, r); err != nil {
		return err
	}
	if o.detach {
		fmt.Fprintf(stdio.Out, "Rollout started; follow it with: gmesh rollout status %s --watch%s\n", service, g.targetFlags())
		return nil
	}
	return followRollout(ctx, c, r.Ref(), stdio.Out, 0, g.targetFlags())
}

// followRollout prints a rollout's events until it ends, reconnecting if
// the control plane restarts meanwhile. It returns an exitError 1 when the
// rollout did not succeed. flags are the --state-dir, --server and --mesh
// its hints carry (globals.targetFlags).
func followRollout(ctx context.Context, c *controlplane.Client, ref mesh.Ref, w io.Writer, skip int, flags string) error {
	p := &rolloutPrinter{w: w, printed: skip}
	down := false
	handle := func(r *mesh.Resource) (bool, error) {
		st, _ := r.Status.(*mesh.RolloutStatus)
		if st == nil {
			return false, nil
		}
		return p.print(st)
	}
	for {
		wctx, cancel := context.WithCancel(ctx)
		stream, err := c.API().Watch(wctx, &meshv1.WatchRequest{Kind: string(mesh.KindRollout)})
		if err == nil {
			for {
				ev, rerr := stream.Recv()
				if rerr != nil {
					err = rerr
					break
				}
				if down {
					fmt.Fprintln(w, "Control plane is back; following the rollout again")
					down = false
				}
				if ev.Resource == nil {
					continue
				}
				var r mesh.Resource
				if json.Unmarshal(ev.Resource.Json, &r) != nil || r.Ref() != ref {
					continue
				}
				done, herr := handle(&r)
				if done {
					cancel()
					return herr
				}
			}
		}
		cancel()
		if ctx.Err() != nil {
			fmt.Fprintf(w, "Stopped following; the rollout goes on. Follow it again with: gmesh rollout status %s --watch%s\n", ref.Name, flags)
			return nil
		}
		if !down {
			fmt.Fprintf(w, "Control plane unreachable (%v); the data plane keeps serving, and the rollout resumes when it is back. Waiting...\n", controlplane.FromStatus(err))
			down = true
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// rolloutPrinter prints a rollout's progress lines from its successive
// statuses, each line once: the events not printed yet, the current
// message, the analysis. Local and Kubernetes rollouts (through
// rollouts.Status) print the same lines.
type rolloutPrinter struct {
	w io.Writer
	// printed is how many of the events were printed.
	printed                int
	lastAnalysis, lastLine string
}

// print prints what st adds and reports whether the rollout ended; the
// error is an exitError 1 when it ended without succeeding.
func (p *rolloutPrinter) print(st *mesh.RolloutStatus) (bool, error) {
	w := p.w
	// Events are a bounded log; print the ones not printed yet.
	if p.printed > len(st.Events) {
		p.printed = 0
	}
	for _, ev := range st.Events[p.printed:] {
		if ev.Message != p.lastLine {
			fmt.Fprintln(w, ev.Message)
			p.lastLine = ev.Message
		}
	}
	p.printed = len(st.Events)
	// Progress that is not an event ("Tasks are starting (1/2)...").
	if st.Message != "" && st.Message != p.lastLine && !st.Phase.Terminal() {
		fmt.Fprintln(w, st.Message)
		p.lastLine = st.Message
	}
	if a := st.Analysis; a != nil && a.Detail != "" && a.Detail != p.lastAnalysis && st.Phase == mesh.PhaseBaking {
		p.lastAnalysis = a.Detail
		fmt.Fprintf(w, "  analysis: %s\n", a.Detail)
	}
	if st.Phase.Terminal() {
		if st.Phase == mesh.PhaseSucceeded {
			return true, nil
		}
		// The final event says what happened ("Rolled back to version
		// 0.9: success rate 80.3% < 99.0% ..."); say it once.
		if st.Message != "" && st.Message != p.lastLine {
			fmt.Fprintln(w, st.Message)
		} else if st.Message == "" {
			fmt.Fprintf(w, "Rollout %s: %s\n", st.Phase, st.Reason)
		}
		return true, exitError{code: 1}
	}
	return false, nil
}

func newRolloutCmd(g *globals, stdio IO) *cobra.Command {
	root := &cobra.Command{Use: "rollout", Short: "Follow and control a service's rollout (locally, or a Rollout object with --kubernetes)"}
	var watch bool
	var sk kubeTarget
	status := &cobra.Command{
		Use:   "status SERVICE",
		Short: "Show a service's rollout (--watch: follow it until it ends)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := sk.check(cmd); err != nil {
				return err
			}
			if sk.enabled() {
				return kubeRolloutStatus(cmd.Context(), g, &sk, args[0], watch, stdio)
			}
			c, meshName, err := g.clientInMesh(cmd.Context())
			if err != nil {
				return err
			}
			defer c.Close()
			ref := mesh.Ref{Kind: mesh.KindRollout, Mesh: meshName, Name: args[0]}
			r, err := c.Get(cmd.Context(), ref)
			if err != nil {
				if mesh.IsNotFound(err) {
					return fmt.Errorf("service %s has no rollout yet", args[0])
				}
				return err
			}
			printRollout(stdio.Out, r)
			if watch {
				st, _ := r.Status.(*mesh.RolloutStatus)
				if st != nil && st.Phase.Terminal() {
					return nil
				}
				n := 0
				if st != nil {
					n = len(st.Events)
				}
				return followRollout(cmd.Context(), c, ref, stdio.Out, n, g.targetFlags())
			}
			return nil
		},
	}
	status.Flags().BoolVarP(&watch, "watch", "w", false, "follow the rollout until it ends")
	sk.flags(status)
	root.AddCommand(status)
	for _, action := range []struct{ name, short string }{
		{"pause", "Hold the rollout at its current weight"},
		{"resume", "Continue a paused rollout"},
		{"promote", "Skip the remaining bakes and go to 100% (still waiting for every client's ACK)"},
		{"abort", "Roll back: all traffic to the old version, the new one drained and removed"},
	} {
		action := action
		var k kubeTarget
		ctl := &cobra.Command{
			Use:   action.name + " SERVICE",
			Short: action.short,
			Args:  cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				if err := k.check(cmd); err != nil {
					return err
				}
				if k.enabled() {
					return kubeRolloutControl(cmd.Context(), g, &k, args[0], action.name, stdio)
				}
				c, meshName, err := g.clientInMesh(cmd.Context())
				if err != nil {
					return err
				}
				defer c.Close()
				r, err := c.ControlRollout(cmd.Context(), meshName, args[0], action.name)
				if err != nil {
					return err
				}
				fmt.Fprintf(stdio.Out, "rollout of %s: %s requested\n", args[0], action.name)
				printRollout(stdio.Out, r)
				return nil
			},
		}
		k.flags(ctl)
		root.AddCommand(ctl)
	}
	return root
}

func printRollout(w io.Writer, r *mesh.Resource) {
	r = r.Redacted() // nothing below prints env today; keep it so
	st, _ := r.Status.(*mesh.RolloutStatus)
	spec := r.Rollout()
	if st == nil || spec == nil {
		fmt.Fprintf(w, "rollout %s: no status yet\n", r.Metadata.Name)
		return
	}
	fmt.Fprintf(w, "Rollout of %s: %s -> %s\n", r.Metadata.Name, st.OldVersion, st.NewVersion)
	step := "-"
	if st.StepIndex >= 0 && st.StepIndex < len(spec.Steps) {
		step = fmt.Sprintf("%d/%d", st.StepIndex+1, len(spec.Steps))
	}
	fmt.Fprintf(w, "  phase:   %s (step %s, new version at %d%%)\n", st.Phase, step, st.Weight)
	if st.Paused {
		fmt.Fprintln(w, "  paused:  yes")
	}
	if st.Message != "" {
		fmt.Fprintf(w, "  message: %s\n", st.Message)
	}
	if st.Reason != "" {
		fmt.Fprintf(w, "  reason:  %s\n", st.Reason)
	}
	if len(st.StalledClients) > 0 {
		fmt.Fprintf(w, "  stalled: %s (have not ACKed the route; onStalledClient: %s)\n", strings.Join(st.StalledClients, ", "), spec.OnStalledClient)
	}
	if a := st.Analysis; a != nil {
		fmt.Fprintf(w, "  analysis: %d requests, success %.2f%% (gate %.2f%%), p99 %.1fms (gate %.0fms)", a.Requests, a.SuccessRate*100, spec.Gates.MinSuccessRate*100, a.P99Millis, spec.Gates.MaxP99Millis)
		if a.Detail != "" {
			fmt.Fprintf(w, ": %s", a.Detail)
		}
		fmt.Fprintln(w)
	}
}

func newRollbackCmd(g *globals, stdio IO) *cobra.Command {
	o := &deployOptions{}
	var k kubeTarget
	cmd := &cobra.Command{
		Use:   "rollback SERVICE",
		Short: "Roll back to the previous revision, from its kept artifact (on a cluster: its recorded pod template), through the same progressive flow",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := k.check(cmd); err != nil {
				return err
			}
			if k.enabled() {
				return kubeRollback(cmd, g, o, &k, args[0], stdio)
			}
			ctx := cmd.Context()
			c, meshName, err := g.clientInMesh(ctx)
			if err != nil {
				return err
			}
			defer c.Close()
			ref := mesh.Ref{Kind: mesh.KindRollout, Mesh: meshName, Name: args[0]}
			last, err := c.Get(ctx, ref)
			if mesh.IsNotFound(err) {
				return fmt.Errorf("%s has never been deployed with gmesh deploy, so there is no earlier revision to roll back to", args[0])
			}
			if err != nil {
				return err
			}
			spec, err := rollout.RollbackSpec(last)
			if err != nil {
				return err
			}
			if cmd.Flags().Changed("steps") {
				if spec.Steps, err = parseSteps(o.steps); err != nil {
					return err
				}
			}
			if cmd.Flags().Changed("interval") {
				spec.IntervalMillis = o.interval.Milliseconds()
			}
			if cmd.Flags().Changed("timeout") {
				spec.TimeoutMillis = o.timeout.Milliseconds()
			}
			spec.AckTimeoutMillis = min(o.ackTimeout, time.Duration(spec.TimeoutMillis)*time.Millisecond).Milliseconds()
			spec.OnStalledClient = o.onStalled
			if spec.Target.Revision > 0 {
				fmt.Fprintf(stdio.Out, "Rolling %s back to version %s (revision %d)\n", args[0], spec.Target.Version, spec.Target.Revision)
			} else { // the engine numbers it; its first line says which
				fmt.Fprintf(stdio.Out, "Rolling %s back to version %s\n", args[0], spec.Target.Version)
			}
			r := mesh.New(mesh.KindRollout, meshName, args[0], spec)
			if _, err := c.StartRollout(ctx, r); err != nil {
				return err
			}
			if o.detach {
				fmt.Fprintf(stdio.Out, "Rollback started; follow it with: gmesh rollout status %s --watch%s\n", args[0], g.targetFlags())
				return nil
			}
			return followRollout(ctx, c, ref, stdio.Out, 0, g.targetFlags())
		},
	}
	o.flags(cmd)
	k.flags(cmd)
	return cmd
}
