# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The evaluation cache: the network's output per position, keyed by the engine's position hash.

Flagz positions recur through different move orders (x plays A then B, o's move between, or
B then A), and the tree holds each order as its own node. The search (mcts.pyx) looks a new
leaf up here before it asks the network: a hit expands the leaf from the stored priors and
backs up the stored value, with no network call. The cache lives as long as its game's tree,
so positions evaluated in the searches of earlier moves help later ones too.

Memory is bounded: at most `cap` entries, each holding only the priors of the position's
legal moves (in the engine's order of `legal_policy_moves`, so no moves are stored), its value
and its move counter, in about 40 bytes plus 4 per legal move. When it is full, the entries
whose move counter is below the root's go first (a move fills a cell, so those positions can
never be reached again); if that frees less than half, everything goes.
"""

from libc.stdint cimport uint64_t
from libc.stdlib cimport calloc, free, malloc, realloc
from libc.string cimport memmove, memset

from pyhexz.game.board cimport NMOVES


cdef int cache_init(EvalCache* c, int cap) except -1:
    memset(c, 0, sizeof(EvalCache))
    if cap < 1:
        raise ValueError(f"an evaluation cache needs room for at least 1 entry, got {cap}")
    cdef long long size = 1
    while size < 2 * <long long>cap:
        size *= 2
    if size > 2**30:
        raise ValueError(f"an evaluation cache of {cap} entries is too big")
    c.cap = cap
    c.mask = <int>(size - 1)
    c.keys = <uint64_t*>calloc(size, sizeof(uint64_t))
    c.slots = <int*>malloc(size * sizeof(int))
    c.value = <float*>malloc(cap * sizeof(float))
    c.ply = <int*>malloc(cap * sizeof(int))
    c.start = <int*>malloc(cap * sizeof(int))
    c.nmoves = <int*>malloc(cap * sizeof(int))
    if (c.keys == NULL or c.slots == NULL or c.value == NULL or c.ply == NULL
            or c.start == NULL or c.nmoves == NULL):
        cache_free(c)
        raise MemoryError(f"cannot allocate an evaluation cache of {cap} entries")
    return 0


cdef void cache_free(EvalCache* c) noexcept nogil:
    free(c.keys)
    free(c.slots)
    free(c.value)
    free(c.ply)
    free(c.start)
    free(c.nmoves)
    free(c.pool)
    memset(c, 0, sizeof(EvalCache))


cdef void cache_clear(EvalCache* c) noexcept nogil:
    if c.keys != NULL:
        memset(c.keys, 0, (<size_t>c.mask + 1) * sizeof(uint64_t))
    c.evictions += c.n
    c.n = 0
    c.pool_n = 0


cdef inline uint64_t _key(uint64_t key) noexcept nogil:
    return key if key != 0 else 1   # 0 marks a free slot


cdef int cache_find(const EvalCache* c, uint64_t key) noexcept nogil:
    if c.n == 0:
        return -1
    key = _key(key)
    cdef int i = <int>(key & c.mask)
    while c.keys[i] != 0:
        if c.keys[i] == key:
            return c.slots[i]
        i = (i + 1) & c.mask
    return -1


cdef void _index(EvalCache* c, uint64_t key, int entry) noexcept nogil:
    cdef int i = <int>(key & c.mask)
    while c.keys[i] != 0:
        i = (i + 1) & c.mask
    c.keys[i] = key
    c.slots[i] = entry


cdef void _compact(EvalCache* c, int min_ply) noexcept nogil:
    """Keeps the entries with ply >= min_ply, in order, and rebuilds the table."""
    cdef int size = c.mask + 1
    cdef int i, e, kept = 0
    cdef uint64_t* keys_of = <uint64_t*>malloc(c.n * sizeof(uint64_t))
    if keys_of == NULL:
        cache_clear(c)
        return
    for i in range(size):
        if c.keys[i] != 0:
            keys_of[c.slots[i]] = c.keys[i]
    memset(c.keys, 0, size * sizeof(uint64_t))
    c.pool_n = 0
    for e in range(c.n):
        if c.ply[e] < min_ply:
            continue
        # Entries and their priors only move down, so the copies never overrun what is
        # still to be read.
        memmove(&c.pool[c.pool_n], &c.pool[c.start[e]], c.nmoves[e] * sizeof(float))
        c.value[kept] = c.value[e]
        c.ply[kept] = c.ply[e]
        c.nmoves[kept] = c.nmoves[e]
        c.start[kept] = <int>c.pool_n
        c.pool_n += c.nmoves[e]
        _index(c, keys_of[e], kept)
        kept += 1
    free(keys_of)
    c.evictions += c.n - kept
    c.n = kept


cdef int cache_put(EvalCache* c, uint64_t key, int ply, float value, const float* priors,
                   int nmoves, int min_ply) noexcept nogil:
    if c.keys == NULL or cache_find(c, key) >= 0:
        return 0
    if c.n >= c.cap:
        _compact(c, min_ply)
        if c.n > c.cap // 2:
            cache_clear(c)
    cdef long long need = c.pool_n + nmoves
    cdef long long grown
    cdef float* pool
    if need > c.pool_cap:
        grown = max(2 * c.pool_cap, need, 64 * <long long>c.cap)
        grown = min(grown, <long long>c.cap * NMOVES)
        pool = <float*>realloc(c.pool, grown * sizeof(float))
        if pool == NULL:
            return 0   # a cache is an optimisation: without room, the leaf is not stored
        c.pool = pool
        c.pool_cap = grown
    cdef int e = c.n
    cdef int i
    for i in range(nmoves):
        c.pool[c.pool_n + i] = priors[i]
    c.value[e] = value
    c.ply[e] = ply
    c.start[e] = <int>c.pool_n
    c.nmoves[e] = nmoves
    c.pool_n += nmoves
    c.n += 1
    _index(c, _key(key), e)
    return 1
