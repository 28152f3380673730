package firecracker

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	"gopkg.in/yaml.v3"
)

// This file is a validator for the subset of OpenAPI 2 (Swagger) that
// testdata/firecracker.yaml uses: paths with path parameters, one body
// parameter per operation, $ref to definitions, object/string/integer/
// boolean/array/number types, required, enum, minimum/maximum, readOnly and
// additionalProperties. Objects are closed unless additionalProperties
// says otherwise: Firecracker's serde types deny unknown fields.

type apiSpec struct {
	Paths       map[string]map[string]*operation `yaml:"paths"`
	Definitions map[string]*schema               `yaml:"definitions"`
}

type operation struct {
	OperationID string               `yaml:"operationId"`
	Parameters  []parameter          `yaml:"parameters"`
	Responses   map[string]*response `yaml:"responses"`
}

type parameter struct {
	Name     string  `yaml:"name"`
	In       string  `yaml:"in"`
	Required bool    `yaml:"required"`
	Type     string  `yaml:"type"`
	Schema   *schema `yaml:"schema"`
}

type response struct {
	Schema *schema `yaml:"schema"`
}

type schema struct {
	Ref                  string             `yaml:"$ref"`
	Type                 string             `yaml:"type"`
	Required             []string           `yaml:"required"`
	Properties           map[string]*schema `yaml:"properties"`
	AdditionalProperties yaml.Node          `yaml:"additionalProperties"`
	Items                *schema            `yaml:"items"`
	Enum                 []string           `yaml:"enum"`
	Minimum              *float64           `yaml:"minimum"`
	Maximum              *float64           `yaml:"maximum"`
	ReadOnly             bool               `yaml:"readOnly"`
}

var (
	specOnce sync.Once
	specVal  *apiSpec
	specErr  error
)

// loadSpec parses testdata/firecracker.yaml once. path is absolute for the
// helper process, whose working directory is the VM directory.
func loadSpec(path string) (*apiSpec, error) {
	specOnce.Do(func() {
		b, err := os.ReadFile(path)
		if err != nil {
			specErr = err
			return
		}
		var s apiSpec
		if err := yaml.Unmarshal(b, &s); err != nil {
			specErr = fmt.Errorf("%s: %w", path, err)
			return
		}
		specVal = &s
	})
	return specVal, specErr
}

