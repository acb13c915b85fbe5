package cli

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/gmesh-dev/gmesh/internal/mesh"
)

// readManifests decodes every file named (directories: their .yaml, .yml
// and .json files, sorted), collecting every error before giving up.
func readManifests(paths []string) ([]*mesh.Resource, error) {
	var files []string
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("manifest %s: %w", p, err)
		}
		if !st.IsDir() {
			files = append(files, p)
			continue
		}
		entries, err := os.ReadDir(p)
		if err != nil {
			return nil, fmt.Errorf("manifest directory %s: %w", p, err)
		}
		for _, e := range entries {
			switch strings.ToLower(filepath.Ext(e.Name())) {
			case ".yaml", ".yml", ".json":
				if !e.IsDir() {
					files = append(files, filepath.Join(p, e.Name()))
				}
			}
		}
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no manifest files in %s", strings.Join(paths, ", "))
	}
	var all []*mesh.Resource
	var errs mesh.Errors
	for _, f := range files {
		st, err := os.Stat(f)
		if err != nil {
			return nil, fmt.Errorf("manifest %s: %w", f, err)
		}
		if st.Size() > mesh.MaxManifestBytes {
			errs = append(errs, &mesh.Error{Code: mesh.EInvalid, File: f, Message: fmt.Sprintf("file is %d bytes; the limit is %d", st.Size(), mesh.MaxManifestBytes)})
			continue
		}
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("manifest %s: %w", f, err)
		}
		rs, err := mesh.Decode(f, data)
		if err != nil {
			if es, ok := err.(mesh.Errors); ok {
				errs = append(errs, es...)
				continue
			}
			return nil, err
		}
		all = append(all, rs...)
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return all, nil
}

func newApplyCmd(g *globals, stdio IO) *cobra.Command {
	var files []string
	var dryRun bool
	cmd := &cobra.Command{
		Use:   "apply -f FILE [-f FILE|DIR ...]",
		Short: "Create or update resources from manifests, all or nothing",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(files) == 0 {
				return fmt.Errorf("give at least one manifest with -f")
			}
			rs, err := readManifests(files)
			if err != nil {
				return err
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			defer c.Close()
			resp, out, err := c.Apply(cmd.Context(), strings.Join(files, ","), rs, dryRun)
			if err != nil {
				return err
			}
			if dryRun {
				fmt.Fprintf(stdio.Out, "%d resources are valid (dry run: nothing stored)\n", len(rs))
				return nil
			}
			for i, r := range out {
				res := ""
				if i < len(resp.Results) {
					res = resp.Results[i]
				}
				fmt.Fprintf(stdio.Out, "%s/%s %s\n", strings.ToLower(string(r.Kind)), r.Metadata.Name, res)
			}
			return nil
		},
	}
	cmd.Flags().StringArrayVarP(&files, "filename", "f", nil, "manifest file or directory (repeatable)")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "validate only")
	return cmd
}

