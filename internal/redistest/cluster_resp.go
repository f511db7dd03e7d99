package redistest

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/thermoscache/thermos/internal/redisproc"
)

// command sends one command to n over a fresh connection (authenticating
// with its --requirepass, if any) and returns the whole RESP2 reply: a
// string, an int64, nil, or a []any of those. A server error is returned as
// an error. It is plumbing for cluster set-up, where replies are arrays that
// Server.Do does not read.
func (n *ClusterNode) command(args ...string) (any, error) {
	if !n.Running() {
		// Its port may be somebody else's by now.
		return nil, fmt.Errorf("redistest: %s: %w", n.Addr(), redisproc.ErrNotRunning)
	}
	c, err := net.DialTimeout("tcp", n.Addr(), time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	w := bufio.NewWriter(c)
	r := bufio.NewReader(c)
	pw := n.p.Password()
	if pw != "" {
		writeArgs(w, "AUTH", pw)
	}
	writeArgs(w, args...)
	if err := w.Flush(); err != nil {
		return nil, err
	}
	if pw != "" {
		if _, err := readReply(r); err != nil {
			return nil, err
		}
	}
	return readReply(r)
}

func writeArgs(w *bufio.Writer, args ...string) {
	fmt.Fprintf(w, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(w, "$%d\r\n%s\r\n", len(a), a)
	}
}

// readReply reads one RESP2 reply.
func readReply(r *bufio.Reader) (any, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return nil, errors.New("redistest: empty reply")
	}
	switch line[0] {
	case '+':
		return line[1:], nil
	case '-':
		return nil, errors.New(line[1:])
	case ':':
		return strconv.ParseInt(line[1:], 10, 64)
	case '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil {
			return nil, err
		}
		if n < 0 {
			return nil, nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, err
		}
		return string(buf[:n]), nil
	case '*':
		n, err := strconv.Atoi(line[1:])
		if err != nil {
			return nil, err
		}
		if n < 0 {
			return nil, nil
		}
		a := make([]any, n)
		for i := range a {
			if a[i], err = readReply(r); err != nil {
				return nil, err
			}
		}
		return a, nil
	}
	return nil, fmt.Errorf("redistest: unexpected reply %q", line)
}
