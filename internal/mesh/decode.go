package mesh

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"

	"sigs.k8s.io/yaml"
)

// MaxManifestBytes is the largest manifest file Decode accepts.
const MaxManifestBytes = 4 << 20

// Source locates a resource in its manifest: the file, the document (1-based)
// and, for an item of a list document, the item's path ("items[2]").
type Source struct {
	File string
	Doc  int
	Path string
}

// errAt returns an EInvalid error about field of the resource decoded from src
// (src may be nil).
func (s *Source) errAt(field, format string, args ...any) *Error {
	e := FieldError(field, format, args...)
	if s != nil {
		e.File, e.Doc = s.File, s.Doc
		if s.Path != "" {
			e.Field = joinPath(s.Path, field)
		}
	}
	return e
}

func joinPath(prefix, field string) string {
	switch {
	case prefix == "":
		return field
	case field == "":
		return prefix
	case field[0] == '[':
		return prefix + field
	}
	return prefix + "." + field
}

// Decode decodes the manifest documents in data, read from file (a name used
// in errors only). data is YAML (documents separated by "---") or JSON (one
// or more values); a document may also be a list of resources (a YAML/JSON
// array, or {kind: List, items: [...]}). Empty documents are skipped.
// Decoding is strict: unknown fields, wrong types, a missing or wrong
// apiVersion or kind, and a resource named twice are errors. All errors are
// returned together as Errors, each naming file, document and field; on any
// error no resource is returned.
//
// Decode neither applies defaults nor validates field values: see Default
// and Validate.
func Decode(file string, data []byte) ([]*Resource, error) {
	if len(data) > MaxManifestBytes {
		return nil, Errors{{Code: EInvalid, File: file, Message: fmt.Sprintf(
			"file is %s, over the %s limit for one manifest; split it into several files",
			sizeString(len(data)), sizeString(MaxManifestBytes))}}
	}
	d := &decoder{file: file}
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	if first := firstNonSpace(data); first == '{' || first == '[' {
		d.decodeJSONStream(data)
	} else {
		d.decodeYAMLStream(data)
	}
	if err := CheckDuplicates(d.out); err != nil {
		d.errs = append(d.errs, err.(Errors)...)
	}
	if len(d.errs) > 0 {
		return nil, CapErrors(d.errs)
	}
	return d.out, nil
}

// MaxReportedErrors caps how many errors one call reports; the rest are
// summed up in a last entry.
const MaxReportedErrors = 50

// CapErrors returns errs cut to MaxReportedErrors entries plus a summary.
func CapErrors(errs Errors) Errors {
	if len(errs) <= MaxReportedErrors {
		return errs
	}
	last := errs[len(errs)-1]
	return append(errs[:MaxReportedErrors:MaxReportedErrors], &Error{Code: EInvalid, File: last.File,
		Message: fmt.Sprintf("... and %d more errors", len(errs)-MaxReportedErrors)})
}

// CheckDuplicates returns an EInvalid Errors if two of rs have the same
// identity (kind, mesh, name), naming where each came from.
func CheckDuplicates(rs []*Resource) error {
	var errs Errors
	seen := make(map[Ref]*Resource, len(rs))
	for _, r := range rs {
		ref := r.Ref()
		if prev, ok := seen[ref]; ok {
			where := ""
			if prev.Source != nil {
				if prev.Source.File != "" && (r.Source == nil || prev.Source.File != r.Source.File) {
					where = " in " + prev.Source.File
				}
				if prev.Source.Doc > 0 {
					where += fmt.Sprintf(" (document %d)", prev.Source.Doc)
				}
			}
			errs = append(errs, r.errAt("metadata.name", "duplicate %s %s: already defined%s", ref.Kind.lower(), refName(ref), where))
			continue
		}
		seen[ref] = r
	}
	if len(errs) > 0 {
		return errs
	}
	return nil
}

// refName is "mesh/name", or "name" for a Mesh.
func refName(ref Ref) string {
	if ref.Mesh == "" {
		return ref.Name
	}
	return ref.Mesh + "/" + ref.Name
}

