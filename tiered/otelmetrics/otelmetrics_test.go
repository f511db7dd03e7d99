package otelmetrics_test

import (
	"context"
	"testing"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/thermoscache/thermos/tiered"
	"github.com/thermoscache/thermos/tiered/otelmetrics"
)

func TestRegisterReportsHits(t *testing.T) {
	ctx := context.Background()
	c, err := tiered.Open(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Set(ctx, "k", []byte("v"), 0); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, ok, err := c.Get(ctx, "k"); !ok || err != nil {
			t.Fatalf("Get = %v, %v", ok, err)
		}
	}
	reader := sdkmetric.NewManualReader()
	provider := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer provider.Shutdown(ctx)
	reg, err := otelmetrics.Register(provider.Meter("thermos"), c)
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Unregister()

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil {
		t.Fatal(err)
	}
	var memHits, entries int64 = -1, -1
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch m.Name {
			case "thermos.hits":
				for _, dp := range m.Data.(metricdata.Sum[int64]).DataPoints {
					if v, _ := dp.Attributes.Value("tier"); v.AsString() == "memory" {
						memHits = dp.Value
					}
				}
			case "thermos.memory.entries":
				entries = m.Data.(metricdata.Gauge[int64]).DataPoints[0].Value
			}
		}
	}
	if memHits != 3 {
		t.Errorf("thermos.hits{tier=memory} = %d, want 3", memHits)
	}
	if entries != 1 {
		t.Errorf("thermos.memory.entries = %d, want 1", entries)
	}
}
