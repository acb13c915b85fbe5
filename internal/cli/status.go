package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/gmesh-dev/gmesh/internal/controlplane"
	"github.com/gmesh-dev/gmesh/internal/k8s/clusterstatus"
	"github.com/gmesh-dev/gmesh/internal/mesh"
	"github.com/gmesh-dev/gmesh/internal/statedir"
)

func newStatusCmd(g *globals, stdio IO) *cobra.Command {
	var output string
	var k8s struct {
		on         bool
		kubeconfig string
		namespace  string
	}
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show services, versions, tasks, route weights and xDS convergence",
		Long: `Show services, versions, tasks, route weights and xDS convergence.

With --kubernetes (or --kubeconfig) it shows a mesh on a cluster instead:
the control plane's replicas and leader, every App Mesh object with the
conditions gmesh wrote into its status (Accepted, Translated, ACKed and the
xDS clients that ACKed), each virtual node's serving pods, and each
router's weights. It reads only through the Kubernetes API.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if k8s.on || k8s.kubeconfig != "" {
				return clusterStatus(cmd.Context(), stdio, k8s.kubeconfig, k8s.namespace, output)
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			defer c.Close()
			st, err := c.Status(cmd.Context())
			if err != nil {
				return err
			}
			st = st.Redacted() // env values (deploy --env) shown as "(set)"
			switch output {
			case "json":
				b, err := json.MarshalIndent(st, "", "  ")
				if err != nil {
					return err
				}
				_, err = fmt.Fprintf(stdio.Out, "%s\n", b)
				return err
			case "", "table":
				return printStatus(stdio.Out, st)
			}
			return fmt.Errorf("-o %q: want table or json", output)
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	cmd.Flags().BoolVar(&k8s.on, "kubernetes", false, "show the mesh on a Kubernetes cluster (the usual client-go rules: $KUBECONFIG, ~/.kube/config, else in-cluster)")
	cmd.Flags().StringVar(&k8s.kubeconfig, "kubeconfig", "", "show the mesh on the cluster of this kubeconfig file (implies --kubernetes)")
	cmd.Flags().StringVar(&k8s.namespace, "controlplane-namespace", "gmesh-system", "with --kubernetes: the control plane's namespace")
	return cmd
}

// clusterStatus prints the status of the mesh on a cluster.
func clusterStatus(ctx context.Context, stdio IO, kubeconfig, namespace, output string) error {
	if output != "" && output != "table" && output != "json" {
		return fmt.Errorf("-o %q: want table or json", output)
	}
	kc, err := newKubeClients(slog.New(slog.NewTextHandler(stdio.Err, &slog.HandlerOptions{Level: slog.LevelWarn})), kubeconfig, "gmesh-status")
	if err != nil {
		return err
	}
	r, err := clusterstatus.Read(ctx, kc.kube, kc.dyn, clusterstatus.Options{Namespace: namespace})
	if err != nil {
		return err
	}
	r.Server = kc.rest.Host
	if output == "json" {
		b, err := json.MarshalIndent(r, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(stdio.Out, "%s\n", b)
		return err
	}
	fmt.Fprintf(stdio.Out, "Cluster %s\n", r.Server)
	return r.Print(stdio.Out)
}

func printStatus(w io.Writer, st *controlplane.Status) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVICE\tMESH\tVIRTUAL NODE\tVERSION\tTASKS\tTASK SET")
	for _, ts := range st.TaskSets {
		spec := ts.TaskSet()
		if spec == nil {
			continue
		}
		running, healthy := 0, 0
		for _, ep := range st.Endpoints {
			if ep.Attributes[mesh.AttrTaskSet] == ts.Metadata.Name {
				if ep.State == mesh.TaskRunning {
					running++
				}
				if ep.Serving() {
					healthy++
				}
			}
		}
		note := ""
		if spec.Draining {
			note = " (draining)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d/%d healthy%s\t%s\n", spec.Service, ts.Metadata.Mesh, spec.VirtualNode, spec.Version, healthy, spec.DesiredCount, note, ts.Metadata.Name)
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "TASK\tSERVICE\tVERSION\tADDRESS\tPID\tSTATE\tHEALTH\tRESTARTS")
	eps := append([]*mesh.Endpoint(nil), st.Endpoints...)
	sort.Slice(eps, func(i, j int) bool { return eps[i].ID < eps[j].ID })
	for _, ep := range eps {
		health := string(ep.Health)
		if ep.Draining {
			health += " (draining)"
		}
		if ep.LastHealthError != "" && ep.Health != mesh.HealthHealthy {
			health += ": " + truncate(ep.LastHealthError, 60)
		}
		state := string(ep.State)
		proc := ep.Proc() // the local runtime's; zero on Kubernetes
		if proc.RestartAt != "" && ep.State == mesh.TaskStopped {
			state = "CRASHLOOP"
			if at, err := time.Parse(time.RFC3339Nano, proc.RestartAt); err == nil {
				state += fmt.Sprintf(" (%s; restart in %s)", proc.LastExit, max(time.Until(at), 0).Round(100*time.Millisecond))
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s:%d\t%d\t%s\t%s\t%d\n", ep.ID, ep.Service, ep.Attributes[mesh.AttrVersion], ep.Address, ep.Port, proc.PID, state, health, proc.Restarts)
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "ROUTE\tMESH\tWEIGHTS")
	for _, r := range st.Routes {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", r.Metadata.Name, r.Metadata.Mesh, summary(r))
	}
	for _, r := range st.Rollouts {
		rs, _ := r.Status.(*mesh.RolloutStatus)
		if rs == nil {
			continue
		}
		fmt.Fprintf(tw, "\nROLLOUT %s\t%s -> %s\t%s at %d%%\t%s\n", r.Metadata.Name, rs.OldVersion, rs.NewVersion, rs.Phase, rs.Weight, rs.Message)
	}
	fmt.Fprintln(tw)
	fmt.Fprintf(tw, "XDS CLIENT\tCONNECTED\tACKED (published revision %d)\tLAST NACK\n", st.PublishedRevision)
	for _, c := range st.Clients {
		var acks []string
		for typ, a := range c.Types {
			acks = append(acks, shortType(typ)+"="+a.ACKedVersion)
		}
		sort.Strings(acks)
		nack := "-"
		if c.LastNACK != nil {
			nack = fmt.Sprintf("%s %s: %s", shortType(c.LastNACK.TypeURL), c.LastNACK.Version, truncate(c.LastNACK.Detail, 80))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", c.NodeID, c.ConnectedSince.Format(time.TimeOnly), strings.Join(acks, " "), nack)
	}
	if st.TranslateError != "" {
		fmt.Fprintf(tw, "\nTRANSLATION ERROR (these resources are left out; the rest is served): %s\n", st.TranslateError)
	}
	printCertificates(tw, st, time.Now())
	return tw.Flush()
}

// printCertificates shows, while a mesh has TLS on, the mesh CA's expiry
// and each task's workload certificate (its identity, expiry and renewals),
// then a warning for each certificate that has expired or whose renewal
// failed, and for an expired CA.
func printCertificates(w io.Writer, st *controlplane.Status, now time.Time) {
	var eps []*mesh.Endpoint
	for _, ep := range st.Endpoints {
		if ep.Proc().Certificate.ID != "" {
			eps = append(eps, ep)
		}
	}
	if st.CA == nil && len(eps) == 0 {
		return
	}
	sort.Slice(eps, func(i, j int) bool { return eps[i].ID < eps[j].ID })
	var warnings []string
	fmt.Fprintln(w)
	if ca := st.CA; ca != nil {
		fmt.Fprintf(w, "CA\t%s\texpires %s\n", ca.Subject, untilText(ca.NotAfter, now))
		if !now.Before(ca.NotAfter) {
			warnings = append(warnings, fmt.Sprintf("the mesh CA expired at %s: no certificate can be issued or renewed; replace the CA", ca.NotAfter.UTC().Format(time.RFC3339)))
		}
	}
	if len(eps) > 0 {
		fmt.Fprintln(w, "TASK\tCERTIFICATE\tEXPIRES\tRENEWALS\tRENEWAL")
	}
	for _, ep := range eps {
		c := ep.Proc().Certificate
		expires, renewal := c.NotAfter, "at "+c.RenewAt
		notAfter, err := time.Parse(time.RFC3339, c.NotAfter)
		if err == nil {
			expires = untilText(notAfter, now)
		}
		if at, err := time.Parse(time.RFC3339, c.RenewAt); err == nil {
			renewal = "at " + at.Local().Format(time.TimeOnly)
		}
		if c.Failures > 0 {
			renewal = fmt.Sprintf("FAILED %d times, retry %s: %s", c.Failures, renewal, truncate(c.LastError, 80))
			warnings = append(warnings, fmt.Sprintf("renewing task %s's certificate failed %d times (the current one stays in place): %s", ep.ID, c.Failures, c.LastError))
		}
		if err == nil && !now.Before(notAfter) {
			warnings = append(warnings, fmt.Sprintf("task %s's certificate (%s) expired at %s: its TLS handshakes fail until it is renewed", ep.ID, c.ID, c.NotAfter))
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%s\n", ep.ID, c.ID, expires, c.Renewals, renewal)
	}
	for _, m := range warnings {
		fmt.Fprintf(w, "WARNING: %s\n", m)
	}
}

// untilText is t with how long until it, or how long ago it was.
func untilText(t, now time.Time) string {
	at := t.UTC().Format(time.RFC3339)
	d := t.Sub(now).Round(time.Second)
	if d > 0 {
		return fmt.Sprintf("%s (in %s)", at, days(d))
	}
	if d == 0 {
		return at + " (EXPIRED now)"
	}
	return fmt.Sprintf("%s (EXPIRED %s ago)", at, days(-d))
}

// days is d, in whole days from two days up.
func days(d time.Duration) string {
	if d >= 48*time.Hour {
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	}
	return d.String()
}

func shortType(typeURL string) string {
	switch {
	case strings.HasSuffix(typeURL, "Listener"):
		return "LDS"
	case strings.HasSuffix(typeURL, "RouteConfiguration"):
		return "RDS"
	case strings.HasSuffix(typeURL, "Cluster"):
		return "CDS"
	case strings.HasSuffix(typeURL, "ClusterLoadAssignment"):
		return "EDS"
	}
	return typeURL
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

func newLogsCmd(g *globals, stdio IO) *cobra.Command {
	var follow bool
	var tail int
	cmd := &cobra.Command{
		Use:   "logs SERVICE",
		Short: "Show a service's task output, prefixed by task (controlplane: the control plane's)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir, err := statedir.Lookup(g.stateDir)
			if errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("no logs: state directory %s does not exist", dir.Path)
			}
			if err != nil {
				return err
			}
			var files []string
			if args[0] == "controlplane" {
				files, _ = filepath.Glob(filepath.Join(dir.LogDir(), "controlplane.log"))
			} else {
				files, _ = filepath.Glob(filepath.Join(dir.LogDir(), args[0], "*.log"))
			}
			if len(files) == 0 && args[0] == "controlplane" {
				return fmt.Errorf("no control plane log (controlplane.log) in %s: no control plane has run with this state directory", dir.LogDir())
			}
			if len(files) == 0 {
				return fmt.Errorf("no logs for service %q in %s", args[0], dir.LogDir())
			}
			sort.Strings(files)
			offsets := make([]int64, len(files))
			for i, f := range files {
				n, err := printLog(stdio.Out, f, 0, tail)
				if err != nil {
					return err
				}
				offsets[i] = n
			}
			for follow {
				select {
				case <-cmd.Context().Done():
					return nil
				case <-time.After(200 * time.Millisecond):
				}
				for i, f := range files {
					n, err := printLog(stdio.Out, f, offsets[i], 0)
					if err == nil {
						offsets[i] = n
					}
				}
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new output")
	cmd.Flags().IntVar(&tail, "tail", 0, "print only the last N lines of each task (0: all)")
	return cmd
}

// printLog prints file from offset (the last `tail` lines when tail > 0)
// and returns the new offset. Task log lines already carry their task id.
func printLog(w io.Writer, file string, offset int64, tail int) (int64, error) {
	f, err := os.Open(file)
	if err != nil {
		return offset, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return offset, err
	}
	if st.Size() < offset { // rotated
		offset = 0
	}
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return offset, err
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	var lines []string
	for sc.Scan() {
		if tail > 0 {
			lines = append(lines, sc.Text())
			if len(lines) > tail {
				lines = lines[1:]
			}
			continue
		}
		fmt.Fprintln(w, sc.Text())
	}
	for _, l := range lines {
		fmt.Fprintln(w, l)
	}
	return st.Size(), nil
}
