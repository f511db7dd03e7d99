// Package trace replays recorded cache access traces as streams of integer
// keys, one access at a time, never holding a whole file in memory.
//
// Formats:
//   - ARC (.lis): text lines "start nblocks ignore reqno"; each line is the
//     nblocks accesses start, start+1, …, start+nblocks-1 (Megiddo & Modha's
//     traces for the ARC paper).
//   - Text: one key per line; a decimal key is used as is, any other line is
//     hashed with FNV-1a 64 (blank lines are skipped).
//   - Int32 / Int64: big-endian binary keys back to back (cache2k traces).
//
// Any of them may be compressed with zstd or xz; compression is recognised by
// the stream's magic bytes, not its name. The format is named by the caller
// or detected from the content (never from the file name), and a named
// format the content contradicts, or content that fits several formats, is
// refused with ErrFormat rather than replayed wrongly (see NewReader). Scan
// reads a whole trace first: its accesses, distinct keys (the compulsory-miss
// bound) and any bad record past the sample NewReader checks.
//
// A Reader is not safe for concurrent use. Open's Reader owns its file and
// decoder goroutines until Close.
package trace
