package tracking

import (
	"errors"
	"testing"
)

// TestWriteTickets checks the contract tiered's write paths rest on: a
// write's next ticket stays valid until the key is written or invalidated
// again, and a write under a ticket that was overtaken removes the entry.
func TestWriteTickets(t *testing.T) {
	c := newLocal(t, nil)
	if c.Valid(Ticket{}) {
		t.Fatal("the zero Ticket is valid")
	}

	before := c.Reserve("k")
	next, valid, err := c.Write("k", &Item{Value: []byte("v1")}, 0, nil)
	if err != nil || !valid {
		t.Fatalf("unconditional Write = %v, %v; want valid", valid, err)
	}
	mustGet(t, c, "k", "v1")
	if c.Valid(before) {
		t.Error("a ticket taken before a write is still valid after it")
	}
	if !c.Valid(next) {
		t.Fatal("Write's next ticket is not valid right after the write")
	}
	if c.Fill(before, "k", item("old"), true) || c.FillLocal(before, "k", item("old")) {
		t.Error("a fill under a ticket from before the write was accepted")
	}

	// A write under a ticket that another write overtook removes the
	// entry: the other write may be newer.
	stale := c.Reserve("k")
	if _, _, err := c.Write("k", &Item{Value: []byte("v2")}, 0, nil); err != nil {
		t.Fatal(err)
	}
	if _, valid, err := c.Write("k", &Item{Value: []byte("v3")}, 0, &stale); err != nil || valid {
		t.Fatalf("Write under an overtaken ticket = valid %v, %v; want invalid, entry removed", valid, err)
	}
	mustMiss(t, c, "k")

	// Invalidation ends next's validity; so does a write of the key.
	next, _, _ = c.Write("k", &Item{Value: []byte("v4")}, 0, nil)
	c.Invalidate("k")
	if c.Valid(next) {
		t.Error("next is still valid after an invalidation of its key")
	}
	next, _, _ = c.Write("k", nil, 0, nil)
	mustMiss(t, c, "k")
	c.InvalidatePrefix("")
	if c.Valid(next) {
		t.Error("next is still valid after InvalidatePrefix")
	}

	if _, _, err := c.Write("", &Item{}, 0, nil); !errors.Is(err, ErrEmptyKey) {
		t.Errorf("Write(\"\") = %v, want ErrEmptyKey", err)
	}
	c.Close()
	if _, _, err := c.Write("k", nil, 0, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("Write after Close = %v, want ErrClosed", err)
	}
}
