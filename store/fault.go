package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
)

// faultState is the store's error state. It is shared by the DB, the
// filesystem guard, the Pebble logger and the event listener, which may all
// enter it, from any goroutine. The first fault wins; later ones are logged
// at debug level only.
type faultState struct {
	err     atomic.Pointer[error] // first fault; wraps ErrDiskFault
	ch      chan struct{}         // closed when err is set
	once    sync.Once
	closing atomic.Bool // set by Close: background errors during shutdown are expected
	stalled atomic.Bool // a Pebble write stall is in progress
	log     *slog.Logger

	// flushFailed is closed once a flush has failed (see openInstance);
	// lastFlushErr is the error of the last flush that ended with one.
	flushFailed     chan struct{}
	flushFailedOnce sync.Once
	lastFlushErr    atomic.Pointer[error]
}

func newFaultState(log *slog.Logger) *faultState {
	return &faultState{ch: make(chan struct{}), flushFailed: make(chan struct{}), log: log}
}

// get returns the fault, or nil.
func (f *faultState) get() error {
	if p := f.err.Load(); p != nil {
		return *p
	}
	return nil
}

// set enters the error state with cause (which is wrapped, so errors.Is
// finds both ErrDiskFault and the cause). It returns the fault in effect.
func (f *faultState) set(cause error) error {
	err := cause
	if !errors.Is(cause, ErrDiskFault) {
		err = fmt.Errorf("%w: %w", ErrDiskFault, cause)
	}
	won := false
	f.once.Do(func() {
		f.err.Store(&err)
		close(f.ch)
		won = true
	})
	if won {
		f.log.Error("store: entering error state; reads and writes are refused until Recover succeeds", "err", err)
		return err
	}
	f.log.Debug("store: further fault while in error state", "err", err)
	return f.get()
}

// pebbleLogger routes Pebble's logging through slog. Infof goes to debug
// level (Pebble logs on every open), Errorf to warn. Fatalf does not exit:
// it puts the store in its error state.
type pebbleLogger struct {
	log   *slog.Logger
	fault *faultState
}

var _ pebble.Logger = pebbleLogger{}

func (l pebbleLogger) Infof(format string, args ...any) {
	if l.log.Enabled(context.Background(), slog.LevelDebug) {
		l.log.Debug(fmt.Sprintf(format, args...), "component", "pebble")
	}
}

func (l pebbleLogger) Errorf(format string, args ...any) {
	l.log.Warn(fmt.Sprintf(format, args...), "component", "pebble")
}

func (l pebbleLogger) Fatalf(format string, args ...any) {
	l.fault.set(fmt.Errorf("pebble: %s", fmt.Sprintf(format, args...)))
}

// eventListener turns Pebble's events into logs and, for background errors
// and data corruption, into the error state.
func eventListener(log *slog.Logger, f *faultState) *pebble.EventListener {
	return &pebble.EventListener{
		BackgroundError: func(err error) {
			if f.closing.Load() || errors.Is(err, pebble.ErrClosed) {
				log.Debug("store: pebble background error while closing", "err", err)
				return
			}
			f.set(fmt.Errorf("pebble background error: %w", err))
			// A failed flush reports its error to FlushEnd, then here. (A
			// flush with nothing to write reports an error to FlushEnd
			// only, and is no failure.)
			if p := f.lastFlushErr.Load(); p != nil && errors.Is(err, *p) {
				f.flushFailedOnce.Do(func() { close(f.flushFailed) })
			}
		},
		FlushEnd: func(info pebble.FlushInfo) {
			if info.Err != nil {
				f.lastFlushErr.Store(&info.Err)
			}
		},
		DataCorruption: func(info pebble.DataCorruptionInfo) {
			f.set(fmt.Errorf("pebble data corruption in %s: %w", info.Path, info.Details))
		},
		DiskSlow: func(info pebble.DiskSlowInfo) {
			log.Warn("store: disk slow", "op", info.OpType.String(), "path", info.Path, "duration", info.Duration)
		},
		WriteStallBegin: func(info pebble.WriteStallBeginInfo) {
			f.stalled.Store(true)
			log.Warn("store: pebble write stall begins", "reason", info.Reason)
		},
		WriteStallEnd: func() {
			f.stalled.Store(false)
			log.Info("store: pebble write stall ends")
		},
		LowDiskSpace: func(info pebble.LowDiskSpaceInfo) {
			log.Warn("store: low disk space", "available_bytes", info.AvailBytes, "total_bytes", info.TotalBytes)
		},
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