func mustSpec(t *testing.T) *apiSpec {
	t.Helper()
	s, err := loadSpec(specPath())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func specPath() string {
	if p := os.Getenv("BANGER_FAKE_FC_SPEC"); p != "" {
		return p
	}
	wd, _ := os.Getwd()
	return wd + "/testdata/firecracker.yaml"
}

// route finds the operation for method and a concrete path, and the path
// parameters' values.
func (s *apiSpec) route(method, path string) (*operation, map[string]string, error) {
	segs := strings.Split(strings.Trim(path, "/"), "/")
	tmpls := make([]string, 0, len(s.Paths))
	for t := range s.Paths {
		tmpls = append(tmpls, t)
	}
	sort.Strings(tmpls)
	for _, tmpl := range tmpls {
		tsegs := strings.Split(strings.Trim(tmpl, "/"), "/")
		if len(tsegs) != len(segs) {
			continue
		}
		params := map[string]string{}
		ok := true
		for i, ts := range tsegs {
			if strings.HasPrefix(ts, "{") && strings.HasSuffix(ts, "}") {
				if segs[i] == "" {
					ok = false
					break
				}
				params[ts[1:len(ts)-1]] = segs[i]
			} else if ts != segs[i] {
				ok = false
				break
			}
		}
		if !ok {
			continue
		}
		op := s.Paths[tmpl][strings.ToLower(method)]
		if op == nil {
			return nil, nil, fmt.Errorf("%s %s: method not in the spec for %s", method, path, tmpl)
		}
		return op, params, nil
	}
	return nil, nil, fmt.Errorf("%s %s: no such path in the spec", method, path)
}

// validateRequest checks one request against the spec.
func (s *apiSpec) validateRequest(method, path string, body []byte) error {
	op, params, err := s.route(method, path)
	if err != nil {
		return err
	}
	var bodyParam *parameter
	for i := range op.Parameters {
		p := &op.Parameters[i]
		switch p.In {
		case "path":
			v, ok := params[p.Name]
			if !ok && p.Required {
				return fmt.Errorf("%s %s: missing path parameter %s", method, path, p.Name)
			}
			if p.Type == "integer" {
				if _, err := strconv.ParseInt(v, 10, 64); err != nil {
					return fmt.Errorf("%s %s: path parameter %s=%q is not an integer", method, path, p.Name, v)
				}
			}
		case "body":
			bodyParam = p
		}
	}
	body = bytes.TrimSpace(body)
	if bodyParam == nil {
		if len(body) > 0 {
			return fmt.Errorf("%s %s: takes no body", method, path)
		}
		return nil
	}
	if len(body) == 0 {
		if bodyParam.Required {
			return fmt.Errorf("%s %s: body required", method, path)
		}
		return nil
	}
	v, err := decodeJSON(body)
	if err != nil {
		return fmt.Errorf("%s %s: body: %w", method, path, err)
	}
	if err := s.validate(bodyParam.Schema, v, "body", true); err != nil {
		return fmt.Errorf("%s %s (%s): %w", method, path, op.OperationID, err)
	}
	return nil
}

// validateResponse checks an answer against the spec's responses.
func (s *apiSpec) validateResponse(method, path string, status int, body []byte) error {
	op, _, err := s.route(method, path)
	if err != nil {
		return err
	}
	r, ok := op.Responses[strconv.Itoa(status)]
	if !ok {
		r, ok = op.Responses["default"]
	}
	if !ok {
		return fmt.Errorf("%s %s: status %d not in the spec", method, path, status)
	}
	body = bytes.TrimSpace(body)
	if r.Schema == nil {
		if len(body) > 0 {
			return fmt.Errorf("%s %s: status %d has no body in the spec, got %q", method, path, status, body)
		}
		return nil
	}
	v, err := decodeJSON(body)
	if err != nil {
		return fmt.Errorf("%s %s: answer: %w", method, path, err)
	}
	return s.validate(r.Schema, v, "answer", false)
}

func decodeJSON(b []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	if d.More() {
		return nil, fmt.Errorf("trailing data after JSON value")
	}
	return v, nil
}

func (s *apiSpec) resolve(sc *schema) (*schema, error) {
	for sc != nil && sc.Ref != "" {
		name, ok := strings.CutPrefix(sc.Ref, "#/definitions/")
		if !ok {
			return nil, fmt.Errorf("unsupported $ref %q", sc.Ref)
		}
		next := s.Definitions[name]
		if next == nil {
			return nil, fmt.Errorf("dangling $ref %q", sc.Ref)
		}
		sc = next
	}
	return sc, nil
}

// validate checks v (from decodeJSON) against sc. request: readOnly
// properties are refused.
func (s *apiSpec) validate(sc *schema, v any, where string, request bool) error {
	sc, err := s.resolve(sc)
	if err != nil {
		return fmt.Errorf("%s: %w", where, err)
	}
	if sc == nil {
		return nil
	}
	if len(sc.Enum) > 0 {
		str, ok := v.(string)
		if !ok || !slices.Contains(sc.Enum, str) {
			return fmt.Errorf("%s: %v is not one of %q", where, v, sc.Enum)
		}
	}
	typ := sc.Type
	if typ == "" && sc.Properties != nil {
		typ = "object"
	}
	switch typ {
	case "object":
		m, ok := v.(map[string]any)
		if !ok {
			return fmt.Errorf("%s: want an object, got %T", where, v)
		}
		for _, r := range sc.Required {
			if _, ok := m[r]; !ok {
				return fmt.Errorf("%s: required field %q missing", where, r)
			}
		}
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			ps, ok := sc.Properties[k]
			if !ok {
				switch ap := sc.AdditionalProperties; {
				case ap.Kind == yaml.ScalarNode && ap.Value == "true":
					continue
				case ap.Kind == yaml.MappingNode:
					var as schema
					if err := ap.Decode(&as); err != nil {
						return err
					}
					if err := s.validate(&as, m[k], where+"."+k, request); err != nil {
						return err
					}
					continue
				}
				return fmt.Errorf("%s: unknown field %q (additionalProperties not allowed)", where, k)
			}
			if rps, _ := s.resolve(ps); request && rps != nil && rps.ReadOnly {
				return fmt.Errorf("%s: field %q is read-only", where, k)
			}
			if err := s.validate(ps, m[k], where+"."+k, request); err != nil {
				return err
			}
		}
	case "array":
		a, ok := v.([]any)
		if !ok {
			return fmt.Errorf("%s: want an array, got %T", where, v)
		}
		for i, e := range a {
			if err := s.validate(sc.Items, e, fmt.Sprintf("%s[%d]", where, i), request); err != nil {
				return err
			}
		}
	case "string":
		if _, ok := v.(string); !ok {
			return fmt.Errorf("%s: want a string, got %T", where, v)
		}
	case "boolean":
		if _, ok := v.(bool); !ok {
			return fmt.Errorf("%s: want a boolean, got %T", where, v)
		}
	case "integer", "number":
		n, ok := v.(json.Number)
		if !ok {
			return fmt.Errorf("%s: want a number, got %T", where, v)
		}
		f, err := n.Float64()
		if err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
		if typ == "integer" {
			if _, err := n.Int64(); err != nil {
				return fmt.Errorf("%s: %s is not an integer", where, n)
			}
		}
		if sc.Minimum != nil && f < *sc.Minimum {
			return fmt.Errorf("%s: %s is below the minimum %v", where, n, *sc.Minimum)
		}
		if sc.Maximum != nil && f > *sc.Maximum {
			return fmt.Errorf("%s: %s is above the maximum %v", where, n, *sc.Maximum)
		}
	case "":
	default:
		return fmt.Errorf("%s: unsupported schema type %q", where, typ)
	}
	return nil
}

