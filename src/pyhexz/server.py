"""The CPU player service under its original name, so the 2023 commands keep working:

    cd src && HEXZ_MODEL_PATH=... python3 -m flask --app pyhexz.server run --port 9094
    gunicorn --bind :8080 --workers 1 --threads 8 --timeout 0 'pyhexz.server:create_app()'

It is pyhexz.cpu.app; see there. (The training server is the package pyhexz.training_server.)
"""

from pyhexz.cpu.app import create_app

__all__ = ["create_app"]
