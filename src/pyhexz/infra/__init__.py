"""Shared infrastructure, imported by every other package and importing none of them.

    storage.py     checkpoints in a local directory or a GCS bucket: one interface
    atomicfile.py  files written whole or not at all
    modelbus.py    the newest model in Redis: pointer, bytes with SHA-256, announcements
    http.py        the training server's HTTP client and the one retry backoff
    httpbody.py    request bodies: bounded gunzip, the 4xx error both servers raise
    process.py     logging, one torch thread per process, spawn-only child processes
"""
