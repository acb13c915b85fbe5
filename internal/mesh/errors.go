package mesh

import (
	"errors"
	"fmt"
)

// Error codes. They are converted to gRPC status codes only at the API
// boundary.
const (
	EInvalid       = "invalid"        // bad input: a manifest, a field, a flag
	ENotFound      = "not_found"      // no such resource
	EConflict      = "conflict"       // stale resourceVersion, or a concurrent operation
	EAlreadyExists = "already_exists" // create of an existing resource
	EInUse         = "in_use"         // delete of a resource another refers to
	EUnavailable   = "unavailable"    // a dependency is down; retry later
	EInternal      = "internal"       // a bug or an I/O failure
)

// Error is a domain error: a code, a message for the user, and where the
// problem is (file, document index, field path) when it is about input.
type Error struct {
	Code    string
	Message string
	// File, Doc (1-based, 0 = unknown) and Field locate bad input.
	File  string
	Doc   int
	Field string
	Err   error // wrapped cause, if any
}

func (e *Error) Error() string {
	loc := ""
	if e.File != "" {
		loc = e.File
	}
	if e.Doc > 0 {
		if loc != "" {
			loc += ": "
		}
		loc += fmt.Sprintf("document %d", e.Doc)
	}
	if e.Field != "" {
		if loc != "" {
			loc += ": "
		}
		loc += e.Field
	}
	msg := e.Message
	if msg == "" && e.Err != nil {
		msg = e.Err.Error()
	}
	if loc == "" {
		return msg
	}
	return loc + ": " + msg
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error with code and a formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// FieldError returns an EInvalid error about field (a JSON path such as
// "spec.grpcRoute.action.weightedTargets[0].weight").
func FieldError(field, format string, args ...any) *Error {
	return &Error{Code: EInvalid, Field: field, Message: fmt.Sprintf(format, args...)}
}

// ErrorCode returns the code of the first *Error in err's chain, EInternal
// for any other non-nil error, and "" for nil.
func ErrorCode(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return EInternal
}

// IsNotFound, IsConflict report an error's code.
func IsNotFound(err error) bool { return ErrorCode(err) == ENotFound }

// IsConflict reports whether err is a conflict.
func IsConflict(err error) bool { return ErrorCode(err) == EConflict }

// Errors is several input errors reported together (a manifest with many
// problems); it is itself EInvalid.
type Errors []*Error

func (es Errors) Error() string {
	s := ""
	for i, e := range es {
		if i > 0 {
			s += "\n"
		}
		s += e.Error()
	}
	return s
}

// As lets errors.As find an *Error (the first) in Errors.
func (es Errors) As(target any) bool {
	if p, ok := target.(**Error); ok && len(es) > 0 {
		*p = es[0]
		return true
	}
	return false
}
