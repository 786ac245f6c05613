package otelaudit

import (
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"regexp/syntax"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"go.opentelemetry.io/otel/attribute"
)

// Violation is one broken rule: the field it concerns, the rule's name and words for people.
type Violation struct {
	Field   string
	Rule    string
	Message string
}

func (v Violation) String() string { return v.Field + ": " + v.Message }

// Record is an audit record as the validator reads it: what a log record and its
// resource carry. Times are Unix nanoseconds.
type Record struct {
	Attributes           []attribute.KeyValue
	Resource             []attribute.KeyValue
	Body                 attribute.Value
	TimeUnixNano         int64
	ObservedTimeUnixNano int64
}

// The schema as the validator reads it, from schemaJSON (generated from the schema file).
type fieldSpec struct {
	Attribute    string   `json:"attribute"`
	Param        string   `json:"param"`
	GoName       string   `json:"goName"`
	Type         string   `json:"type"`
	Required     string   `json:"required"`
	Oversize     string   `json:"oversize"`
	MaxBytes     int      `json:"maxBytes"`
	Enum         []string `json:"enum"`
	Pattern      string   `json:"pattern"`
	Array        bool     `json:"array"`
	Aliases      []string `json:"aliases"`
	AliasDefault []string `json:"aliasDefault"`

	enum  map[string]bool
	regex *regexp.Regexp
}

type schemaSpec struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	Marker  string `json:"marker"`
	Limits  struct {
		MaxAttributes         int    `json:"maxAttributes"`
		MaxResourceAttributes int    `json:"maxResourceAttributes"`
		MaxAttributeKeyBytes  int    `json:"maxAttributeKeyBytes"`
		MaxValueDepth         int    `json:"maxValueDepth"`
		MaxArrayItems         int    `json:"maxArrayItems"`
		MaxFutureS            int64  `json:"maxFutureS"`
		MinTimeUnixNano       string `json:"minTimeUnixNano"`
		MinDate               string `json:"minDate"`
	} `json:"limits"`
	Fields         []*fieldSpec `json:"fields"`
	ResourceFields []struct {
		Attribute string `json:"attribute"`
		Required  string `json:"required"`
		MaxBytes  int    `json:"maxBytes"`
	} `json:"resourceFields"`
	ResourceRequiredCategories []string          `json:"resourceRequiredCategories"`
	ResourceCategoryAttributes []string          `json:"resourceCategoryAttributes"`
	CategoryAttribute          string            `json:"categoryAttribute"`
	OutcomeAttribute           string            `json:"outcomeAttribute"`
	ActionAttribute            string            `json:"actionAttribute"`
	EventIDAttribute           string            `json:"eventIdAttribute"`
	ActorIDAttribute           string            `json:"actorIdAttribute"`
	Severity                   map[string]int    `json:"severity"`
	Messages                   map[string]string `json:"messages"`
	ValueTypeNames             map[string]string `json:"valueTypeNames"`
	ControlPattern             string            `json:"controlPattern"`
	KeyBadPattern              string            `json:"keyBadPattern"`
	BlankChars                 []rune            `json:"blankChars"`
	NonPrintable               [][2]rune         `json:"nonPrintable"`

	byAttribute   map[string]*fieldSpec
	resourceKnown map[string]bool
	resourceCats  map[string]bool
	blank         map[rune]bool
	control       func(string) bool
	keyBad        *regexp.Regexp
	minTime       int64
}

var schema = loadSchema()

func loadSchema() *schemaSpec {
	s := &schemaSpec{}
	if err := json.Unmarshal([]byte(schemaJSON), s); err != nil {
		panic("otelaudit: the generated schema does not parse: " + err.Error())
	}
	s.byAttribute = map[string]*fieldSpec{}
	for _, f := range s.Fields {
		f.enum = map[string]bool{}
		for _, v := range f.Enum {
			f.enum[v] = true
		}
		if f.Pattern != "" {
			f.regex = regexp.MustCompile(`^(?:` + f.Pattern + `)$`)
		}
		s.byAttribute[f.Attribute] = f
	}
	s.resourceKnown = map[string]bool{}
	for _, rf := range s.ResourceFields {
		s.resourceKnown[rf.Attribute] = true
	}
	s.resourceCats = map[string]bool{}
	for _, c := range s.ResourceRequiredCategories {
		s.resourceCats[c] = true
	}
	s.blank = map[rune]bool{}
	for _, c := range s.BlankChars {
		s.blank[c] = true
	}
	s.control = searcher(s.ControlPattern)
	s.keyBad = regexp.MustCompile(s.KeyBadPattern)
	s.minTime, _ = strconv.ParseInt(s.Limits.MinTimeUnixNano, 10, 64)
	return s
}

