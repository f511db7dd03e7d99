package tiered

import (
	"slices"
	"strconv"
	"strings"

	"github.com/thermoscache/thermos/tracking"
)

// router finds a key's route: the one with the longest matching prefix.
// Routes are few, so a scan over prefixes sorted longest first beats a trie
// and allocates nothing.
type router struct {
	routes []*route // longest prefix first
	memory bool     // some route has the memory tier
	redis  bool     // some route has the Redis tier
	// none is what find returns for a key no route matches (only with
	// Options.RequireRoute: otherwise the default route matches every
	// key). It has no tiers, so every tier check skips it.
	none *route
}

// route is a Route with its derived state.
type route struct {
	Route
	idx   uint8  // index in router.routes, kept in each cached item's Tag
	tiers []tier // the route's tiers, fastest first
	local []tier // the same without Redis
	stats routeStats
}

// maxRoutes is how many routes fit the memory tier's one-byte tag.
const maxRoutes = 256

func newRouter(rs []Route) *router {
	r := &router{none: &route{}}
	for _, x := range rs {
		r.routes = append(r.routes, &route{Route: x})
		r.memory = r.memory || x.Tiers&Memory != 0
		r.redis = r.redis || x.Tiers&Redis != 0
	}
	slices.SortStableFunc(r.routes, func(a, b *route) int { return len(b.Prefix) - len(a.Prefix) })
	for i, x := range r.routes {
		x.idx = uint8(i)
	}
	return r
}

// find returns key's route, or r.none when no route matches it.
func (r *router) find(key string) *route {
	for _, x := range r.routes {
		if strings.HasPrefix(key, x.Prefix) {
			return x
		}
	}
	return r.none
}

// prefixes lists the routes' prefixes, quoted, for error messages.
func (r *router) prefixes() string {
	ps := make([]string, len(r.routes))
	for i, x := range r.routes {
		ps[i] = strconv.Quote(x.Prefix)
	}
	return strings.Join(ps, ", ")
}

// anyRedisUnder reports whether a key starting with prefix can belong to a
// route with the Redis tier: the route prefix falls in, or a route whose
// prefix extends it.
func (r *router) anyRedisUnder(prefix string) bool {
	if r.find(prefix).Tiers&Redis != 0 {
		return true
	}
	for _, x := range r.routes {
		if x.Tiers&Redis != 0 && strings.HasPrefix(x.Prefix, prefix) {
			return true
		}
	}
	return false
}

// trackedPrefixes returns the minimal set of non-overlapping prefixes that
// covers every route combining a local tier with Redis: Redis refuses
// overlapping BCAST prefixes on one connection, and a prefix covered by a
// shorter one adds nothing. Keys of other routes that fall under a cover
// prefix only cost an occasional needless invalidation.
func trackedPrefixes(routes []Route) []string {
	var ps []string
	for _, r := range routes {
		if r.Tiers&Redis != 0 && r.Tiers&(Memory|Disk) != 0 {
			ps = append(ps, r.Prefix)
		}
	}
	return tracking.CoverPrefixes(ps)
}
