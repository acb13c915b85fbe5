package controlplane

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/gmesh-dev/gmesh/internal/mesh"
)

// toStatus converts a domain error to a gRPC status at the API boundary.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return status.Error(codes.DeadlineExceeded, err.Error())
	}
	if errors.Is(err, context.Canceled) {
		return status.Error(codes.Canceled, err.Error())
	}
	var c codes.Code
	switch mesh.ErrorCode(err) {
	case mesh.EInvalid:
		c = codes.InvalidArgument
	case mesh.ENotFound:
		c = codes.NotFound
	case mesh.EConflict:
		c = codes.Aborted
	case mesh.EAlreadyExists:
		c = codes.AlreadyExists
	case mesh.EInUse:
		c = codes.FailedPrecondition
	case mesh.EUnavailable:
		c = codes.Unavailable
	default:
		c = codes.Internal
	}
	return status.Error(c, err.Error())
}

// FromStatus converts an admin API error back to a domain error, so that
// clients can test it with mesh.IsNotFound and friends.
func FromStatus(err error) error {
	st, ok := status.FromError(err)
	if !ok || err == nil {
		return err
	}
	code := mesh.EInternal
	switch st.Code() {
	case codes.InvalidArgument:
		code = mesh.EInvalid
	case codes.NotFound:
		code = mesh.ENotFound
	case codes.Aborted:
		code = mesh.EConflict
	case codes.AlreadyExists:
		code = mesh.EAlreadyExists
	case codes.FailedPrecondition:
		code = mesh.EInUse
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled:
		code = mesh.EUnavailable
	case codes.Unauthenticated, codes.PermissionDenied:
		code = mesh.EInvalid
	}
	return &mesh.Error{Code: code, Message: st.Message(), Err: err}
}
