"""Knowledge graphs: UMLS, Kinship and Nations from their triple files, and a generated family tree that needs none.

    kg = load_kg("umls", data_dir)          # or "family": built here, the default of the tests
    kg.train, kg.valid, kg.test             # (n, 3) int32 (head, relation, tail), relations 0 .. R-1
    kg.entities[i], kg.relations[r]         # the names

Files: `<data_dir>/kg/<name>/{train,valid,test}.txt` (or `<data_dir>/<name>/...`), one `head<TAB>relation<TAB>tail`
triple per line: the splits distributed with ConvE (Dettmers et al. 2018) and used by Lin et al. 2018, byte for byte
as PyKEEN 1.11.1 ships them (`SHA256`; `download` fetches them for users with internet). Entities and relations are
numbered in the sorted order of their names over the three files. A missing file or a malformed line is one
`UserError` naming it.

Inverse relations: relation `r + R` is the inverse of `r` (`with_inverses`): training on both directions lets one
model answer (head, relation, ?) and (?, relation, tail) alike, the second as (tail, relation + R, ?).

The family tree (`family`): `FAMILIES` families of four generations; each couple has two or three children, each
child of the first three generations marries someone from outside. Relations: parent (parent -> child), spouse and
sibling (both directions), grandparent (grandparent -> grandchild). Held out (valid and test, half each): half of
the grandparent facts, whose answers take the rule grandparent = parent o parent, and one direction of half of
the spouse and sibling pairs, whose answers take symmetry (the other direction stays in train). Every parent fact
is in train. Deterministic.
"""

import os
from typing import NamedTuple

import numpy as np

from lepton_jax import datasets
from lepton_jax.errors import UserError

FILE_DATASETS = {"umls": "umls", "kinship": "kinships", "nations": "nations"}  # name -> directory
DATASETS = (*FILE_DATASETS, "family")
SPLITS = ("train", "valid", "test")
_URL = "https://raw.githubusercontent.com/pykeen/pykeen/v1.11.1/src/pykeen/datasets/{directory}/{split}.txt"
SHA256 = {
    "kinships/test.txt": "05e5733265761d55be9c05bfaff5a8d0808df46f9c1e9d66cc3f2fe114e43d88",
    "kinships/train.txt": "738612111a6acf0e39662bde24c7e72a4d1edf20931beea077da367dda689731",
    "kinships/valid.txt": "c56f8630a583178b1e569f11a64aa535ae1ce0b0912d8b1e24716be2b37f04da",
    "nations/test.txt": "3971085165b47b6aeaec68058c6d8d98b3005e929db81268410b95ae4db770ab",
    "nations/train.txt": "0830fa9da8e5bba2ccdaa45b7bdc9130451ba66b09ff2708f35fccaf82473e57",
    "nations/valid.txt": "2b337a62e51a2f45c283eac98a70d21b7e0e102136be1539b2a52c652a7b0530",
    "umls/test.txt": "a7eb529a3d2810fcc96341ccc97c625a5e202f8389673aa6bd317eeebbb79014",
    "umls/train.txt": "873ef4925516b83e7f6f8cc02b4be51d848828710a7f65a956f0ac4a9e452f35",
    "umls/valid.txt": "025c98f8a4891e2a6582ec5b40ee0d904031edad9c52554522f4b7904820c98e",
}
FAMILIES = 12
FAMILY_RELATIONS = ("grandparent", "parent", "sibling", "spouse")


class KnowledgeGraph(NamedTuple):
    name: str
    entities: tuple[str, ...]
    relations: tuple[str, ...]  # R of them; `with_inverses` adds their inverses as R .. 2R-1
    train: np.ndarray  # (n, 3) int32 (head, relation, tail)
    valid: np.ndarray
    test: np.ndarray

    @property
    def num_entities(self) -> int:
        return len(self.entities)

    @property
    def num_relations(self) -> int:
        return len(self.relations)


def with_inverses(triples: np.ndarray, num_relations: int) -> np.ndarray:
    """`triples` (n, 3) followed by their inverses (tail, relation + num_relations, head): (2n, 3)."""
    inverse = np.stack([triples[:, 2], triples[:, 1] + num_relations, triples[:, 0]], 1)
    return np.concatenate([triples, inverse]).astype(np.int32)


def _read_triples(path: str) -> list[tuple[str, str, str]]:
    what = "head<TAB>relation<TAB>tail lines"
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except UnicodeDecodeError as error:
        raise datasets.corrupt(path, what, f"not UTF-8 text ({error.reason})") from None
    triples = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 3 or not all(p.strip() for p in parts):
            raise datasets.corrupt(path, what, f"line {number} has {len(parts)} tab-separated fields: {line[:60]!r}")
        triples.append(tuple(p.strip() for p in parts))
    if not triples:
        raise datasets.corrupt(path, what, "no triples")
    return triples


