package rollouts

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/gmesh-dev/gmesh/api/gmesh/v1alpha1"
	"github.com/gmesh-dev/gmesh/internal/mesh"
)

// A revision's recorded pod template survives the status writes that
// follow (FromStatus rebuilds the history from the engine's entries).
func TestRevisionTemplateKept(t *testing.T) {
	st := fullStatus()
	var out v1alpha1.RolloutStatus
	FromStatus(st, 1, 2, t0, &out)
	var d appsv1.Deployment
	echoObject(t, "Deployment", &d)
	d.Spec.Template.Labels["pod-template-hash"] = "abc"
	if ok, err := SetRevisionTemplate(&out, 1, "0.9", &d.Spec.Template); !ok || err != nil {
		t.Fatalf("SetRevisionTemplate: %v %v", ok, err)
	}
	if ok, _ := SetRevisionTemplate(&out, 7, "0.9", &d.Spec.Template); ok {
		t.Error("SetRevisionTemplate took a revision the history does not have")
	}
	if strings.Contains(string(out.History[0].Template.Raw), "pod-template-hash") {
		t.Errorf("template keeps the API server's label: %s", out.History[0].Template.Raw)
	}
	rec := out.History[0].Template
	st.History = append(st.History, mesh.TaskSetSpec{Service: "echo-server", Version: "1.0", Revision: 2})
	st.Phase = mesh.PhaseSucceeded
	FromStatus(st, 2, 2, t0, &out)
	if len(out.History) != 2 || out.History[0].Template != rec || out.History[1].Template != nil {
		t.Errorf("history after the next status write: %+v", out.History)
	}
	// The engine's entries convert back without it.
	if diff := cmp.Diff(st, Status(&out, "echo-server")); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
}

// RollbackSpec: the previous entry's version and pod template, which the
// new Deployment gets whole from the running one (image, env and all).
func TestRollbackSpec(t *testing.T) {
	var stable09 appsv1.Deployment
	echoObject(t, "Deployment", &stable09)
	ro := example(t)
	ro.Spec.Promote, ro.Spec.Force = true, true
	st := &mesh.RolloutStatus{Phase: mesh.PhaseSucceeded, Revision: 2, OldTaskSet: "echo-server-0-9", NewTaskSet: "echo-server-1-0",
		History: []mesh.TaskSetSpec{{Version: "0.9", Revision: 1, DesiredCount: 2}, {Version: "1.0", Revision: 2}}}
	FromStatus(st, 1, 3, t0, &ro.Status)
	if _, _, err := RollbackSpec(ro); err == nil || !strings.Contains(err.Error(), "does not record the pod template of version 0.9 (revision 1)") {
		t.Errorf("RollbackSpec without a template: %v", err)
	}
	if _, err := SetRevisionTemplate(&ro.Status, 1, "0.9", &stable09.Spec.Template); err != nil {
		t.Fatal(err)
	}
	spec, prev, err := RollbackSpec(ro)
	if err != nil {
		t.Fatal(err)
	}
	if prev.Version != "0.9" || spec.Version != "0.9" || !spec.Rollback || spec.Force || spec.Promote || spec.Images != nil ||
		spec.StableDeployment != "echo-server-1-0" || spec.Route != ro.Spec.Route || *spec.Replicas != 2 {
		t.Errorf("rollback spec: %+v", spec)
	}
	// The running 1.0: another image, an env, a container more.
	running := stable09.DeepCopy()
	running.Name = "echo-server-1-0"
	running.Spec.Template.Labels[VersionLabel] = "1.0"
	running.Spec.Selector.MatchLabels[VersionLabel] = "1.0"
	c := &running.Spec.Template.Spec.Containers[0]
	c.Image = "gmesh.local/echo-server:1.0"
	c.Env = append(c.Env, corev1.EnvVar{Name: "ECHO_FAIL_RATE", Value: "0.2"})
	running.Spec.Template.Spec.Containers = append(running.Spec.Template.Spec.Containers, corev1.Container{Name: "debug", Image: "busybox"})
	next := ro.DeepCopy()
	next.Spec = *spec
	d, err := NewDeployment(running, next, "echo-server-0-9", nil)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(stable09.Spec.Template, d.Spec.Template); diff != "" {
		t.Errorf("rolled back pod template (-want +got):\n%s", diff)
	}

	ro.Status.History = ro.Status.History[1:]
	if _, _, err := RollbackSpec(ro); err == nil || mesh.ErrorCode(err) != mesh.ENotFound {
		t.Errorf("RollbackSpec with one entry: %v", err)
	}
}
