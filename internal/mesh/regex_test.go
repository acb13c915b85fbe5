package mesh

import (
	"strings"
	"testing"
)

// A regex that compiles alone but not anchored, as grpc-go compiles it,
// must be refused: every client would NACK the route.
func TestRegexCheckedAsClientsCompileIt(t *testing.T) {
	deep := strings.Repeat("(", 999) + "a" + strings.Repeat(")", 999)
	if err := checkRegex(deep); err == nil {
		t.Fatalf("a regex nested 999 deep passed; grpc-go's ^(?:re)$ exceeds the nesting limit")
	}
	if err := checkRegex("^/proto\\.echo\\..*$"); err != nil {
		t.Fatalf("a plain regex was refused: %v", err)
	}
}