// errAt returns an EInvalid error about field of r, located by r.Source, or,
// when r has no source, by r's identity in place of a file name.
func (r *Resource) errAt(field, format string, args ...any) *Error {
	if r.Source != nil {
		return r.Source.errAt(field, format, args...)
	}
	e := FieldError(field, format, args...)
	e.File = r.Kind.lower() + " " + refName(r.Ref())
	return e
}

func sizeString(n int) string {
	if n >= 1<<20 {
		return strconv.FormatFloat(math.Round(float64(n)/(1<<20)*10)/10, 'f', -1, 64) + " MiB"
	}
	return strconv.Itoa(n) + " bytes"
}

func firstNonSpace(b []byte) byte {
	for _, c := range b {
		switch c {
		case ' ', '\t', '\r', '\n':
			continue
		}
		return c
	}
	return 0
}

type decoder struct {
	file string
	errs Errors
	out  []*Resource
}

func (d *decoder) errorf(doc int, field, format string, args ...any) {
	e := FieldError(field, format, args...)
	e.File, e.Doc = d.file, doc
	d.errs = append(d.errs, e)
}

func (d *decoder) decodeJSONStream(data []byte) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	for doc := 1; ; doc++ {
		var v any
		err := dec.Decode(&v)
		if err == io.EOF {
			return
		}
		if err != nil {
			off := dec.InputOffset()
			var se *json.SyntaxError
			if errors.As(err, &se) && se.Offset > 0 {
				off = se.Offset - 1 // the offending byte, not the one after it
			}
			line, col := lineCol(data, off)
			d.errorf(doc, "", "invalid JSON at line %d, column %d: %s", line, col, strings.TrimPrefix(err.Error(), "json: "))
			return
		}
		d.decodeDoc(doc, "", v)
	}
}

func lineCol(data []byte, off int64) (line, col int) {
	if off > int64(len(data)) {
		off = int64(len(data))
	}
	line = 1 + bytes.Count(data[:off], []byte("\n"))
	col = int(off) - bytes.LastIndexByte(data[:off], '\n')
	return line, col
}

// yamlChunk is one YAML document: its text and the file line it starts on.
type yamlChunk struct {
	text      []byte
	firstLine int
}

// splitYAML splits data at "---" lines. A leading chunk holding only blank
// lines and comments (before the first "---") is not a document.
func splitYAML(data []byte) []yamlChunk {
	var chunks []yamlChunk
	cur := yamlChunk{firstLine: 1}
	lineNo := 0
	for len(data) > 0 {
		lineNo++
		var line []byte
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i+1], data[i+1:]
		} else {
			line, data = data, nil
		}
		trimmed := bytes.TrimRight(line, "\r\n")
		if bytes.HasPrefix(trimmed, []byte("---")) && (len(trimmed) == 3 || trimmed[3] == ' ' || trimmed[3] == '\t') {
			chunks = append(chunks, cur)
			cur = yamlChunk{firstLine: lineNo + 1}
			rest := bytes.TrimSpace(trimmed[3:])
			if len(rest) > 0 && rest[0] != '#' {
				// "--- value": the document starts on the separator line.
				cur.firstLine = lineNo
				cur.text = append(cur.text, rest...)
				cur.text = append(cur.text, '\n')
			}
			continue
		}
		if bytes.Equal(trimmed, []byte("...")) {
			cur.text = append(cur.text, '\n') // document end marker; keep line numbers
			continue
		}
		cur.text = append(cur.text, line...)
	}
	chunks = append(chunks, cur)
	if len(chunks) > 1 && blankYAML(chunks[0].text) {
		chunks = chunks[1:]
	}
	return chunks
}

func blankYAML(b []byte) bool {
	for _, line := range bytes.Split(b, []byte("\n")) {
		line = bytes.TrimSpace(line)
		if len(line) > 0 && line[0] != '#' {
			return false
		}
	}
	return true
}

