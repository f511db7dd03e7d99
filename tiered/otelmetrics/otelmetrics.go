// Package otelmetrics exports a tiered.Cache's statistics as OpenTelemetry
// metrics. It uses the OpenTelemetry metric API only; the caller brings the
// SDK and exporter. It lives apart from tiered so that the cache itself
// forces no metrics dependency on its users.
//
// Every metric is an asynchronous instrument read from Cache.Stats at
// collection time, so the cache's hot path pays nothing for it.
package otelmetrics

import (
	"context"
	"fmt"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/thermoscache/thermos/tiered"
)

// Register creates the cache's instruments on meter and returns the
// registration; call its Unregister before closing the cache.
//
// Per route (attribute "route", the prefix) it reports thermos.hits (with
// attribute "tier": memory, disk or redis), thermos.misses, thermos.loads,
// thermos.load_errors, thermos.stale_serves, thermos.early_refreshes,
// thermos.unverified_reads and thermos.integrity_failures; for the cache,
// thermos.memory.bytes, thermos.memory.entries, thermos.revalidated,
// thermos.dropped and thermos.epoch_bumps.
func Register(meter metric.Meter, c *tiered.Cache) (metric.Registration, error) {
	counter := func(name, desc string) (metric.Int64ObservableCounter, error) {
		return meter.Int64ObservableCounter(name, metric.WithDescription(desc))
	}
	var err error
	var insts []metric.Observable
	mk := func(name, desc string) metric.Int64ObservableCounter {
		if err != nil {
			return nil
		}
		var x metric.Int64ObservableCounter
		x, err = counter(name, desc)
		insts = append(insts, x)
		return x
	}
	hits := mk("thermos.hits", "reads answered by a tier")
	misses := mk("thermos.misses", "reads no tier answered")
	loads := mk("thermos.loads", "loader calls made by this process")
	loadErrs := mk("thermos.load_errors", "loader calls that failed")
	stale := mk("thermos.stale_serves", "stale values served (stale-while-revalidate, stale-on-error, unverified)")
	early := mk("thermos.early_refreshes", "XFetch early refreshes started")
	unverified := mk("thermos.unverified_reads", "reads that met an unverified entry")
	integrity := mk("thermos.integrity_failures", "values refused for a bad checksum or signature")
	revalidated := mk("thermos.revalidated", "unverified entries confirmed against redis")
	dropped := mk("thermos.dropped", "unverified entries dropped because redis changed")
	bumps := mk("thermos.epoch_bumps", "tracking connection losses and flushes seen")
	if err != nil {
		return nil, fmt.Errorf("otelmetrics: %w", err)
	}
	bytes, err := meter.Int64ObservableGauge("thermos.memory.bytes", metric.WithUnit("By"),
		metric.WithDescription("bytes counted by the memory tier"))
	if err != nil {
		return nil, fmt.Errorf("otelmetrics: %w", err)
	}
	entries, err := meter.Int64ObservableGauge("thermos.memory.entries", metric.WithDescription("entries in the memory tier"))
	if err != nil {
		return nil, fmt.Errorf("otelmetrics: %w", err)
	}
	insts = append(insts, bytes, entries)

	tierAttr := func(route, tier string) metric.ObserveOption {
		return metric.WithAttributes(attribute.String("route", route), attribute.String("tier", tier))
	}
	return meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		st := c.Stats()
		for _, r := range st.Routes {
			at := metric.WithAttributes(attribute.String("route", r.Prefix))
			o.ObserveInt64(hits, r.MemoryHits, tierAttr(r.Prefix, "memory"))
			o.ObserveInt64(hits, r.DiskHits, tierAttr(r.Prefix, "disk"))
			o.ObserveInt64(hits, r.RedisHits, tierAttr(r.Prefix, "redis"))
			o.ObserveInt64(misses, r.Misses, at)
			o.ObserveInt64(loads, r.Loads, at)
			o.ObserveInt64(loadErrs, r.LoadErrors, at)
			o.ObserveInt64(stale, r.StaleServes, at)
			o.ObserveInt64(early, r.EarlyRefreshes, at)
			o.ObserveInt64(unverified, r.UnverifiedReads, at)
			o.ObserveInt64(integrity, r.IntegrityFailures, at)
		}
		o.ObserveInt64(revalidated, st.Revalidated)
		o.ObserveInt64(dropped, st.Dropped)
		o.ObserveInt64(bumps, st.EpochBumps)
		o.ObserveInt64(bytes, st.MemoryBytes)
		o.ObserveInt64(entries, int64(st.MemoryEntries))
		return nil
	}, insts...)
}
