package mesh

// RedactedValue stands for a secret value wherever gmesh shows a resource
// to a person: the dashboard, `gmesh get`, `gmesh status`, `gmesh rollout`
// and logs.
const RedactedValue = "(set)"

// RedactEnv returns a copy of env with every value replaced by
// RedactedValue: the keys show what is set, never to what. nil stays nil.
func RedactEnv(env map[string]string) map[string]string {
	if env == nil {
		return nil
	}
	out := make(map[string]string, len(env))
	for k := range env {
		out[k] = RedactedValue
	}
	return out
}

// Redacted returns r as it may be shown: for a task set and a rollout
// (whose target and history carry `gmesh deploy --env` values), a copy with
// every environment value redacted; any other resource as it is. r is not
// changed. Only what is shown goes through it: the store, the rollout
// engine and the runtime keep and use the values. A service's env is the
// stack manifest's and is shown, so that `gmesh get -o yaml` applies back.
func (r *Resource) Redacted() *Resource {
	if r == nil {
		return nil
	}
	switch r.Kind {
	case KindTaskSet, KindRollout:
	default:
		return r
	}
	c := r.Clone()
	if s := c.TaskSet(); s != nil {
		s.Env = RedactEnv(s.Env)
	}
	if s := c.Rollout(); s != nil {
		s.Target.Env = RedactEnv(s.Target.Env)
	}
	if st := c.RolloutStatus(); st != nil {
		for i := range st.History {
			st.History[i].Env = RedactEnv(st.History[i].Env)
		}
	}
	return c
}

// RedactedAll returns rs with Redacted applied to each; rs is not changed.
func RedactedAll(rs []*Resource) []*Resource {
	if rs == nil {
		return nil
	}
	out := make([]*Resource, len(rs))
	for i, r := range rs {
		out[i] = r.Redacted()
	}
	return out
}