var yamlLineRE = regexp.MustCompile(`line (\d+)`)

func (d *decoder) decodeYAMLStream(data []byte) {
	for i, c := range splitYAML(data) {
		doc := i + 1
		if blankYAML(c.text) {
			continue
		}
		j, err := yaml.YAMLToJSONStrict(c.text)
		if err != nil {
			msg := strings.TrimPrefix(err.Error(), "error converting YAML to JSON: ")
			msg = yamlLineRE.ReplaceAllStringFunc(msg, func(s string) string {
				n, _ := strconv.Atoi(strings.TrimPrefix(s, "line "))
				return "line " + strconv.Itoa(n+c.firstLine-1)
			})
			msg = strings.Join(strings.Fields(msg), " ")
			if !strings.Contains(msg, "line ") {
				msg = fmt.Sprintf("%s (document starts at line %d)", msg, c.firstLine)
			}
			d.errorf(doc, "", "invalid YAML: %s", msg)
			continue
		}
		dec := json.NewDecoder(bytes.NewReader(j))
		dec.UseNumber()
		var v any
		if err := dec.Decode(&v); err != nil {
			d.errorf(doc, "", "invalid YAML: %v", err)
			continue
		}
		d.decodeDoc(doc, "", v)
	}
}

// decodeDoc decodes one document, or one item of a list document at path.
func (d *decoder) decodeDoc(doc int, path string, v any) {
	switch v := v.(type) {
	case nil:
		return // empty document
	case []any:
		for i, item := range v {
			d.decodeDoc(doc, joinPath(path, "["+strconv.Itoa(i)+"]"), item)
		}
		return
	case map[string]any:
		if v["kind"] == "List" {
			d.decodeList(doc, path, v)
			return
		}
		src := &Source{File: d.file, Doc: doc, Path: path}
		r, errs := decodeResource(src, v)
		d.errs = append(d.errs, errs...)
		if r != nil {
			d.out = append(d.out, r)
		}
		return
	}
	d.errorf(doc, path, "must be a resource {apiVersion, kind, metadata, spec}, got %s", describe(v))
}

func (d *decoder) decodeList(doc int, path string, m map[string]any) {
	for _, k := range sortedKeys(m) {
		switch k {
		case "kind", "metadata":
		case "apiVersion":
			if av, _ := m[k].(string); av != APIVersion && av != "v1" {
				d.errorf(doc, joinPath(path, "apiVersion"), "must be %s, got %s", APIVersion, describe(m[k]))
			}
		case "items":
			items, ok := m[k].([]any)
			if !ok && m[k] != nil {
				d.errorf(doc, joinPath(path, "items"), "must be a list, got %s", describe(m[k]))
			}
			for i, item := range items {
				d.decodeDoc(doc, joinPath(path, "items["+strconv.Itoa(i)+"]"), item)
			}
		default:
			d.errorf(doc, joinPath(path, k), "unknown field (a List has apiVersion, kind, items)")
		}
	}
}

