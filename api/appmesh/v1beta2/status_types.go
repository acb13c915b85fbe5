package v1beta2

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// Condition types gmesh's control plane writes on every App Mesh object.
const (
	// ConditionAccepted is True when the object converted into gmesh's mesh
	// model, False (reason Refused) when gmesh refused it; the message
	// names the field.
	ConditionAccepted = "Accepted"
	// ConditionTranslated is True when the object's xDS resources were
	// built and published, False when translation skipped it.
	ConditionTranslated = "Translated"
	// ConditionACKed is True when every xDS client that uses the object's
	// config ACKed the publish generation that carries it, False after a
	// NACK (see status.clients.lastNACK), Unknown while clients catch up.
	ConditionACKed = "ACKed"
)

// Condition reasons.
const (
	ReasonConverted    = "Converted"
	ReasonRefused      = "Refused"
	ReasonPublished    = "Published"
	ReasonSkipped      = "Skipped"
	ReasonAllACKed     = "AllACKed"
	ReasonNACKed       = "NACKed"
	ReasonWaitingACKs  = "WaitingForACKs"
	ReasonNoMesh       = "NoMesh"
	ReasonDanglingRef  = "DanglingReference"
	ReasonUnsupported  = "Unsupported"
	ReasonInvalidValue = "InvalidValue"
)

// GmeshStatus is the part of every object's status that gmesh writes. Each
// kind's status embeds it next to App Mesh's ARN field, which gmesh never
// sets (it stays so that manifests exported from an App Mesh cluster
// apply).
type GmeshStatus struct {
	// ObservedGeneration is the metadata.generation the status describes.
	// +optional
	ObservedGeneration *int64 `json:"observedGeneration,omitempty"`
	// Conditions are Accepted, Translated and ACKed, each with the
	// generation it was computed from.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// Mesh is the gmesh mesh the object belongs to (the Mesh's awsName,
	// else its name).
	// +optional
	Mesh string `json:"mesh,omitempty"`
	// GmeshName is the object's name in gmesh's model: spec.awsName,
	// else App Mesh's default name with '_' spelled '.'.
	// +optional
	GmeshName string `json:"gmeshName,omitempty"`
	// Clients reports the xDS clients that use the object's config.
	// +optional
	Clients *ClientsStatus `json:"clients,omitempty"`
	// UnhonouredFields lists the fields gmesh accepted but does not act
	// on (Cloud Map attributes, Envoy-only settings such as logging and
	// connection pools), each with the reason: they are reported here,
	// never silently dropped.
	// +listType=map
	// +listMapKey=field
	// +optional
	UnhonouredFields []UnhonouredField `json:"unhonouredFields,omitempty"`
}

// ClientsStatus counts the xDS clients that use an object's config and
// how far they follow it.
type ClientsStatus struct {
	// PublishGeneration is the xDS server's publish generation these counts
	// refer to (not a store revision: Kubernetes versions each object
	// alone).
	// +optional
	PublishGeneration int64 `json:"publishGeneration,omitempty"`
	// Total is the number of connected clients that use the config.
	Total int32 `json:"total"`
	// ACKed is how many of them ACKed PublishGeneration.
	ACKed int32 `json:"acked"`
	// LastNACK is the most recent NACK of the config, if any.
	// +optional
	LastNACK *NACK `json:"lastNACK,omitempty"`
}

// NACK is one client's rejection of a config version.
type NACK struct {
	// Client is the xDS node id (namespace/pod on Kubernetes).
	Client string `json:"client"`
	// Version is the rejected resource version.
	// +optional
	Version string `json:"version,omitempty"`
	// TypeURL is the rejected resource type.
	// +optional
	TypeURL string `json:"typeURL,omitempty"`
	// Reason is the client's error detail.
	Reason string `json:"reason"`
	// Time is when the control plane received the NACK.
	Time metav1.Time `json:"time"`
}

// UnhonouredField is one field gmesh accepted but does not act on.
type UnhonouredField struct {
	// Field is the field's path in the object ("spec.logging").
	Field string `json:"field"`
	// Reason says why gmesh does not act on it and what happens instead.
	Reason string `json:"reason"`
}
