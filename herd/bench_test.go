package herd

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/rueidis"
)

// countingClient counts the round trips a Group makes (each Do and DoMulti).
type countingClient struct {
	rueidis.Client
	trips atomic.Int64
}

func (c *countingClient) Do(ctx context.Context, cmd rueidis.Completed) rueidis.RedisResult {
	c.trips.Add(1)
	return c.Client.Do(ctx, cmd)
}

func (c *countingClient) DoMulti(ctx context.Context, cmds ...rueidis.Completed) []rueidis.RedisResult {
	c.trips.Add(1)
	return c.Client.DoMulti(ctx, cmds...)
}

var benchValue = []byte("value")

func benchLoad(context.Context) ([]byte, time.Duration, error) { return benchValue, time.Minute, nil }

// BenchmarkDo measures uncontended Do: the bare load as the baseline, the
// local single-flight, and with the Redis lease a rebuild of a cold key, a
// value found in Redis and a value found by lookup.
func BenchmarkDo(b *testing.B) {
	ctx := context.Background()
	b.Run("baseline-direct-load", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, _, err := benchLoad(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("local", func(b *testing.B) {
		g := newGroup(b, nil)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := g.Do(ctx, "k", nil, benchLoad); err != nil {
				b.Fatal(err)
			}
		}
	})
	_, c := startRedis(b)
	cc := &countingClient{Client: c}
	g := newGroup(b, &Options{Client: cc, Logger: slog.New(slog.DiscardHandler)})
	run := func(b *testing.B, key func(i int) string, lookup LookupFunc) {
		b.ReportAllocs()
		start := cc.trips.Load()
		i := 0
		for b.Loop() {
			i++
			if _, err := g.Do(ctx, key(i), lookup, benchLoad); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(cc.trips.Load()-start)/float64(i), "redis-rt/op")
	}
	prefix := 0
	b.Run("redis-rebuild", func(b *testing.B) {
		prefix++
		p := prefix
		run(b, func(i int) string { return fmt.Sprintf("cold:%d:%d", p, i) }, nil)
	})
	b.Run("redis-hit-in-redis", func(b *testing.B) {
		run(b, func(int) string { return "cold:1:1" }, nil)
	})
	b.Run("redis-hit-lookup", func(b *testing.B) {
		hit := func(context.Context) ([]byte, bool, error) { return benchValue, true, nil }
		run(b, func(int) string { return "any" }, hit)
	})
}

// BenchmarkWakeLatency measures, from the moment the holder's load returns,
// how long a waiter in another process (its own Group and client) takes to
// return the value: woken by the Group's notification versus a 20 ms GET
// polling loop, in the same run.
func BenchmarkWakeLatency(b *testing.B) {
	ctx := context.Background()
	srv, c := startRedis(b)
	quiet := slog.New(slog.DiscardHandler)
	holder := newGroup(b, &Options{Client: c, Logger: quiet})
	waiter := newGroup(b, &Options{Client: newClient(b, srv.Addr()), Logger: quiet, WaitTimeout: 10 * time.Second})
	sleeping := make(chan struct{}, 1)
	waiter.beforeWait = func(string) {
		select {
		case sleeping <- struct{}{}:
		default:
		}
	}
	report := func(b *testing.B, lat []time.Duration) {
		slices.Sort(lat)
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
	}
	n := 0
	b.Run("notify", func(b *testing.B) {
		var lat []time.Duration
		for b.Loop() {
			n++
			key := fmt.Sprintf("wake:%d", n)
			landed := make(chan time.Time, 1)
			holding := make(chan struct{})
			go func() {
				_, _ = holder.Do(ctx, key, nil, func(context.Context) ([]byte, time.Duration, error) {
					close(holding)
					<-sleeping
					landed <- time.Now()
					return benchValue, time.Minute, nil
				})
			}()
			<-holding
			if _, err := waiter.Do(ctx, key, nil, benchLoad); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(<-landed))
		}
		report(b, lat)
	})
	b.Run("poll-20ms", func(b *testing.B) {
		var lat []time.Duration
		for b.Loop() {
			n++
			key := fmt.Sprintf("wake:%d", n)
			landed := make(chan time.Time, 1)
			polling := make(chan struct{})
			go func() {
				_, _ = holder.Do(ctx, key, nil, func(context.Context) ([]byte, time.Duration, error) {
					<-polling
					// Land at a random phase of the polling period.
					time.Sleep(rand.N(20 * time.Millisecond))
					landed <- time.Now()
					return benchValue, time.Minute, nil
				})
			}()
			first := true
			for {
				err := c.Do(ctx, c.B().Get().Key(key).Build()).Error()
				if err == nil {
					break
				}
				if !rueidis.IsRedisNil(err) {
					b.Fatal(err)
				}
				if first {
					close(polling)
					first = false
				}
				time.Sleep(20 * time.Millisecond)
			}
			lat = append(lat, time.Since(<-landed))
		}
		report(b, lat)
	})
}

// BenchmarkDoContention: Do of distinct keys (a load each, run on the
// caller's goroutine) from 32 goroutines per processor, the shape of many
// concurrent memory misses. Every Do locks its key's flight map twice.
func BenchmarkDoContention(b *testing.B) {
	g := newGroup(b, nil)
	ctx := context.Background()
	var worker atomic.Int64
	b.ReportAllocs()
	b.SetParallelism(32)
	b.RunParallel(func(pb *testing.PB) {
		prefix := strconv.FormatInt(worker.Add(1), 10) + ":"
		i := 0
		for pb.Next() {
			i++
			if _, err := g.Do(ctx, prefix+strconv.Itoa(i), nil, benchLoad); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
