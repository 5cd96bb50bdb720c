"""Search: the tree (compiled), the driver that feeds it the network, search within a time
budget, and the players matches are made of.

    mcts.pyx    forests of trees as typed node arrays: batched PUCT with network priors, rollout UCT
                (and the options: FPU reduction, forced playouts, the Gumbel root)
    evalcache.pyx  the network's outputs by position hash: transpositions evaluated once
    solver.pyx  the exact endgame solver for leaves with few moves left
    driver.py   TreeConfig, SearchConfig; search(): the simulations of a forest, one network call
                per batch
    timed.py    search within a think time, many positions interleaved in fair rounds
    players.py  random, rollout and neural players; model paths to players
"""
