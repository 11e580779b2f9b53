import textwrap

import jax
import numpy as np
from flax import linen as nn

from lepton_jax.initializers import orthogonal
from tests.conftest import run_python


def test_orthogonal_equals_flax_bit_for_bit_also_under_vmap():
    keys = jax.random.split(jax.random.PRNGKey(3), 3)
    ours = jax.jit(jax.vmap(lambda k: orthogonal(1.4)(k, (16, 8))))(keys)
    for i, key in enumerate(keys):
        np.testing.assert_array_equal(ours[i], nn.initializers.orthogonal(1.4)(key, (16, 8)))


def test_vmapped_orthogonal_init_never_hangs():
    # flax's orthogonal init under jit(vmap) emits batched LAPACK QRs that can deadlock XLA's CPU thread pool
    # (a race, hit within a few hundred runs on 2 cores). Ours must survive many repetitions.
    script = textwrap.dedent("""
        import jax
        from lepton_jax.initializers import orthogonal
        def init(key):
            return [orthogonal(1.0)(k, (64, 64)) for k in jax.random.split(key, 12)]
        f = jax.jit(jax.vmap(init))
        for i in range(300):
            jax.block_until_ready(f(jax.random.split(jax.random.PRNGKey(i), 2)))
        print("done")
    """)
    result = run_python(["-c", script], timeout=120)
    assert result.returncode == 0 and "done" in result.stdout, result.stderr[-2000:]


def test_every_recurrent_cell_and_orthogonal_init_of_the_project_is_the_vmap_safe_one():
    """Flax's recurrent cells draw their recurrent kernels with flax's own `orthogonal` (the batched-QR hang above
    when seeds are vmapped: a seq2seq LSTM run once stopped at 0 % CPU in its first step). Every cell the project
    builds must pass `recurrent_kernel_init` (the project's `orthogonal`), and no module may call flax's or jax's
    `orthogonal` directly."""
    import ast
    import os

    from tests.conftest import ROOT

    cells = {"LSTMCell", "OptimizedLSTMCell", "GRUCell", "MGUCell", "SimpleCell", "ConvLSTMCell"}
    found, offenders = 0, []
    for folder in ("agents", "graphs", "generative", "lepton_jax", "scripts"):
        for dirpath, _, files in os.walk(os.path.join(ROOT, folder)):
            for name in files:
                path = os.path.join(dirpath, name)
                if not name.endswith(".py") or path.endswith(os.path.join("lepton_jax", "initializers.py")):
                    continue
                with open(path) as f:
                    tree = ast.parse(f.read())
                for node in ast.walk(tree):
                    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                        continue
                    where = f"{os.path.relpath(path, ROOT)}:{node.lineno}"
                    if node.func.attr in cells:
                        found += 1
                        if "recurrent_kernel_init" not in {k.arg for k in node.keywords}:
                            offenders.append(f"{where} {node.func.attr} without recurrent_kernel_init")
                    if node.func.attr == "orthogonal" and "initializers" in ast.unparse(node.func.value):
                        offenders.append(f"{where} calls {ast.unparse(node.func)}")
    assert found >= 4, found  # the seq2seq LSTM, the walker, the NAS controller, the QMIX GRU
    assert not offenders, offenders
