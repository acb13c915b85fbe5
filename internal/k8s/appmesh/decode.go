package appmesh

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer/json"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/gmesh-dev/gmesh/api/appmesh/v1beta2"
)

// Scheme knows the appmesh.k8s.aws/v1beta2 types.
var Scheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	if err := v1beta2.AddToScheme(s); err != nil {
		panic(fmt.Sprintf("register appmesh.k8s.aws/v1beta2: %v", err))
	}
	return s
}()

// Decode reads App Mesh manifests (YAML or JSON documents, as `kubectl
// apply -f` takes them) into in, strictly, as the API server does with
// strict field validation: an unknown or duplicated field is an error that
// names the file, the document and the field. A namespaced object without
// a namespace is in "default", as with kubectl. Namespaces contribute their
// labels; documents of other kinds (Deployments, Services, ...) are
// skipped. Every bad document is reported; the good ones are still added.
func Decode(file string, data []byte, in *Input) error {
	strict := json.NewSerializerWithOptions(json.DefaultMetaFactory, Scheme, Scheme, json.SerializerOptions{Yaml: true, Strict: true})
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var errs []error
	for doc := 1; ; doc++ {
		chunk, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: document %d: %w", file, doc, err))
			break
		}
		if len(bytes.TrimSpace(stripComments(chunk))) == 0 {
			doc--
			continue
		}
		var tm metav1.TypeMeta
		if err := utilyaml.Unmarshal(chunk, &tm); err != nil {
			errs = append(errs, fmt.Errorf("%s: document %d: %w", file, doc, err))
			continue
		}
		gv, err := schema.ParseGroupVersion(tm.APIVersion)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: document %d: apiVersion: %w", file, doc, err))
			continue
		}
		if gv.Group == "" && tm.Kind == "Namespace" {
			var ns metav1.PartialObjectMetadata
			if err := utilyaml.Unmarshal(chunk, &ns); err != nil {
				errs = append(errs, fmt.Errorf("%s: document %d: %w", file, doc, err))
				continue
			}
			if in.NamespaceLabels == nil {
				in.NamespaceLabels = map[string]map[string]string{}
			}
			in.NamespaceLabels[ns.Name] = ns.Labels
			continue
		}
		if gv.Group != v1beta2.GroupName {
			continue
		}
		if gv.Version != v1beta2.SchemeGroupVersion.Version {
			errs = append(errs, fmt.Errorf("%s: document %d: apiVersion: %s is not served: gmesh serves %s", file, doc, tm.APIVersion, v1beta2.SchemeGroupVersion))
			continue
		}
		obj, _, err := strict.Decode(chunk, nil, nil)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: document %d (%s): %w", file, doc, tm.Kind, err))
			continue
		}
		if m, ok := obj.(metav1.Object); ok && m.GetName() == "" {
			errs = append(errs, fmt.Errorf("%s: document %d (%s): metadata.name: required", file, doc, tm.Kind))
			continue
		}
		// kubectl puts an object without a namespace in its context's
		// namespace; here that is "default".
		if m, ok := obj.(metav1.Object); ok && m.GetNamespace() == "" && tm.Kind != "Mesh" {
			m.SetNamespace(metav1.NamespaceDefault)
		}
		switch o := obj.(type) {
		case *v1beta2.Mesh:
			in.Meshes = append(in.Meshes, *o)
		case *v1beta2.VirtualNode:
			in.VirtualNodes = append(in.VirtualNodes, *o)
		case *v1beta2.VirtualRouter:
			in.VirtualRouters = append(in.VirtualRouters, *o)
		case *v1beta2.VirtualService:
			in.VirtualServices = append(in.VirtualServices, *o)
		case *v1beta2.VirtualGateway:
			in.VirtualGateways = append(in.VirtualGateways, *o)
		case *v1beta2.GatewayRoute:
			in.GatewayRoutes = append(in.GatewayRoutes, *o)
		default:
			errs = append(errs, fmt.Errorf("%s: document %d: kind: %s is not an object gmesh converts", file, doc, tm.Kind))
		}
	}
	return errors.Join(errs...)
}

// stripComments drops YAML comment lines, so that a document of comments
// only counts as empty.
func stripComments(b []byte) []byte {
	var out []byte
	for _, line := range bytes.Split(b, []byte("\n")) {
		if t := bytes.TrimSpace(line); len(t) > 0 && t[0] != '#' {
			out = append(out, line...)
			out = append(out, '\n')
		}
	}
	return out
}