// searcher reports whether pattern matches anywhere in a string. A pattern that is one
// class of ASCII characters (the control characters) is searched byte by byte through a
// table, several times faster than the regexp package; any other pattern uses regexp.
// Bytes of multi-byte UTF-8 sequences are never ASCII, so the byte scan finds exactly
// what the regexp would.
func searcher(pattern string) func(string) bool {
	re := regexp.MustCompile(pattern)
	parsed, err := syntax.Parse(pattern, syntax.Perl)
	if err != nil {
		return re.MatchString
	}
	parsed = parsed.Simplify()
	if parsed.Op != syntax.OpCharClass {
		return re.MatchString
	}
	var table [utf8.RuneSelf]bool
	for i := 0; i+1 < len(parsed.Rune); i += 2 {
		lo, hi := parsed.Rune[i], parsed.Rune[i+1]
		if hi >= utf8.RuneSelf {
			return re.MatchString
		}
		for r := lo; r <= hi; r++ {
			table[r] = true
		}
	}
	return func(text string) bool {
		for i := 0; i < len(text); i++ {
			if b := text[i]; b < utf8.RuneSelf && table[b] {
				return true
			}
		}
		return false
	}
}

var placeholder = regexp.MustCompile(`\{(\w+)\}`)

func message(name string, values ...any) string {
	template := schema.Messages[name]
	pairs := map[string]string{}
	for i := 0; i+1 < len(values); i += 2 {
		pairs[values[i].(string)] = fmt.Sprint(values[i+1])
	}
	return placeholder.ReplaceAllStringFunc(template, func(m string) string {
		return pairs[m[1:len(m)-1]]
	})
}

// isArray says whether v is an array (OTLP's ArrayValue), in any of its Go forms.
func isArray(v attribute.Value) bool {
	switch v.Type() {
	case attribute.SLICE, attribute.BOOLSLICE, attribute.INT64SLICE, attribute.FLOAT64SLICE,
		attribute.STRINGSLICE:
		return true
	}
	return false
}

// items are the elements of an array value.
func items(v attribute.Value) []attribute.Value {
	switch v.Type() {
	case attribute.BOOLSLICE:
		return convert(v.AsBoolSlice(), attribute.BoolValue)
	case attribute.INT64SLICE:
		return convert(v.AsInt64Slice(), attribute.Int64Value)
	case attribute.FLOAT64SLICE:
		return convert(v.AsFloat64Slice(), attribute.Float64Value)
	case attribute.STRINGSLICE:
		return convert(v.AsStringSlice(), attribute.StringValue)
	}
	return v.AsSlice()
}

func convert[T any](in []T, f func(T) attribute.Value) []attribute.Value {
	out := make([]attribute.Value, len(in))
	for i, x := range in {
		out[i] = f(x)
	}
	return out
}

func kindName(v attribute.Value) string {
	if isArray(v) {
		return schema.ValueTypeNames["array"]
	}
	switch v.Type() {
	case attribute.STRING:
		return schema.ValueTypeNames["string"]
	case attribute.INT64:
		return schema.ValueTypeNames["int"]
	case attribute.FLOAT64:
		return schema.ValueTypeNames["double"]
	case attribute.BOOL:
		return schema.ValueTypeNames["bool"]
	case attribute.BYTESLICE:
		return schema.ValueTypeNames["bytes"]
	case attribute.SLICE:
		return schema.ValueTypeNames["array"]
	case attribute.MAP:
		return schema.ValueTypeNames["kvlist"]
	default:
		return schema.ValueTypeNames["empty"]
	}
}

func isBlank(s string) bool {
	for _, r := range s {
		if !schema.blank[r] {
			return false
		}
	}
	return true
}

