"""The Cloud Run self-play worker: self-play streamed to a training server, models hot-swapped.

    job.py       WorkerConfig and the run: processes, time budget, SIGTERM
    uploader.py  the bounded stream of finished games, with retries
"""
