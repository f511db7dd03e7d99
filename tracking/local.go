package tracking

// FillLocal is Fill for keys that have no copy in Redis (tiered's
// memory-only and memory+disk routes): it skips Fill's check that key is
// under a tracked prefix, so it works on a cache that also tracks Redis,
// and inserts the entry as fresh. Like Fill it refuses (and reports false)
// when key was written or invalidated locally since Reserve returned t, so
// a slow load cannot overwrite a newer SetLocal.
func (c *Cache) FillLocal(t Ticket, key string, it Item) bool {
	return c.fill(t, key, it, c.epoch.Load())
}
