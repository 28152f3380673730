package api

import (
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
)

// The CRD in deploy/kubernetes and the Go types describe the same
// resource: names, fields and bounds.
func TestCRDMatchesTypes(t *testing.T) {
	crd, err := LoadCRD(CRDPath())
	if err != nil {
		t.Fatal(err)
	}
	if crd.Name != Resource+"."+Group || crd.Spec.Group != Group || crd.Spec.Names.Kind != Kind ||
		crd.Spec.Names.Plural != Resource || crd.Spec.Scope != apiextensionsv1.NamespaceScoped {
		t.Errorf("CRD names %s %+v, want %s.%s kind %s, namespaced", crd.Name, crd.Spec.Names, Resource, Group, Kind)
	}
	if len(crd.Spec.Versions) != 1 || crd.Spec.Versions[0].Name != Version || crd.Spec.Versions[0].Subresources == nil ||
		crd.Spec.Versions[0].Subresources.Status == nil {
		t.Fatalf("CRD versions %+v: want %s only, with the status subresource", crd.Spec.Versions, Version)
	}
	props := crd.Spec.Versions[0].Schema.OpenAPIV3Schema.Properties
	for _, part := range []struct {
		name string
		typ  reflect.Type
	}{{"spec", reflect.TypeOf(SandboxSpec{})}, {"status", reflect.TypeOf(SandboxStatus{})}} {
		var fields []string
		for f := range part.typ.Fields() {
			fields = append(fields, strings.Split(f.Tag.Get("json"), ",")[0])
		}
		var schema []string
		for k := range props[part.name].Properties {
			schema = append(schema, k)
		}
		slices.Sort(fields)
		slices.Sort(schema)
		if !slices.Equal(fields, schema) {
			t.Errorf("%s: Go fields %v, CRD properties %v", part.name, fields, schema)
		}
	}
	spec := props["spec"].Properties
	for name, want := range map[string][]string{"net": NetModes, "accel": AccelModes} {
		var enum []string
		for _, e := range spec[name].Enum {
			var s string
			if err := json.Unmarshal(e.Raw, &s); err != nil {
				t.Fatal(err)
			}
			enum = append(enum, s)
		}
		if !slices.Equal(enum, want) {
			t.Errorf("%s enum %v, want %v", name, enum, want)
		}
	}
	// An unset accel is the controller's to choose: no default here.
	if spec["accel"].Default != nil {
		t.Errorf("accel default %s, want none (the controller's --accel)", spec["accel"].Default.Raw)
	}
	for name, want := range map[string][2]float64{"vcpus": {MinVCPUs, MaxVCPUs}, "memoryMiB": {MinMemoryMiB, MaxMemoryMiB}} {
		p := spec[name]
		if p.Minimum == nil || p.Maximum == nil || *p.Minimum != want[0] || *p.Maximum != want[1] {
			t.Errorf("%s bounds %v..%v, want %v", name, p.Minimum, p.Maximum, want)
		}
	}
	// A Sandbox runs unless told not to; the Go side's IsRunning agrees.
	if r := spec["running"]; r.Type != "boolean" || r.Default == nil || string(r.Default.Raw) != "true" || !(SandboxSpec{}).IsRunning() {
		t.Errorf("running: type %q default %v, want boolean defaulting to true", r.Type, r.Default)
	}
	if rules := props["spec"].XValidations; len(rules) != 1 || !strings.Contains(rules[0].Rule, "oldSelf.storageClassName") {
		t.Errorf("spec validations %+v: want storageClassName fixed at creation", rules)
	}
	if !slices.Equal(crd.Spec.Versions[0].Schema.OpenAPIV3Schema.Required, []string{"spec"}) || !slices.Equal(props["spec"].Required, []string{"image"}) {
		t.Error("want spec and spec.image required")
	}
}