func printable(r rune) bool {
	ranges := schema.NonPrintable
	i := sort.Search(len(ranges), func(i int) bool { return ranges[i][1] >= r })
	return !(i < len(ranges) && ranges[i][0] <= r)
}

// pyRepr is Python's repr() of a string, which the messages quote values with.
func pyRepr(s string) string {
	quote := '\''
	if strings.ContainsRune(s, '\'') && !strings.ContainsRune(s, '"') {
		quote = '"'
	}
	var b strings.Builder
	b.WriteRune(quote)
	for _, r := range s {
		switch {
		case r == quote || r == '\\':
			b.WriteRune('\\')
			b.WriteRune(r)
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\x%02x`, r)
		case r < 0x7f || printable(r):
			b.WriteRune(r)
		case r <= 0xff:
			fmt.Fprintf(&b, `\x%02x`, r)
		case r <= 0xffff:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			fmt.Fprintf(&b, `\U%08x`, r)
		}
	}
	b.WriteRune(quote)
	return b.String()
}

// head is the first n code points of s (Python's s[:n]).
func head(s string, n int) string {
	i := 0
	for at := range s {
		if i == n {
			return s[:at]
		}
		i++
	}
	return s
}

func shown(s string) string {
	cut := head(s, 64)
	if len(cut) < len(s) {
		cut += "..."
	}
	return pyRepr(cut)
}

type checker struct{ out []Violation }

func (c *checker) add(field, rule, msg string) { c.out = append(c.out, Violation{field, rule, msg}) }

// str checks one string value of f given as attribute name; ok when it is usable.
func (c *checker) str(f *fieldSpec, v attribute.Value, name, required string) (string, bool) {
	if v.Type() != attribute.STRING {
		c.add(name, "type", message("not_string", "type", kindName(v)))
		return "", false
	}
	s := v.AsString()
	if s == "" || isBlank(s) {
		if required == "always" || required == "derived" {
			c.add(name, "required", message("empty"))
		}
		return "", false
	}
	if !utf8.ValidString(s) {
		c.add(name, "encoding", message("lone_surrogate"))
		return "", false
	}
	if len(f.Enum) > 0 {
		if !f.enum[s] {
			c.add(name, "enum", message("enum", "value", shown(s), "values", strings.Join(f.Enum, ", ")))
		}
		return s, true
	}
	if f.Oversize == "reject" {
		if len(s) > f.MaxBytes {
			c.add(name, "max_bytes", message("max_bytes", "size", len(s), "limit", f.MaxBytes))
			return "", false
		}
		if f.Type == "keyword" && schema.control(s) {
			c.add(name, "control_chars", message("control_chars"))
			return "", false
		}
	}
	if f.regex != nil && !f.regex.MatchString(s) {
		c.add(name, "pattern", message("pattern", "value", shown(s), "pattern", f.Pattern))
	}
	return s, true
}

func (c *checker) field(f *fieldSpec, v attribute.Value, name string) (string, bool) {
	if !f.Array {
		return c.str(f, v, name, f.Required)
	}
	if !isArray(v) {
		c.add(name, "type", message("not_string_array", "type", kindName(v)))
		return "", false
	}
	items := items(v)
	if limit := schema.Limits.MaxArrayItems; len(items) > limit {
		c.add(name, "too_many", message("too_many_items", "count", len(items), "limit", limit))
		return "", false
	}
	before := len(c.out)
	for _, item := range items {
		c.str(f, item, name, "always")
		if len(c.out) > before {
			return "", false
		}
	}
	return "", true
}

func (c *checker) key(key, where string) bool {
	if !utf8.ValidString(key) {
		c.add(where, "encoding", message("key_encoding"))
		return false
	}
	limit := schema.Limits.MaxAttributeKeyBytes
	if key == "" || len(key) > limit || schema.keyBad.MatchString(key) {
		cut := head(key, 64)
		at := where
		if key != "" {
			at = where + "." + cut
		}
		c.add(at, "attribute_key", message("key", "key", pyRepr(cut), "limit", limit))
		return false
	}
	return true
}

const maxViolations = 50

func (c *checker) value(v attribute.Value, where string, depth int) {
	limits := schema.Limits
	switch v.Type() {
	case attribute.STRING:
		if !utf8.ValidString(v.AsString()) {
			c.add(where, "encoding", message("lone_surrogate"))
		}
	case attribute.MAP, attribute.SLICE, attribute.BOOLSLICE, attribute.INT64SLICE,
		attribute.FLOAT64SLICE, attribute.STRINGSLICE:
		if depth > limits.MaxValueDepth {
			c.add(where, "max_depth", message("depth", "limit", limits.MaxValueDepth))
			return
		}
		if v.Type() == attribute.MAP {
			items := v.AsMap()
			if len(items) > limits.MaxArrayItems {
				c.add(where, "too_many", message("too_many_keys", "count", len(items), "limit", limits.MaxArrayItems))
				return
			}
			for _, kv := range items {
				if key := string(kv.Key); c.key(key, where) {
					c.value(kv.Value, where+"."+key, depth+1)
				}
				if len(c.out) > maxViolations {
					return
				}
			}
			return
		}
		items := items(v)
		if len(items) > limits.MaxArrayItems {
			c.add(where, "too_many", message("too_many_items", "count", len(items), "limit", limits.MaxArrayItems))
			return
		}
		for _, item := range items {
			c.value(item, where, depth+1)
			if len(c.out) > maxViolations {
				return
			}
		}
	}
}

// ordered holds attributes by key, the last value of a repeated key winning (as a map
// built from them would), in first-seen order. Up to smallOrdered keys a linear scan finds
// a key faster than a map, which is made only for more.
type ordered struct {
	entries []attribute.KeyValue
	index   map[string]int
}

const smallOrdered = 16

func newOrdered(kvs []attribute.KeyValue) ordered {
	o := ordered{entries: make([]attribute.KeyValue, 0, len(kvs))}
	if len(kvs) > smallOrdered {
		o.index = make(map[string]int, len(kvs))
	}
	for _, kv := range kvs {
		if i, seen := o.find(string(kv.Key)); seen {
			o.entries[i].Value = kv.Value
			continue
		}
		if o.index != nil {
			o.index[string(kv.Key)] = len(o.entries)
		}
		o.entries = append(o.entries, kv)
	}
	return o
}

func (o ordered) find(key string) (int, bool) {
	if o.index != nil {
		i, ok := o.index[key]
		return i, ok
	}
	for i := range o.entries {
		if string(o.entries[i].Key) == key {
			return i, true
		}
	}
	return -1, false
}

func (o ordered) get(key string) (attribute.Value, bool) {
	if i, ok := o.find(key); ok {
		return o.entries[i].Value, true
	}
	return attribute.Value{}, false
}

func (o ordered) has(key string) bool { _, ok := o.find(key); return ok }

// Validate returns every violation of r against the schema (empty when valid), with the
// same fields, rules and messages as the Python helper. nowUnixNano is the present time.
func Validate(r Record, nowUnixNano int64) []Violation {
	return validate(r, nowUnixNano, false)
}

// resourceValid says whether a resource passes every rule on its own. A valid resource
// adds no violation to any record, whatever else the record breaks, so a Logger whose
// resource is valid need not check it on every event.
func resourceValid(resource []attribute.KeyValue) bool {
	c := &checker{}
	c.resource(newOrdered(resource))
	return len(c.out) == 0
}

func validate(r Record, nowUnixNano int64, skipValidResource bool) []Violation {
	c := &checker{}
	attrs := newOrdered(r.Attributes)
	if !attrs.has(schema.Marker) {
		c.add(schema.Marker, "not_audit_event", message("not_audit_event", "marker", schema.Marker))
		return c.out
	}
	if limit := schema.Limits.MaxAttributes; len(attrs.entries) > limit {
		c.add("attributes", "too_many", message("attributes_too_many", "count", len(attrs.entries), "limit", limit))
		return c.out
	}
	// Only the category's value is needed later; the alias maps are made when an alias is
	// used (reading a nil map is fine).
	category, hasCategory := "", false
	var used, aliased map[string]bool
	for _, f := range schema.Fields {
		value, usable := "", false
		if v, ok := attrs.get(f.Attribute); ok {
			value, usable = c.field(f, v, f.Attribute)
		} else {
			alias := ""
			for _, a := range f.Aliases {
				if attrs.has(a) {
					alias = a
					break
				}
			}
			switch {
			case alias != "":
				if used == nil {
					used, aliased = map[string]bool{}, map[string]bool{}
				}
				used[alias] = true
				aliased[f.Attribute] = true
				v, _ := attrs.get(alias)
				value, usable = c.field(f, v, alias)
			case f.Required == "always" && !(len(f.AliasDefault) == 2 && aliased[f.AliasDefault[0]]):
				c.add(f.Attribute, "required", message("required"))
			}
		}
		if usable && f.Attribute == schema.CategoryAttribute {
			category, hasCategory = value, true
		}
	}
	if hasCategory && schema.resourceCats[category] {
		for _, name := range schema.ResourceCategoryAttributes {
			v, present := attrs.get(name)
			missing := !present || v.Type() == attribute.EMPTY ||
				(v.Type() == attribute.STRING && (v.AsString() == "" || isBlank(v.AsString())))
			if missing {
				c.add(name, "required", message("required_for_category", "category", category))
			}
		}
	}
	for _, kv := range attrs.entries {
		key := string(kv.Key)
		if schema.byAttribute[key] != nil || used[key] {
			continue
		}
		if c.key(key, "attributes") {
			c.value(kv.Value, key, 1)
		}
		if len(c.out) > maxViolations {
			break
		}
	}
	if !skipValidResource {
		c.resource(newOrdered(r.Resource))
	}
	if r.Body.Type() != attribute.EMPTY {
		c.value(r.Body, "body", 1)
	}
	c.time(r, nowUnixNano)
	return c.out
}

func (c *checker) resource(res ordered) {
	if limit := schema.Limits.MaxResourceAttributes; len(res.entries) > limit {
		c.add("resource", "too_many", message("resource_too_many", "count", len(res.entries), "limit", limit))
	}
	for _, rf := range schema.ResourceFields {
		where := "resource." + rf.Attribute
		v, ok := res.get(rf.Attribute)
		switch {
		case !ok || v.Type() == attribute.EMPTY:
			if rf.Required == "always" {
				c.add(where, "required", message("resource_required"))
			}
		case v.Type() != attribute.STRING:
			c.add(where, "type", message("not_string", "type", kindName(v)))
		case rf.Required == "always" && (v.AsString() == "" || isBlank(v.AsString())):
			c.add(where, "required", message("empty"))
		case len(v.AsString()) > rf.MaxBytes:
			c.add(where, "max_bytes", message("max_bytes", "size", len(v.AsString()), "limit", rf.MaxBytes))
		case schema.control(v.AsString()):
			c.add(where, "control_chars", message("control_chars"))
		case !utf8.ValidString(v.AsString()):
			c.add(where, "encoding", message("resource_encoding"))
		}
	}
	for _, kv := range res.entries {
		key := string(kv.Key)
		if schema.resourceKnown[key] {
			continue
		}
		if c.key(key, "resource") {
			c.value(kv.Value, "resource."+key, 1)
		}
	}
}

func (c *checker) time(r Record, now int64) {
	ts := r.TimeUnixNano
	if ts == 0 {
		ts = r.ObservedTimeUnixNano
	}
	if ts == 0 {
		c.add("time_unix_nano", "required", message("time_missing"))
		return
	}
	if ts < schema.minTime {
		c.add("time_unix_nano", "time", message("time_before", "min_date", schema.Limits.MinDate))
		return
	}
	// ts > now + maxFuture, without overflow: ts is past minTime (positive) here, so
	// ts - maxFuture cannot wrap; a maxFuture beyond int64 nanoseconds has no limit.
	maxFuture := schema.Limits.MaxFutureS
	if maxFuture <= math.MaxInt64/1_000_000_000 && ts-maxFuture*1_000_000_000 > now {
		c.add("time_unix_nano", "time", message("time_future", "seconds", maxFuture))
	}
}

// Summarize is a short message naming the first limit violations.
func Summarize(violations []Violation, limit int) string {
	parts := make([]string, 0, limit)
	for i, v := range violations {
		if i == limit {
			break
		}
		parts = append(parts, v.String())
	}
	text := strings.Join(parts, "; ")
	if more := len(violations) - limit; more > 0 {
		text += fmt.Sprintf(" (+%d more)", more)
	}
	return text
}