// TestValidatorCatchesViolations proves the validator rejects what it
// should, so the contract tests mean something.
func TestValidatorCatchesViolations(t *testing.T) {
	s := mustSpec(t)
	tests := []struct {
		method, path, body string
		wantErr            string
	}{
		{"PUT", "/machine-config", `{"vcpu_count":2,"mem_size_mib":256}`, ""},
		{"PUT", "/machine-config", `{"vcpu_count":2}`, `"mem_size_mib" missing`},
		{"PUT", "/machine-config", `{"vcpu_count":33,"mem_size_mib":256}`, "above the maximum"},
		{"PUT", "/machine-config", `{"vcpu_count":"2","mem_size_mib":256}`, "want a number"},
		{"PUT", "/machine-config", `{"vcpu_count":1.5,"mem_size_mib":256}`, "not an integer"},
		{"PUT", "/machine-config", `{"vcpu_count":1,"mem_size_mib":256,"memory":1}`, `unknown field "memory"`},
		{"PUT", "/drives/vda", `{"drive_id":"vda","path_on_host":"/x","is_root_device":false,"is_read_only":true}`, ""},
		{"PUT", "/drives/vda", `{"drive_id":"vda","path_on_host":"/x","is_read_only":true}`, `"is_root_device" missing`},
		{"PUT", "/drives/vda", `{"drive_id":"vda","is_root_device":false,"cache_type":"Fast"}`, "not one of"},
		{"PUT", "/drives/", `{}`, "no such path"},
		{"PUT", "/actions", `{"action_type":"InstanceStart"}`, ""},
		{"PUT", "/actions", `{"action_type":"Reboot"}`, "not one of"},
		{"PUT", "/actions", ``, "body required"},
		{"PUT", "/vsock", `{"guest_cid":2,"uds_path":"/v.sock"}`, "below the minimum"},
		{"PUT", "/network-interfaces/eth0", `{"iface_id":"eth0","host_dev_name":"tap0","guest_mac":"06:00:AC:10:00:02"}`, ""},
		{"POST", "/actions", `{"action_type":"InstanceStart"}`, "method not in the spec"},
		{"GET", "/", ``, ""},
		{"GET", "/", `{}`, "takes no body"},
		{"PUT", "/logger", `{"log_path":"/l","level":"Loud"}`, "not one of"},
		{"PUT", "/snapshot/load", `{"snapshot_path":"/s","mem_backend":{"backend_type":"File","backend_path":"/m"},"network_overrides":[{"iface_id":"eth0","host_dev_name":"tap1"}]}`, ""},
		{"PUT", "/snapshot/load", `{"snapshot_path":"/s","mem_backend":{"backend_type":"File","backend_path":"/m"},"network_overrides":[{"iface_id":"eth0"}]}`, `"host_dev_name" missing`},
		{"PUT", "/snapshot/load", `{"snapshot_path":"/s","mem_backend":{"backend_type":"File","backend_path":"/m"},"network_overrides":[{"iface_id":"eth0","host_dev_name":"tap1","guest_mac":"x"}]}`, `unknown field "guest_mac"`},
		{"PUT", "/snapshot/load", `{"snapshot_path":"/s","mem_backend":{"backend_type":"File","backend_path":"/m"},"network_overrides":{"iface_id":"eth0"}}`, "want an array"},
	}
	for _, tt := range tests {
		err := s.validateRequest(tt.method, tt.path, []byte(tt.body))
		if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
			t.Errorf("%s %s %s: %v; want error containing %q", tt.method, tt.path, tt.body, err, tt.wantErr)
		}
	}
	if err := s.validateResponse("PUT", "/drives/vda", 400, []byte(`{"fault_message":"bad"}`)); err != nil {
		t.Error(err)
	}
	if err := s.validateResponse("PUT", "/drives/vda", 204, []byte(`{"x":1}`)); err == nil {
		t.Error("204 with a body accepted")
	}
}
