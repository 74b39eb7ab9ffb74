package etcd

import (
	"context"
	"log/slog"
	"slices"
	"sort"
	"sync/atomic"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// zapToSlog returns a zap logger that forwards entries at min or above to
// log, so etcd's client and embedded server write through accelpool's slog
// handler instead of printing JSON to stderr. Nothing is forwarded while
// mute (if not nil) is set.
func zapToSlog(log *slog.Logger, min zapcore.Level, mute *atomic.Bool) *zap.Logger {
	if log == nil {
		log = slog.Default()
	}
	if mute == nil {
		mute = new(atomic.Bool)
	}
	return zap.New(&slogCore{log: log, min: min, mute: mute})
}

type slogCore struct {
	log    *slog.Logger
	min    zapcore.Level
	mute   *atomic.Bool
	fields []zapcore.Field
}

func (c *slogCore) Enabled(l zapcore.Level) bool { return l >= c.min && !c.mute.Load() }

func (c *slogCore) With(fs []zapcore.Field) zapcore.Core {
	cp := *c
	cp.fields = append(slices.Clip(c.fields), fs...)
	return &cp
}

func (c *slogCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c *slogCore) Write(e zapcore.Entry, fs []zapcore.Field) error {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range c.fields {
		f.AddTo(enc)
	}
	for _, f := range fs {
		f.AddTo(enc)
	}
	keys := make([]string, 0, len(enc.Fields))
	for k := range enc.Fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	attrs := make([]slog.Attr, 0, len(keys)+1)
	if e.LoggerName != "" {
		attrs = append(attrs, slog.String("logger", e.LoggerName))
	}
	for _, k := range keys {
		attrs = append(attrs, slog.Any(k, enc.Fields[k]))
	}
	c.log.LogAttrs(context.Background(), slogLevel(e.Level), e.Message, attrs...)
	return nil
}

func (c *slogCore) Sync() error { return nil }

func slogLevel(l zapcore.Level) slog.Level {
	switch {
	case l <= zapcore.DebugLevel:
		return slog.LevelDebug
	case l == zapcore.InfoLevel:
		return slog.LevelInfo
	case l == zapcore.WarnLevel:
		return slog.LevelWarn
	}
	return slog.LevelError
}
