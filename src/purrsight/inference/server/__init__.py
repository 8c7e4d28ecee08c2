"""``purrsight serve``: the Predictor behind HTTP (FastAPI + uvicorn) and a web page.

:mod:`.app` the routes, :mod:`.worker` the single model thread and its bounded queue,
:mod:`.uploads` reading bodies within limits, :mod:`.sandbox` decoding first in a child
process with a time limit, :mod:`.limits` the limits, :mod:`.run` the
command, ``static/index.html`` the page (inline CSS/JS, no CDN). No Lightning or MLflow.
"""