// decodeResource decodes one resource object; the returned resource is nil
// when there are errors.
func decodeResource(src *Source, m map[string]any) (*Resource, Errors) {
	var errs Errors
	fail := func(field, format string, args ...any) {
		errs = append(errs, src.errAt(field, format, args...))
	}
	r := &Resource{Source: src}

	switch av := m["apiVersion"].(type) {
	case string:
		switch {
		case av == APIVersion:
			r.APIVersion = av
		case strings.HasPrefix(av, "appmesh.k8s.aws/"):
			fail("apiVersion", "must be %s, got %q: App Mesh controller manifests are not read as is; set apiVersion: %s and keep the spec fields", APIVersion, av, APIVersion)
		default:
			fail("apiVersion", "must be %s, got %q", APIVersion, av)
		}
	case nil:
		fail("apiVersion", "required (apiVersion: %s)", APIVersion)
	default:
		fail("apiVersion", "must be a string, got %s", describe(av))
	}

	switch k := m["kind"].(type) {
	case string:
		if Kind(k).Valid() {
			r.Kind = Kind(k)
		} else if pk, err := ParseKind(k); err == nil {
			fail("kind", "unknown kind %q; did you mean %q?", k, pk)
		} else {
			fail("kind", "unknown kind %q; want one of %s", k, kindList())
		}
	case nil:
		fail("kind", "required; want one of %s", kindList())
	default:
		fail("kind", "must be a string, got %s", describe(k))
	}

	for _, k := range sortedKeys(m) {
		switch k {
		case "apiVersion", "kind", "metadata", "spec", "status":
		default:
			fail(k, "unknown field (a resource has apiVersion, kind, metadata, spec, status)")
		}
	}

	add := func(es []*Error) {
		for _, e := range es {
			errs = append(errs, src.errAt(e.Field, "%s", e.Message))
		}
	}
	if md, ok := m["metadata"]; !ok || md == nil {
		fail("metadata", "required (metadata: {name: ..., mesh: ...})")
	} else {
		add(decodeValue("metadata", md, reflect.ValueOf(&r.Metadata).Elem()))
	}

	if r.Kind != "" {
		spec := NewSpec(r.Kind)
		if s, ok := m["spec"]; !ok || s == nil {
			if r.Kind != KindMesh {
				fail("spec", "required")
			}
		} else {
			add(decodeValue("spec", s, reflect.ValueOf(spec).Elem()))
		}
		r.Spec = spec
		if st, ok := m["status"]; ok && st != nil {
			if t := kindInfos[r.Kind].status; t != nil {
				p := reflect.New(t)
				add(decodeValue("status", st, p.Elem()))
				r.Status = p.Interface()
			} else {
				r.Status = st
			}
		}
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return r, nil
}

// UnmarshalJSON decodes a resource strictly, as Decode decodes one document:
// the spec (and a Rollout's status) get their kind's Go type.
func (r *Resource) UnmarshalJSON(b []byte) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return Errorf(EInvalid, "invalid JSON: %v", err)
	}
	m, ok := v.(map[string]any)
	if !ok {
		return Errorf(EInvalid, "must be a resource {apiVersion, kind, metadata, spec}, got %s", describe(v))
	}
	res, errs := decodeResource(nil, m)
	if len(errs) > 0 {
		return errs
	}
	*r = *res
	return nil
}

// EncodeJSON encodes rs as indented JSON: one resource as an object, any
// other number as {apiVersion, kind: List, items}. Decode reads either back.
func EncodeJSON(rs []*Resource) ([]byte, error) {
	var v any = rs
	if len(rs) == 1 {
		v = rs[0]
	} else {
		if rs == nil {
			rs = []*Resource{}
		}
		v = struct {
			APIVersion string      `json:"apiVersion"`
			Kind       string      `json:"kind"`
			Items      []*Resource `json:"items"`
		}{APIVersion, "List", rs}
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode resources as JSON: %w", err)
	}
	return append(b, '\n'), nil
}

// EncodeYAML encodes rs as YAML documents separated by "---". Decode reads
// the output back to equal resources.
func EncodeYAML(rs []*Resource) ([]byte, error) {
	var buf bytes.Buffer
	for i, r := range rs {
		j, err := json.Marshal(r)
		if err != nil {
			return nil, fmt.Errorf("encode %s as YAML: %w", r.Ref(), err)
		}
		y, err := yaml.JSONToYAML(j)
		if err != nil {
			return nil, fmt.Errorf("encode %s as YAML: %w", r.Ref(), err)
		}
		if i > 0 {
			buf.WriteString("---\n")
		}
		buf.Write(y)
	}
	return buf.Bytes(), nil
}

// ---- strict reflective decoding of JSON values ----

type structFields struct {
	byName map[string]int // JSON name -> field index
	names  []string       // JSON names in declaration order
}

var fieldCache sync.Map // reflect.Type -> *structFields

