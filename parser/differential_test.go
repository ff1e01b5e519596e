package parser_test

import (
	"math/rand/v2"
	"testing"

	"github.com/gokcm/kcm/internal/prototest"
)

// TestDifferentialLengthField checks that each built-in and its LengthField
// configuration delineate the same random streams and give the same answers
// on probing inputs. WebSocket and MQTT have no LengthField form (their
// header length varies); package bpf extends this test to the classic BPF
// and eBPF forms.
func TestDifferentialLengthField(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, p := range prototest.Protocols() {
		forms := []prototest.Form{{Name: "native", P: p.Native}}
		if p.HasField {
			forms = append(forms,
				prototest.Form{Name: "lengthfield", P: mustField(t, p.Field)},
				prototest.Form{Name: "literal", P: p.Field}) // no NewLengthField
		}
		t.Run(p.Name, func(t *testing.T) {
			prototest.CheckStreams(t, r, p, forms, 200)
			for _, b := range prototest.Inputs(r, p, 2000) {
				prototest.CheckAgree(t, p, forms[1:], b)
			}
		})
	}
}
