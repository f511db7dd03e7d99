package workload

import "errors"

// ErrInvalid is returned for a generator or mix that cannot be built from
// the given parameters (no keys, θ outside (0, 1), fractions outside [0, 1],
// an unknown name). Test for it with errors.Is(err, workload.ErrInvalid).
var ErrInvalid = errors.New("workload: invalid parameters")