func fieldsOf(t reflect.Type) *structFields {
	if f, ok := fieldCache.Load(t); ok {
		return f.(*structFields)
	}
	sf := &structFields{byName: make(map[string]int)}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		sf.byName[name] = i
		sf.names = append(sf.names, name)
	}
	fieldCache.Store(t, sf)
	return sf
}

// decodeValue stores the JSON value in (decoded with UseNumber) into out,
// reporting every unknown field and wrong type with its path.
func decodeValue(path string, in any, out reflect.Value) []*Error {
	var errs []*Error
	decodeInto(path, in, out, &errs)
	return errs
}

func decodeInto(path string, in any, out reflect.Value, errs *[]*Error) {
	fail := func(format string, args ...any) {
		*errs = append(*errs, FieldError(path, format, args...))
	}
	if in == nil {
		out.Set(reflect.Zero(out.Type()))
		return
	}
	switch out.Kind() {
	case reflect.Pointer:
		p := reflect.New(out.Type().Elem())
		decodeInto(path, in, p.Elem(), errs)
		out.Set(p)
	case reflect.Interface:
		out.Set(reflect.ValueOf(in))
	case reflect.Struct:
		m, ok := in.(map[string]any)
		if !ok {
			fail("must be an object, got %s", describe(in))
			return
		}
		sf := fieldsOf(out.Type())
		for _, k := range sortedKeys(m) {
			i, ok := sf.byName[k]
			if !ok {
				fail := FieldError(joinPath(path, k), "unknown field%s", suggest(k, sf.names))
				*errs = append(*errs, fail)
				continue
			}
			decodeInto(joinPath(path, k), m[k], out.Field(i), errs)
		}
	case reflect.Slice:
		l, ok := in.([]any)
		if !ok {
			fail("must be a list, got %s", describe(in))
			return
		}
		if len(l) == 0 {
			out.Set(reflect.Zero(out.Type())) // [] and null and omitted decode alike
			return
		}
		s := reflect.MakeSlice(out.Type(), len(l), len(l))
		for i, v := range l {
			decodeInto(path+"["+strconv.Itoa(i)+"]", v, s.Index(i), errs)
		}
		out.Set(s)
	case reflect.Map:
		m, ok := in.(map[string]any)
		if !ok {
			fail("must be an object (a map), got %s", describe(in))
			return
		}
		if len(m) == 0 {
			out.Set(reflect.Zero(out.Type())) // {} and null and omitted decode alike
			return
		}
		mv := reflect.MakeMapWithSize(out.Type(), len(m))
		for _, k := range sortedKeys(m) {
			ev := reflect.New(out.Type().Elem()).Elem()
			decodeInto(mapPath(path, k), m[k], ev, errs)
			mv.SetMapIndex(reflect.ValueOf(k).Convert(out.Type().Key()), ev)
		}
		out.Set(mv)
	case reflect.String:
		s, ok := in.(string)
		if !ok {
			hint := ""
			switch in.(type) {
			case json.Number:
				hint = fmt.Sprintf(" (quote it: \"%v\")", in)
			case bool:
				hint = " (quote it: YAML reads unquoted yes/no/y/n/on/off/true/false as booleans)"
			}
			fail("must be a string, got %s%s", describe(in), hint)
			return
		}
		out.SetString(s)
	case reflect.Bool:
		b, ok := in.(bool)
		if !ok {
			fail("must be true or false, got %s", describe(in))
			return
		}
		out.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, ok := in.(json.Number)
		if !ok {
			fail("must be an integer, got %s", describe(in))
			return
		}
		i, err := strconv.ParseInt(string(n), 10, 64)
		if err != nil {
			f, ferr := strconv.ParseFloat(string(n), 64)
			if ferr != nil || f != float64(int64(f)) || f > 1<<62 || f < -(1<<62) {
				fail("must be an integer, got %s", n)
				return
			}
			i = int64(f)
		}
		if out.OverflowInt(i) {
			fail("integer %d is out of range", i)
			return
		}
		out.SetInt(i)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, ok := in.(json.Number)
		if !ok {
			fail("must be a non-negative integer, got %s", describe(in))
			return
		}
		u, err := strconv.ParseUint(string(n), 10, 64)
		if err != nil {
			fail("must be a non-negative integer, got %s", n)
			return
		}
		if out.OverflowUint(u) {
			fail("integer %d is out of range", u)
			return
		}
		out.SetUint(u)
	case reflect.Float32, reflect.Float64:
		n, ok := in.(json.Number)
		if !ok {
			fail("must be a number, got %s", describe(in))
			return
		}
		f, err := strconv.ParseFloat(string(n), 64)
		if err != nil {
			fail("must be a number, got %s", n)
			return
		}
		out.SetFloat(f)
	default:
		fail("cannot decode into %s", out.Type())
	}
}

