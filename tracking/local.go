package tracking

// FillLocal is Fill for keys that have no copy in Redis (tiered's
// memory-only and memory+disk routes): it skips Fill's check that key is
// under a tracked prefix, so it works on a cache that also tracks Redis,
// and inserts the entry as fresh. Like Fill it refuses (and reports false)
// when key was written or invalidated locally since Reserve returned t, so
// a slow load cannot overwrite a newer SetLocal.
func (c *Cache) FillLocal(t Ticket, key string, it Item) bool {
	if key == "" || c.closed.Load() {
		return false
	}
	h := c.hash(key)
	e := c.newEntry(key, it, c.now(), 0)
	if e == nil {
		return false
	}
	s := c.shardOf(h)
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.closed.Load() {
		return false
	}
	if !c.validLocked(s, h, t) {
		s.mu.refused++
		return false
	}
	if e.size > c.cfg.shareBytes {
		s.mu.tooLarge++
		c.removeLocked(s, key)
		return false
	}
	e.epoch = c.epoch.Load()
	c.insertLocked(s, key, e)
	return true
}
