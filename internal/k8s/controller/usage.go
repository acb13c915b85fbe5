package controller

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/gmesh-dev/gmesh/api/appmesh/v1beta2"
	"github.com/gmesh-dev/gmesh/internal/k8s/appmesh"
	"github.com/gmesh-dev/gmesh/internal/mesh"
)

// PathUsage is where every replica's health listener answers
// ControlPlane.Usage as JSON, for the leader's ACKed conditions.
const PathUsage = "/usage"

// ObjectUsage is one object's xDS clients on one replica, as the status
// writer counts them: the clients that use the object, measured against
// the replica's last publish, which held the object at Generation.
type ObjectUsage struct {
	Kind       mesh.Kind     `json:"kind"`
	Namespace  string        `json:"namespace,omitempty"`
	Name       string        `json:"name"`
	Generation int64         `json:"generation"`
	Total      int           `json:"total"`
	ACKed      int           `json:"acked"`
	LastNACK   *v1beta2.NACK `json:"lastNACK,omitempty"`
}

// Usage counts this replica's xDS clients of every object of its last
// published snapshot that has an ACKed condition (DesiredStatus's counts).
func (cp *ControlPlane) Usage() []ObjectUsage {
	snap := cp.source.LastUsed()
	if snap == nil {
		return nil
	}
	var out []ObjectUsage
	for _, r := range snap.Results {
		om, ok := snap.Objects[r.Object]
		if !ok {
			continue
		}
		st := DesiredStatus(snap, r, om.Generation, cp.xds)
		if st.Clients == nil {
			continue
		}
		out = append(out, ObjectUsage{
			Kind: r.Object.Kind, Namespace: r.Object.Namespace, Name: r.Object.Name, Generation: om.Generation,
			Total: int(st.Clients.Total), ACKed: int(st.Clients.ACKed), LastNACK: st.Clients.LastNACK,
		})
	}
	return out
}

func usageHandler(cp *ControlPlane) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		u := cp.Usage()
		if u == nil {
			u = []ObjectUsage{}
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(u) //nolint:errcheck // the client went away
	})
}

// Usage asks every other Ready replica (not this one: the status writer
// counts its own clients itself) for its clients' counts, at once, each
// within the peer timeout; a replica that does not answer is left out
// (logged), as status is a report and the next pass asks again.
func (c *ClusterConvergence) Usage(ctx context.Context) map[appmesh.Object][]ObjectUsage {
	pods, err := c.pods.Pods(c.cfg.Namespace).List(c.sel)
	if err != nil {
		c.log.Warn("control-plane replicas not listed: their clients are not counted in status", "err", err)
		return nil
	}
	var mu sync.Mutex
	out := map[appmesh.Object][]ObjectUsage{}
	var wg sync.WaitGroup
	for _, p := range pods {
		if p.Name == c.cfg.Self || !Serving(p) {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			us, err := c.askUsage(ctx, p)
			if err != nil {
				c.log.Debug("replica did not answer: its clients are not counted in status", "replica", p.Name, "err", err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			for _, u := range us {
				o := appmesh.Object{Kind: u.Kind, Namespace: u.Namespace, Name: u.Name}
				out[o] = append(out[o], u)
			}
		}()
	}
	wg.Wait()
	return out
}

func (c *ClusterConvergence) askUsage(ctx context.Context, p *corev1.Pod) ([]ObjectUsage, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	u := url.URL{Scheme: "http", Host: net.JoinHostPort(p.Status.PodIP, strconv.Itoa(c.cfg.Port)), Path: PathUsage}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.cfg.Client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", u.String(), err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %s", u.String(), resp.Status, strings.TrimSpace(string(body)))
	}
	var us []ObjectUsage
	if err := json.Unmarshal(body, &us); err != nil {
		return nil, fmt.Errorf("GET %s: decode: %w", u.String(), err)
	}
	return us, nil
}

// otherReplicasEvery is how often the leader asks the other replicas for
// their clients' counts: their ACKs wake nothing on the leader.
const otherReplicasEvery = 2 * time.Second
