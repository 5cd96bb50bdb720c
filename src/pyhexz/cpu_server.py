"""The CPU player service's gunicorn path of 2024, kept for deployments that name it:
`gunicorn ... 'pyhexz.cpu_server:create_app()'`. It is pyhexz.cpu.app; see there.
"""

from pyhexz.cpu.app import create_app

__all__ = ["create_app"]
