package otelaudit

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"math"
	"math/big"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/attribute"
)

// The shared validator table (tests/testdata/validate_table.json): every case gives the
// same violations, word for word, as in Python and Node.js.

type tableCase struct {
	Name       string                     `json:"name"`
	Drop       []string                   `json:"drop"`
	Attributes map[string]json.RawMessage `json:"attributes"`
	Resource   map[string]json.RawMessage `json:"resource"`
	Time       *string                    `json:"time_unix_nano"`
	Observed   *string                    `json:"observed_time_unix_nano"`
	Body       json.RawMessage            `json:"body"`
	Bare       bool                       `json:"bare"`
	Violations [][3]string                `json:"violations"`
}

type table struct {
	Now  string `json:"now_unix_nano"`
	Base struct {
		Attributes map[string]json.RawMessage `json:"attributes"`
		Resource   map[string]json.RawMessage `json:"resource"`
		Time       string                     `json:"time_unix_nano"`
		Observed   string                     `json:"observed_time_unix_nano"`
		Body       json.RawMessage            `json:"body"`
	} `json:"base"`
	Cases []tableCase `json:"cases"`
}

// errUnrepresentable marks a table value Go (and OTLP) cannot hold: an integer wider
// than 64 bits.
type errUnrepresentable string

func decode(raw json.RawMessage) (attribute.Value, error) {
	var any_ any
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.UseNumber()
	if err := dec.Decode(&any_); err != nil {
		return attribute.Value{}, err
	}
	return decodeAny(any_)
}

func decodeAny(v any) (attribute.Value, error) {
	switch x := v.(type) {
	case nil:
		return attribute.Value{}, nil
	case bool:
		return attribute.BoolValue(x), nil
	case string:
		return attribute.StringValue(x), nil
	case json.Number:
		n, err := x.Int64()
		if err != nil {
			return attribute.Value{}, err
		}
		return attribute.Int64Value(n), nil
	case []any:
		out := make([]attribute.Value, 0, len(x))
		for _, item := range x {
			d, err := decodeAny(item)
			if err != nil {
				return attribute.Value{}, err
			}
			out = append(out, d)
		}
		return attribute.SliceValue(out...), nil
	case map[string]any:
		for kind, inner := range x {
			switch kind {
			case "$int":
				n, ok := new(big.Int).SetString(inner.(string), 10)
				if !ok || !n.IsInt64() {
					return attribute.Value{}, errUnrepresentable(inner.(string))
				}
				return attribute.Int64Value(n.Int64()), nil
			case "$float":
				s := inner.(string)
				f := map[string]float64{"nan": math.NaN(), "inf": math.Inf(1), "-inf": math.Inf(-1)}[s]
				if _, special := map[string]bool{"nan": true, "inf": true, "-inf": true}[s]; !special {
					f, _ = strconv.ParseFloat(s, 64)
				}
				return attribute.Float64Value(f), nil
			case "$bytes":
				b, err := base64.StdEncoding.DecodeString(inner.(string))
				return attribute.ByteSliceValue(b), err
			case "$repeat":
				pair := inner.([]any)
				n, _ := pair[1].(json.Number).Int64()
				return attribute.StringValue(strings.Repeat(pair[0].(string), int(n))), nil
			case "$wtf8":
				b, err := hex.DecodeString(inner.(string))
				return attribute.StringValue(string(b)), err
			case "$map":
				m := inner.(map[string]any)
				keys := make([]string, 0, len(m))
				for k := range m {
					keys = append(keys, k)
				}
				sort.Strings(keys) // json objects lose order in Go maps; the rules do not need it
				kvs := make([]attribute.KeyValue, 0, len(m))
				for _, k := range keys {
					d, err := decodeAny(m[k])
					if err != nil {
						return attribute.Value{}, err
					}
					kvs = append(kvs, attribute.KeyValue{Key: attribute.Key(k), Value: d})
				}
				return attribute.MapValue(kvs...), nil
			}
		}
	}
	return attribute.Value{}, errUnrepresentable("value")
}

func (e errUnrepresentable) Error() string { return "not representable in Go: " + string(e) }

func decodeMap(m map[string]json.RawMessage, order []string) ([]attribute.KeyValue, error) {
	out := make([]attribute.KeyValue, 0, len(m))
	for _, k := range order {
		v, err := decode(m[k])
		if err != nil {
			return nil, err
		}
		out = append(out, attribute.KeyValue{Key: attribute.Key(k), Value: v})
	}
	return out, nil
}

