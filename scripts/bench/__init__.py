"""Speed benchmarks against peer libraries: `python -m scripts.bench.{rl,graphs,generative,graph_envs,cluster}`.

Each benchmark module is an absl main; `common` holds what they share (peer venvs, running a peer's worker, timing,
the machine). `peers/` holds each peer's worker as a stand-alone script, run by path in that peer's own venv.
"""
