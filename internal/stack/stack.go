// Package stack holds the built-in echo stack that `gmesh up` runs with no
// arguments and `gmesh init` writes out: the reference topology of the App
// Mesh / ECS tutorial, in gmesh's manifest format.
package stack

import _ "embed"

// Echo is the built-in echo stack manifest.
//
//go:embed echo.yaml
var Echo []byte
