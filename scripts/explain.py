"""Explains a walking agent's answers: the most probable walks of a query, and the relation path behind each answer.

    python -m scripts.explain --workdir=runs/walker_umls --query=acquired_abnormality,location_of
    python -m scripts.explain --workdir=runs/walker_umls --query=person3,parent^-1 --top=10

`--query=HEAD,RELATION` names an entity and a relation of the run's knowledge graph (`RELATION^-1` asks the inverse,
i.e. for the heads of RELATION with tail HEAD). The run's kept parameters (seed 0) beam-search the walks as in
evaluation; each answer is printed with its probability (of the best walk reaching it), the walk itself
(`head -[relation]-> entity ...`) and whether the fact is known (in train, valid or test). `plots/explain.png` in the
workdir draws the best walks: one column per step, answers on the right, line width by probability.
"""

import difflib
import os
import sys

from absl import flags

from scripts import cli

_QUERY = flags.DEFINE_string("query", None, "HEAD,RELATION (RELATION^-1 for the inverse).")
_TOP = flags.DEFINE_integer("top", 5, "Answers printed (and drawn).", lower_bound=1)
_BEAM = flags.DEFINE_integer("beam", None, "Beam size (default: the run's beam_size).", lower_bound=1)


def _lookup(name: str, names: tuple[str, ...], what: str) -> int:
    from lepton_jax.errors import UserError

    if name in names:
        return names.index(name)
    close = difflib.get_close_matches(name, names, n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise UserError(f"--query: no {what} '{name}' in this knowledge graph{hint}")


def prepare(argv: list[str]):
    """The checks made before anything is built: flags, a walker run's config.json, and the query's names.

    Returns `(config, kg, head, relation)`, the relation an inverse (R + r) for `RELATION^-1`."""
    import ml_collections

    from graphs.kg.data import load_kg
    from lepton_jax import config as config_lib
    from lepton_jax.errors import UserError
    from scripts import trainers

    cli.parse_flags(argv)
    workdir = cli.WORKDIR.value
    path = os.path.join(workdir or "", "config.json")
    if not workdir or not os.path.isfile(path):
        raise UserError(f"no config.json in --workdir={workdir}; pass the directory of a kg_walker run")
    config = ml_collections.ConfigDict(config_lib.read_json(path, "the run's config"))
    if config.get("trainer") != "kg_walker":
        raise UserError(
            f"scripts.explain explains kg_walker runs; --workdir={workdir} is a {config.get('trainer')} run"
        )
    trainers.validate(config)
    parts = (_QUERY.value or "").split(",")
    if len(parts) != 2 or not all(p.strip() for p in parts):
        raise UserError(f"--query={_QUERY.value!r}: give HEAD,RELATION (e.g. --query=person3,parent)")
    kg = load_kg(config.dataset, config.data_dir)
    head, relation = (p.strip() for p in parts)
    inverse = relation.endswith("^-1")
    relation_id = _lookup(relation.removesuffix("^-1"), kg.relations, "relation")
    return config, kg, _lookup(head, kg.entities, "entity"), relation_id + (kg.num_relations if inverse else 0)


def explain(argv: list[str]) -> None:
    config, kg, head, relation = prepare(argv)
    import jax
    import jax.numpy as jnp
    import numpy as np

    from graphs.kg import ranking, walk, walker
    from lepton_jax.errors import UserError
    from lepton_jax.techniques import transfer

    workdir = cli.WORKDIR.value
    try:
        params = transfer.read_variables(workdir)
    except UserError as error:
        raise UserError(str(error).replace(f"config.init_from={workdir}", f"--workdir={workdir}")) from None
    table = walk.action_table(kg)
    model = walker.make_policy(config, kg)
    beam = _BEAM.value or config.beam_size
    walks = jax.jit(walker.beam_walks, static_argnums=(0, 5, 6))(
        model, params, table, jnp.array([head]), jnp.array([relation]), config.num_steps, beam
    )
    log_probs, entities, relations = (np.asarray(a)[0] for a in walks)
    best = {}  # end entity -> index of its most probable walk (walks come best first)
    for i in np.flatnonzero(np.isfinite(log_probs)):
        best.setdefault(int(entities[i, -1]), int(i))
    known = ranking.known_answers(kg)
    train = {(int(h), int(r), int(t)) for h, r, t in kg.train}
    relation_names = [*kg.relations, *(f"{r}^-1" for r in kg.relations), "stay"]
    query = f"({kg.entities[head]}, {relation_names[relation]}, ?)"
    print(f"query: {query}")
    shown = list(best.items())[: _TOP.value]
    for rank, (answer, i) in enumerate(shown, 1):
        path = kg.entities[int(entities[i, 0])]
        for step in range(relations.shape[1]):
            path += f" -[{relation_names[relations[i, step]]}]-> {kg.entities[int(entities[i, step + 1])]}"
        fact = (head, relation, answer) if relation < kg.num_relations else (answer, relation - kg.num_relations, head)
        status = "in train" if fact in train else ("known" if answer in known.get((head, relation), ()) else "new")
        print(f"{rank:3d}. {kg.entities[answer]:<40s} p={np.exp(log_probs[i]):.3f} ({status})  {path}")
    if not shown:
        print("no walk ended anywhere (every walk of the beam had probability 0)")
    out = os.path.join(workdir, "plots", "explain.png")
    _draw(kg, relation_names, [(entities[i], relations[i], np.exp(log_probs[i])) for _, i in shown], query, out)
    print(f"walks drawn: {out}")


def _draw(kg, relation_names, walks, query: str, path: str) -> None:
    """The walks as a layered picture: column t holds the entities reached after t steps."""
    from lepton_jax import plotting

    plt = plotting.pyplot()
    steps = len(walks[0][1]) if walks else 0
    columns: list[list[int]] = [[] for _ in range(steps + 1)]
    for entities, _, _ in walks:
        for t, entity in enumerate(entities):
            if int(entity) not in columns[t]:
                columns[t].append(int(entity))
    place = {(t, e): (t, -j) for t, column in enumerate(columns) for j, e in enumerate(column)}
    fig, ax = plt.subplots(figsize=(4 + 3 * steps, 1 + 0.8 * max((len(c) for c in columns), default=1)))
    for entities, relations, prob in walks:
        for t in range(steps):
            (x0, y0), (x1, y1) = place[(t, int(entities[t]))], place[(t + 1, int(entities[t + 1]))]
            ax.plot([x0, x1], [y0, y1], color="tab:blue", lw=0.5 + 6 * float(prob), alpha=0.7)
            ax.annotate(relation_names[int(relations[t])], ((x0 + x1) / 2, (y0 + y1) / 2), fontsize=7, ha="center")
    for (_, e), (x, y) in place.items():
        ax.text(x, y, kg.entities[e], fontsize=8, ha="center", va="center", bbox={"fc": "white", "ec": "grey"})
    ax.set_axis_off()
    ax.set_title(f"{query}: the best walks ({kg.name}; line width: probability)")
    plotting.save(fig, path)


if __name__ == "__main__":
    sys.exit(cli.run(explain, sys.argv))
