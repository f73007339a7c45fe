"""The local web explorer: `convnet serve [RUN_FOLDER]` or `create_app(...)` for uvicorn.

FastAPI is imported only when an app is created, so `convnet --help` stays fast.
"""


def create_app(*args, **kwargs):
    """See `convnet.web.app.create_app`."""
    from convnet.web.app import create_app as _create_app

    return _create_app(*args, **kwargs)


__all__ = ["create_app"]
