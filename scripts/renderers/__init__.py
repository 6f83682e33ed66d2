"""One module per rendered artifact: ``render(spec, rows, results_dir) -> list[Path]``.

``spec`` is experiments/<artifact>.yaml as a dict, ``rows`` the artifact's CSV rows
(results/<artifact>_runs.csv, numbers parsed, empty cells None, failed runs included with
``status == "failed"``). Shared formatting lives in :mod:`renderers.common`.
"""
