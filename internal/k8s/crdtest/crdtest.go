// Package crdtest runs objects through what the API server does with a
// custom resource on create and update (its own CRD validation, structural
// schema, pruning of unknown fields, defaulting, OpenAPI validation, list
// types and CEL rules, from k8s.io/apiextensions-apiserver at the
// cluster's version), so that tests of a CRD need no cluster.
package crdtest

import (
	"context"
	"fmt"
	"os"
	"time"

	"k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	crdvalidation "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/validation"
	structuralschema "k8s.io/apiextensions-apiserver/pkg/apiserver/schema"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/cel"
	structuraldefaulting "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/defaulting"
	structurallisttype "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/listtype"
	structuralpruning "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/pruning"
	apiservervalidation "k8s.io/apiextensions-apiserver/pkg/apiserver/validation"
	"k8s.io/apimachinery/pkg/runtime"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	"sigs.k8s.io/yaml"
)

// CRD is one single-version CRD ready to admit objects.
type CRD struct {
	// Internal is the CRD in the API server's internal form.
	Internal   *apiextensions.CustomResourceDefinition
	schema     *apiextensions.JSONSchemaProps
	structural *structuralschema.Structural
}

// Load reads a CRD file and checks it as the API server would on create.
func Load(file string) (*CRD, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	scheme := runtime.NewScheme()
	if err := apiextensionsv1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	if err := apiextensions.AddToScheme(scheme); err != nil {
		return nil, err
	}
	var v1 apiextensionsv1.CustomResourceDefinition
	if err := yaml.UnmarshalStrict(data, &v1); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	scheme.Default(&v1)
	var in apiextensions.CustomResourceDefinition
	if err := scheme.Convert(&v1, &in, nil); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	if errs := crdvalidation.ValidateCustomResourceDefinition(context.Background(), &in); len(errs) > 0 {
		return nil, fmt.Errorf("%s: the API server would refuse the CRD: %w", file, errs.ToAggregate())
	}
	if len(in.Spec.Versions) != 1 || in.Spec.Validation == nil || in.Spec.Validation.OpenAPIV3Schema == nil {
		return nil, fmt.Errorf("%s: want one version with a schema", file)
	}
	s := in.Spec.Validation.OpenAPIV3Schema
	st, err := structuralschema.NewStructural(s)
	if err != nil {
		return nil, fmt.Errorf("%s: not structural: %w", file, err)
	}
	return &CRD{Internal: &in, schema: s, structural: st}, nil
}

// Admit runs obj through a create (old nil) or an update of old with strict
// field validation and returns the API server's complaints. obj is pruned
// and defaulted in place; the status it carries is ignored (a status
// subresource), as on a create or update of the object itself.
func (c *CRD) Admit(obj, old map[string]any) ([]string, error) {
	var msgs []string
	unknown := structuralpruning.PruneWithOptions(obj, c.structural, true, structuralschema.UnknownFieldPathOptions{TrackUnknownFieldPaths: true})
	for _, u := range unknown {
		msgs = append(msgs, `unknown field "`+u+`"`)
	}
	delete(obj, "status")
	if old != nil {
		if st, ok := old["status"]; ok {
			obj["status"] = st
		}
	}
	structuraldefaulting.Default(obj, c.structural)
	validator, _, err := apiservervalidation.NewSchemaValidator(c.schema)
	if err != nil {
		return nil, err
	}
	if old == nil {
		for _, e := range apiservervalidation.ValidateCustomResource(nil, obj, validator) {
			msgs = append(msgs, e.Error())
		}
	} else {
		for _, e := range apiservervalidation.ValidateCustomResourceUpdate(nil, obj, old, validator) {
			msgs = append(msgs, e.Error())
		}
	}
	for _, e := range structurallisttype.ValidateListSetsAndMaps(nil, c.structural, obj) {
		msgs = append(msgs, e.Error())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var oldObj any
	if old != nil {
		oldObj = old
	}
	errs, _ := cel.NewValidator(c.structural, true, celconfig.PerCallLimit).Validate(ctx, nil, c.structural, obj, oldObj, celconfig.RuntimeCELCostBudget)
	for _, e := range errs {
		msgs = append(msgs, e.Error())
	}
	return msgs, nil
}