func mapPath(path, key string) string {
	if key != "" && !strings.ContainsAny(key, ".[]\"' ") {
		return path + "." + key
	}
	return path + "[" + strconv.Quote(key) + "]"
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// describe names a JSON value's type and shows it briefly.
func describe(v any) string {
	switch v := v.(type) {
	case nil:
		return "null"
	case string:
		if len(v) > 40 {
			v = v[:40] + "..."
		}
		return "string " + strconv.Quote(v)
	case json.Number:
		return "number " + string(v)
	case float64:
		return "number " + strconv.FormatFloat(v, 'g', -1, 64)
	case bool:
		return "boolean " + strconv.FormatBool(v)
	case map[string]any:
		return "an object"
	case []any:
		return "a list"
	}
	return fmt.Sprintf("%T", v)
}

// suggest returns "; did you mean X?" for the known name closest to k, or
// the known names when none is close.
func suggest(k string, known []string) string {
	best, bestD := "", 3
	for _, n := range known {
		if strings.EqualFold(n, k) {
			return fmt.Sprintf("; did you mean %q?", n)
		}
		if d := editDistance(strings.ToLower(k), strings.ToLower(n)); d < bestD {
			best, bestD = n, d
		}
	}
	if best != "" {
		return fmt.Sprintf("; did you mean %q?", best)
	}
	return " (known: " + strings.Join(known, ", ") + ")"
}

func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 64
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// Clone returns a deep copy of r (Source is shared: it is never mutated).
func (r *Resource) Clone() *Resource {
	if r == nil {
		return nil
	}
	c := *r
	c.Metadata.Labels = cloneValue(reflect.ValueOf(r.Metadata.Labels)).Interface().(map[string]string)
	if r.Spec != nil {
		c.Spec = cloneValue(reflect.ValueOf(r.Spec)).Interface()
	}
	if r.Status != nil {
		c.Status = cloneValue(reflect.ValueOf(r.Status)).Interface()
	}
	return &c
}

// DeepCopy is Clone.
func (r *Resource) DeepCopy() *Resource { return r.Clone() }

func cloneValue(v reflect.Value) reflect.Value {
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			return v
		}
		p := reflect.New(v.Type().Elem())
		p.Elem().Set(cloneValue(v.Elem()))
		return p
	case reflect.Interface:
		if v.IsNil() {
			return v
		}
		c := reflect.New(v.Type()).Elem()
		c.Set(cloneValue(v.Elem()))
		return c
	case reflect.Struct:
		c := reflect.New(v.Type()).Elem()
		c.Set(v)
		for i := 0; i < v.NumField(); i++ {
			if c.Field(i).CanSet() {
				c.Field(i).Set(cloneValue(v.Field(i)))
			}
		}
		return c
	case reflect.Slice:
		if v.IsNil() {
			return v
		}
		c := reflect.MakeSlice(v.Type(), v.Len(), v.Len())
		for i := 0; i < v.Len(); i++ {
			c.Index(i).Set(cloneValue(v.Index(i)))
		}
		return c
	case reflect.Map:
		if v.IsNil() {
			return v
		}
		c := reflect.MakeMapWithSize(v.Type(), v.Len())
		it := v.MapRange()
		for it.Next() {
			c.SetMapIndex(it.Key(), cloneValue(it.Value()))
		}
		return c
	}
	return v
}
