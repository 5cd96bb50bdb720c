# The C-level interface of the evaluation cache (evalcache.pyx), used by the search (mcts.pyx).

from libc.stdint cimport uint64_t

cdef struct EvalCache:
    uint64_t* keys      # open-addressing table of position hashes; 0 marks a free slot
    int* slots          # per table slot: its entry
    int mask            # table size - 1 (a power of two, at least twice `cap`)
    int cap             # entries at most
    int n               # entries stored
    float* value        # per entry: the network's value, +1 = the player to move wins
    int* ply            # per entry: the position's move counter
    int* start          # per entry: where its priors start in `pool`
    int* nmoves         # per entry: its number of priors (the legal moves)
    float* pool         # the priors of every entry's legal moves, entry after entry
    long long pool_n
    long long pool_cap
    long long evictions # entries dropped to make room

# Allocates the table for `cap` entries (cap >= 1); MemoryError if it cannot.
cdef int cache_init(EvalCache* c, int cap) except -1
cdef void cache_free(EvalCache* c) noexcept nogil
cdef void cache_clear(EvalCache* c) noexcept nogil
# The entry of a position hash, or -1.
cdef int cache_find(const EvalCache* c, uint64_t key) noexcept nogil
# Stores a position's value and priors (in the engine's order of its legal moves) unless it is
# there already. When full, first drops the entries whose move counter is below `min_ply` (no
# longer reachable from the root), then everything. Returns 1 if stored, 0 if not.
cdef int cache_put(EvalCache* c, uint64_t key, int ply, float value, const float* priors,
                   int nmoves, int min_ply) noexcept nogil