def _directory(root: str, name: str) -> str:
    directory = FILE_DATASETS[name]
    nested = os.path.join(root, "kg", directory)
    return nested if os.path.isdir(nested) else os.path.join(root, directory)


def _from_names(name: str, splits: dict[str, list]) -> KnowledgeGraph:
    entities = tuple(sorted({e for triples in splits.values() for h, _, t in triples for e in (h, t)}))
    relations = tuple(sorted({r for triples in splits.values() for _, r, _ in triples}))
    entity_id = {e: i for i, e in enumerate(entities)}
    relation_id = {r: i for i, r in enumerate(relations)}

    def encode(triples):
        return np.array([(entity_id[h], relation_id[r], entity_id[t]) for h, r, t in triples], np.int32).reshape(-1, 3)

    return KnowledgeGraph(name, entities, relations, *(encode(splits[s]) for s in SPLITS))


def family_tree(families: int = FAMILIES, seed: int = 0) -> KnowledgeGraph:
    """The generated family tree (see the module docstring)."""
    rng = np.random.default_rng(seed)
    people, facts = [], {r: [] for r in FAMILY_RELATIONS}

    def person() -> str:
        people.append(f"person{len(people)}")
        return people[-1]

    def marry(a: str, b: str) -> None:
        facts["spouse"] += [(a, b), (b, a)]

    for _ in range(families):
        couples = [(person(), person())]
        marry(*couples[0])
        parents_of = {}
        for generation in range(3):
            next_couples = []
            for couple in couples:
                children = [person() for _ in range(int(rng.integers(2, 4)))]
                for child in children:
                    parents_of[child] = couple
                    facts["parent"] += [(p, child) for p in couple]
                    facts["sibling"] += [(child, other) for other in children if other != child]
                    if generation < 2:
                        spouse = person()
                        marry(child, spouse)
                        next_couples.append((child, spouse))
            couples = next_couples
        for child, couple in parents_of.items():
            for parent in couple:
                if parent in parents_of:
                    facts["grandparent"] += [(grandparent, child) for grandparent in parents_of[parent]]
    splits = {s: [] for s in SPLITS}

    def hold_out(triples: list, share: float) -> None:  # `share` of them to valid and test, half each
        order = rng.permutation(len(triples))
        kept, middle = (
            len(triples) - int(round(share * len(triples))),
            len(triples) - int(round(share * len(triples) / 2)),
        )
        splits["train"] += [triples[i] for i in order[:kept]]
        splits["valid"] += [triples[i] for i in order[kept:middle]]
        splits["test"] += [triples[i] for i in order[middle:]]

    for relation in FAMILY_RELATIONS:
        triples = [(h, relation, t) for h, t in facts[relation]]
        if relation == "grandparent":
            hold_out(triples, 0.5)
        elif relation == "parent":
            splits["train"] += triples
        else:  # symmetric: one direction of half of the pairs is held out, the other stays in train
            first = [(h, r, t) for h, r, t in triples if h < t]
            splits["train"] += [(t, r, h) for h, r, t in first]
            hold_out(first, 0.5)
    return _from_names("family", splits)


def load_kg(name: str, data_dir: str | None = None) -> KnowledgeGraph:
    """The knowledge graph `name` (one of `DATASETS`); the file datasets from `data_dir` (else $LEPTON_DATA_DIR)."""
    if name == "family":
        return family_tree()
    if name not in FILE_DATASETS:
        raise UserError(f"unknown knowledge graph '{name}': choose one of {', '.join(DATASETS)}")
    directory = _directory(datasets.data_dir(data_dir), name)
    splits = {}
    for split in SPLITS:
        path = os.path.join(directory, f"{split}.txt")
        key = f"{FILE_DATASETS[name]}/{split}.txt"
        datasets.verify_sha256(path, SHA256[key], f"the {name} {split} triples, head<TAB>relation<TAB>tail lines")
        splits[split] = _read_triples(path)
    return _from_names(name, splits)


def download(name: str, data_dir: str) -> str:
    """Fetches the three files of `name` into `<data_dir>/kg/<dir>/` (for users with internet); returns the folder."""
    if name not in FILE_DATASETS:
        raise UserError(f"no files to download for '{name}': choose one of {', '.join(FILE_DATASETS)}")
    directory = os.path.join(data_dir, "kg", FILE_DATASETS[name])
    for split in SPLITS:
        url = _URL.format(directory=FILE_DATASETS[name], split=split)
        datasets.download(url, directory, f"{split}.txt", SHA256[f"{FILE_DATASETS[name]}/{split}.txt"])
    return directory
