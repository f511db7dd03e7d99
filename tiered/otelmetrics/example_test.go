package otelmetrics_test

import (
	"context"
	"fmt"
	"log"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/thermoscache/thermos/tiered"
	"github.com/thermoscache/thermos/tiered/otelmetrics"
)

// Register a cache's statistics with a meter; the SDK reads them at
// collection time (here a manual reader stands in for an exporter).
func Example() {
	ctx := context.Background()
	c, err := tiered.Open(ctx, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	reader := sdkmetric.NewManualReader()
	provider := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer provider.Shutdown(ctx)
	reg, err := otelmetrics.Register(provider.Meter("myservice"), c)
	if err != nil {
		log.Fatal(err)
	}
	defer reg.Unregister()

	_ = c.Set(ctx, "k", []byte("v"), 0)
	_, _, _ = c.Get(ctx, "k")

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil {
		log.Fatal(err)
	}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name == "thermos.memory.entries" {
				fmt.Println(m.Name, m.Data.(metricdata.Gauge[int64]).DataPoints[0].Value)
			}
		}
	}
	// Output: thermos.memory.entries 1
}
