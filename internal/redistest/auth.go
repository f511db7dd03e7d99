package redistest

import (
	"strings"
)

// SetUser creates or changes an ACL user with ACL SETUSER name rules…,
// talking to the server as the default user, and fails the test if the
// server refuses. For example SetUser("app", "on", ">pw", "~app:*",
// "+@all") makes a user that may run every command on keys under "app:".
func (s *Server) SetUser(name string, rules ...string) {
	s.tb.Helper()
	if _, err := s.Do(append([]string{"ACL", "SETUSER", name}, rules...)...); err != nil {
		s.tb.Fatalf("redistest: ACL SETUSER %s: %v", name, err)
	}
}

// Info returns field from INFO section (for example Info("stats",
// "total_connections_received")), failing the test if the server does not
// answer or has no such field.
func (s *Server) Info(section, field string) string {
	s.tb.Helper()
	out, err := s.Do("INFO", section)
	if err != nil {
		s.tb.Fatalf("redistest: INFO %s: %v", section, err)
	}
	for line := range strings.Lines(out) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), field+":"); ok {
			return v
		}
	}
	s.tb.Fatalf("redistest: INFO %s has no field %s", section, field)
	return ""
}