// keysInOrder returns the keys of the JSON object raw in document order.
func keysInOrder(t *testing.T, raw json.RawMessage) []string {
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	var keys []string
	depth := 0
	for {
		tok, err := dec.Token()
		if err != nil {
			break
		}
		switch tok {
		case json.Delim('{'), json.Delim('['):
			depth++
		case json.Delim('}'), json.Delim(']'):
			depth--
		default:
			if s, ok := tok.(string); ok && depth == 1 {
				keys = append(keys, s)
				// skip the value
				var skip json.RawMessage
				if err := dec.Decode(&skip); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	return keys
}

func loadTable(t *testing.T) (int64, []tableCase, table, map[string][]string) {
	path := filepath.Join("..", "..", "tests", "testdata", "validate_table.json")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var tab table
	if err := json.Unmarshal(data, &tab); err != nil {
		t.Fatal(err)
	}
	// Attribute order matters where the rules stop early: keep the file's order.
	var rawCases struct {
		Base struct {
			Attributes json.RawMessage `json:"attributes"`
			Resource   json.RawMessage `json:"resource"`
		} `json:"base"`
		Cases []struct {
			Name       string          `json:"name"`
			Attributes json.RawMessage `json:"attributes"`
			Resource   json.RawMessage `json:"resource"`
		} `json:"cases"`
	}
	if err := json.Unmarshal(data, &rawCases); err != nil {
		t.Fatal(err)
	}
	order := map[string][]string{
		"base.attributes": keysInOrder(t, rawCases.Base.Attributes),
		"base.resource":   keysInOrder(t, rawCases.Base.Resource),
	}
	for _, c := range rawCases.Cases {
		order[c.Name+".attributes"] = keysInOrder(t, c.Attributes)
		order[c.Name+".resource"] = keysInOrder(t, c.Resource)
	}
	now, _ := strconv.ParseInt(tab.Now, 10, 64)
	return now, tab.Cases, tab, order
}

func buildRecord(tab table, c tableCase, order map[string][]string) (Record, error) {
	var r Record
	attrs := map[string]json.RawMessage{}
	keys := []string{}
	if !c.Bare {
		for _, k := range order["base.attributes"] {
			attrs[k] = tab.Base.Attributes[k]
			keys = append(keys, k)
		}
	}
	for _, k := range c.Drop {
		delete(attrs, k)
	}
	for _, k := range order[c.Name+".attributes"] {
		if _, seen := attrs[k]; !seen {
			keys = append(keys, k)
		}
		attrs[k] = c.Attributes[k]
	}
	live := keys[:0]
	for _, k := range keys {
		if _, ok := attrs[k]; ok {
			live = append(live, k)
		}
	}
	var err error
	if r.Attributes, err = decodeMap(attrs, live); err != nil {
		return r, err
	}
	switch {
	case c.Resource != nil:
		r.Resource, err = decodeMap(c.Resource, order[c.Name+".resource"])
	case !c.Bare:
		r.Resource, err = decodeMap(tab.Base.Resource, order["base.resource"])
	}
	if err != nil {
		return r, err
	}
	parse := func(s *string, base string) int64 {
		if s != nil {
			n, _ := strconv.ParseInt(*s, 10, 64)
			return n
		}
		if c.Bare {
			return 0
		}
		n, _ := strconv.ParseInt(base, 10, 64)
		return n
	}
	r.TimeUnixNano = parse(c.Time, tab.Base.Time)
	r.ObservedTimeUnixNano = parse(c.Observed, tab.Base.Observed)
	body := c.Body
	if body == nil && !c.Bare {
		body = tab.Base.Body
	}
	if body != nil {
		r.Body, err = decode(body)
	}
	return r, err
}

func TestSharedTable(t *testing.T) {
	now, cases, tab, order := loadTable(t)
	ran := 0
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			r, err := buildRecord(tab, c, order)
			if _, ok := err.(errUnrepresentable); ok {
				t.Logf("not run in Go: %v", err)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			ran++
			got := [][3]string{}
			for _, v := range Validate(r, now) {
				got = append(got, [3]string{v.Field, v.Rule, v.Message})
			}
			less := func(s [][3]string) func(i, j int) bool {
				return func(i, j int) bool { return strings.Join(s[i][:], "\x00") < strings.Join(s[j][:], "\x00") }
			}
			want := append([][3]string{}, c.Violations...)
			sort.Slice(got, less(got))
			sort.Slice(want, less(want))
			if len(got) != len(want) {
				t.Fatalf("got %q\nwant %q", got, want)
			}
			for i := range got {
				if got[i] != want[i] {
					t.Fatalf("got %q\nwant %q", got, want)
				}
			}
		})
	}
	if ran < len(cases)-2 {
		t.Fatalf("only %d of %d cases ran", ran, len(cases))
	}
}
