"""What a user would write instead of kdserve, serving the same model: the comparison points.

Each app takes a bundle (or checkpoint) folder and ``--port`` (or ``PORT``), answers
``GET /ready`` and ``POST /classify`` with ``{"text": ...}``, and returns
``{"model": NAME, "results": [{"label": ..., "score": ...}]}``.
"""
