package appmesh

import (
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/gmesh-dev/gmesh/api/appmesh/v1beta2"
)

// maxConditionMessage keeps a condition's message within what the API
// server accepts (32768 bytes), with room to spare.
const maxConditionMessage = 4096

// ApplyTo writes what the conversion knows into an object's status: the
// observed generation, the gmesh mesh and name, the unhonoured fields and
// the Accepted condition (True, or False with the first refusal's reason
// and every refusal in the message). The Translated and ACKed conditions
// and the clients are the translation's and the xDS server's to write.
// now is the transition time of a condition that changes.
func (r *Result) ApplyTo(st *v1beta2.GmeshStatus, generation int64, now metav1.Time) {
	st.ObservedGeneration = &generation
	st.Mesh, st.GmeshName = r.Mesh, r.Name
	st.UnhonouredFields = append([]v1beta2.UnhonouredField(nil), r.Unhonoured...)
	c := metav1.Condition{
		Type:               v1beta2.ConditionAccepted,
		Status:             metav1.ConditionTrue,
		ObservedGeneration: generation,
		LastTransitionTime: now,
		Reason:             v1beta2.ReasonConverted,
		Message:            "converted into gmesh's model",
	}
	if len(r.Errors) > 0 {
		msgs := make([]string, len(r.Errors))
		for i, e := range r.Errors {
			msgs[i] = e.Field + ": " + e.Message
		}
		c.Reason = r.Errors[0].Reason
		c.Message = strings.Join(msgs, "; ")
		if r.Refused() {
			c.Status = metav1.ConditionFalse
		} else {
			// A router some of whose routes were refused.
			c.Message = fmt.Sprintf("accepted without %d refused route(s): %s", len(r.Errors), c.Message)
		}
	}
	if len(c.Message) > maxConditionMessage {
		c.Message = c.Message[:maxConditionMessage-3] + "..."
	}
	meta.SetStatusCondition(&st.Conditions, c)
}
