package memhit

const rusageThread = 1 // RUSAGE_THREAD