func newGetCmd(g *globals, stdio IO) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "get KIND [NAME]",
		Short: "Show resources (kinds: mesh, virtualnode|vn, virtualrouter|vr, route, virtualservice|vs, virtualgateway|vg, gatewayroute|gr, service, taskset, rollout)",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			kind, err := mesh.ParseKind(args[0])
			if err != nil {
				return err
			}
			switch output {
			case "", "table", "yaml", "json":
			default:
				return fmt.Errorf("-o %q: want table, yaml or json", output)
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			defer c.Close()
			var rs []*mesh.Resource
			if len(args) == 2 {
				r, err := c.Get(cmd.Context(), mesh.Ref{Kind: kind, Mesh: g.mesh, Name: args[1]})
				if err != nil {
					return err
				}
				rs = []*mesh.Resource{r}
			} else {
				rs, err = c.List(cmd.Context(), kind, g.mesh)
				if err != nil {
					return err
				}
			}
			// Task sets' and rollouts' env values (deploy --env) are shown
			// as "(set)".
			rs = mesh.RedactedAll(rs)
			switch output {
			case "yaml":
				b, err := mesh.EncodeYAML(rs)
				if err != nil {
					return err
				}
				_, err = stdio.Out.Write(b)
				return err
			case "json":
				var v any = rs
				if len(args) == 2 {
					v = rs[0]
				}
				b, err := json.MarshalIndent(v, "", "  ")
				if err != nil {
					return err
				}
				_, err = fmt.Fprintf(stdio.Out, "%s\n", b)
				return err
			}
			if len(rs) == 0 {
				fmt.Fprintf(stdio.Err, "No %s found.\n", kind)
				return nil
			}
			tw := tabwriter.NewWriter(stdio.Out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "MESH\tNAME\tSUMMARY\tVERSION\tUPDATED")
			sort.Slice(rs, func(i, j int) bool { return rs[i].Ref().String() < rs[j].Ref().String() })
			for _, r := range rs {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Metadata.Mesh, r.Metadata.Name, summary(r), r.Metadata.ResourceVersion, r.Metadata.UpdatedAt)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table, yaml or json")
	return cmd
}

// summary is one line about a resource for tables.
func summary(r *mesh.Resource) string {
	switch s := r.Spec.(type) {
	case *mesh.RouteSpec:
		ts := s.Targets()
		parts := make([]string, len(ts))
		for i, t := range ts {
			parts[i] = fmt.Sprintf("%s=%d", t.VirtualNode, t.Weight)
		}
		return "router " + s.VirtualRouterName + ": " + strings.Join(parts, " ")
	case *mesh.VirtualServiceSpec:
		if s.Provider == nil {
			return ""
		}
		if s.Provider.VirtualRouter != nil {
			return "router " + s.Provider.VirtualRouter.VirtualRouterName
		}
		if s.Provider.VirtualNode != nil {
			return "node " + s.Provider.VirtualNode.VirtualNodeName
		}
	case *mesh.VirtualNodeSpec:
		if sel := s.ServiceDiscovery.Selector(); sel != nil {
			parts := []string{sel.ServiceName}
			for _, a := range sel.Attributes {
				parts = append(parts, a.Key+"="+a.Value)
			}
			return "selects " + strings.Join(parts, " ")
		}
	case *mesh.ServiceSpec:
		return fmt.Sprintf("node %s, %d tasks, port %d", s.VirtualNode, s.DesiredCount, s.Port)
	case *mesh.TaskSetSpec:
		st := fmt.Sprintf("version %s, %d tasks", s.Version, s.DesiredCount)
		if s.Draining {
			st += ", draining"
		}
		return st
	case *mesh.RolloutSpec:
		if rs, ok := r.Status.(*mesh.RolloutStatus); ok && rs != nil {
			return fmt.Sprintf("%s -> %s: %s at %d%%", rs.OldVersion, rs.NewVersion, rs.Phase, rs.Weight)
		}
	case *mesh.GatewayRouteSpec:
		return s.MatchSummary() + " -> " + s.Target()
	}
	return ""
}

func newDeleteCmd(g *globals, stdio IO) *cobra.Command {
	var rv string
	cmd := &cobra.Command{
		Use:   "delete KIND NAME",
		Short: "Delete a resource (refused while others refer to it)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			kind, err := mesh.ParseKind(args[0])
			if err != nil {
				return err
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			defer c.Close()
			if err := c.Delete(cmd.Context(), mesh.Ref{Kind: kind, Mesh: g.mesh, Name: args[1]}, rv); err != nil {
				return err
			}
			fmt.Fprintf(stdio.Out, "%s/%s deleted\n", strings.ToLower(string(kind)), args[1])
			return nil
		},
	}
	cmd.Flags().StringVar(&rv, "resource-version", "", "delete only if the stored resourceVersion matches")
	return cmd
}
