"""MkDocs hook: serve the plots and the HTML report that ``benchmarks/`` writes beside its results.

The results pages include ``benchmarks/results/*.md`` as they are (``include-markdown``), so an image such as
``![...](scaling.png)`` resolves to ``results/scaling.png`` of the site. This hook adds every non-Markdown,
non-JSON file of ``benchmarks/results/`` there, read from where the benchmark wrote it: nothing is copied into
``docs/``.
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File, Files

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
SERVED = {".png", ".svg", ".html"}


def on_files(files: Files, config) -> Files:
    for path in sorted(RESULTS.iterdir()):
        if path.suffix.lower() in SERVED and not path.name.startswith("."):
            files.append(File.generated(config, f"results/{path.name}", abs_src_path=str(path)))
    return files
