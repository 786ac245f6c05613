// Command notecheck verifies an otel-audit checkpoint note with Go's
// golang.org/x/mod/sumdb/note, and its witness cosignatures with an
// independent implementation of the C2SP tlog-cosignature/v1 rules.
//
// Usage: notecheck -vkey LOG_VKEY [-witness WITNESS_VKEY]... NOTE_FILE
//
// It prints one JSON object and exits 0 when the log signature verifies and
// every -witness key has a valid cosignature, 1 otherwise.
package main

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"

	"golang.org/x/mod/sumdb/note"
)

type witnessKey struct {
	name string
	id   uint32
	pub  ed25519.PublicKey
}

type cosigned struct {
	Name      string `json:"name"`
	Timestamp uint64 `json:"timestamp"`
}

type result struct {
	OK       bool       `json:"ok"`
	Error    string     `json:"error,omitempty"`
	Text     string     `json:"text,omitempty"`
	Signers  []string   `json:"signers,omitempty"`
	Cosigned []cosigned `json:"cosigned,omitempty"`
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// parseWitnessKey decodes a vkey of signature type 0x04 and checks its key ID
// as SHA-256(name || "\n" || 0x04 || public key)[:4].
func parseWitnessKey(vkey string) (witnessKey, error) {
	parts := strings.SplitN(vkey, "+", 3)
	if len(parts) != 3 {
		return witnessKey{}, errors.New("witness vkey must be name+hexid+base64")
	}
	idBytes, err := hex.DecodeString(parts[1])
	if err != nil || len(idBytes) != 4 {
		return witnessKey{}, errors.New("witness vkey id is not 4 hex bytes")
	}
	material, err := base64.StdEncoding.DecodeString(parts[2])
	if err != nil || len(material) != 33 || material[0] != 0x04 {
		return witnessKey{}, errors.New("witness vkey is not a 0x04 Ed25519 key")
	}
	h := sha256.New()
	h.Write([]byte(parts[0] + "\n"))
	h.Write(material)
	sum := h.Sum(nil)
	if !bytes.Equal(sum[:4], idBytes) {
		return witnessKey{}, errors.New("witness vkey id does not match its key")
	}
	return witnessKey{parts[0], binary.BigEndian.Uint32(idBytes), ed25519.PublicKey(material[1:])}, nil
}

// cosignatureTime returns the timestamp of a valid cosignature by k on text.
func cosignatureTime(k witnessKey, text string, sigs []note.Signature) (uint64, error) {
	for _, s := range sigs {
		if s.Name != k.name || s.Hash != k.id {
			continue
		}
		raw, err := base64.StdEncoding.DecodeString(s.Base64)
		if err != nil || len(raw) != 4+8+ed25519.SignatureSize {
			return 0, fmt.Errorf("cosignature of %s is malformed", k.name)
		}
		ts := binary.BigEndian.Uint64(raw[4:12])
		if ts > 1<<63-1 {
			return 0, fmt.Errorf("cosignature of %s has a timestamp above 2^63-1", k.name)
		}
		msg := fmt.Sprintf("cosignature/v1\ntime %d\n%s", ts, text)
		if !ed25519.Verify(k.pub, []byte(msg), raw[12:]) {
			return 0, fmt.Errorf("cosignature of %s does not verify", k.name)
		}
		return ts, nil
	}
	return 0, fmt.Errorf("no cosignature from %s", k.name)
}

func run() result {
	var logKey string
	var witnesses multiFlag
	flag.StringVar(&logKey, "vkey", "", "the log's verifier key")
	flag.Var(&witnesses, "witness", "a witness verifier key (type 0x04); repeatable")
	flag.Parse()
	if flag.NArg() != 1 || logKey == "" {
		return result{Error: "usage: notecheck -vkey VKEY [-witness VKEY]... NOTE_FILE"}
	}
	data, err := os.ReadFile(flag.Arg(0))
	if err != nil {
		return result{Error: err.Error()}
	}
	v, err := note.NewVerifier(logKey)
	if err != nil {
		return result{Error: "log vkey: " + err.Error()}
	}
	// Open ignores signatures from unknown keys (the cosignatures) and fails on a bad
	// signature from the known key or when the known key did not sign.
	n, err := note.Open(data, note.VerifierList(v))
	if err != nil {
		return result{Error: "sumdb/note: " + err.Error()}
	}
	res := result{OK: true, Text: n.Text}
	for _, s := range n.Sigs {
		res.Signers = append(res.Signers, s.Name)
	}
	for _, w := range witnesses {
		k, err := parseWitnessKey(w)
		if err != nil {
			return result{Error: err.Error()}
		}
		ts, err := cosignatureTime(k, n.Text, n.UnverifiedSigs)
		if err != nil {
			return result{Error: err.Error(), Text: n.Text}
		}
		res.Cosigned = append(res.Cosigned, cosigned{k.name, ts})
	}
	return res
}

func main() {
	res := run()
	out, _ := json.Marshal(res)
	fmt.Println(string(out))
	if !res.OK {
		os.Exit(1)
	}
}
