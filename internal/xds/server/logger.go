package server

import (
	"context"
	"fmt"
	"log/slog"

	gcplog "github.com/envoyproxy/go-control-plane/pkg/log"
)

// slogLogger adapts go-control-plane's printf-style logger to slog. Its
// debug and info chatter (one line per watch and response) goes to Debug.
type slogLogger struct{ l *slog.Logger }

var _ gcplog.Logger = slogLogger{}

func (s slogLogger) log(level slog.Level, format string, args []any) {
	if !s.l.Enabled(context.Background(), level) {
		return
	}
	s.l.Log(context.Background(), level, "go-control-plane", "detail", fmt.Sprintf(format, args...))
}

func (s slogLogger) Debugf(format string, args ...any) { s.log(slog.LevelDebug, format, args) }
func (s slogLogger) Infof(format string, args ...any)  { s.log(slog.LevelDebug, format, args) }
func (s slogLogger) Warnf(format string, args ...any)  { s.log(slog.LevelWarn, format, args) }
func (s slogLogger) Errorf(format string, args ...any) { s.log(slog.LevelError, format, args) }
