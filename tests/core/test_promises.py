"""The launchers' promise for user mistakes, case by case: exit code 2, exactly one line on stderr, starting
`error:`, naming what to fix, and no traceback; nothing is created on the way.

In-process: each case runs the launcher's own launch-time checks (`scripts.train.prepare`,
`scripts.evaluate.prepare`) through its own error path (`scripts.cli.run`), the code a real launch runs before it
builds anything. `test_launcher.py` checks the same path end to end in a subprocess for the default config.
"""

import json
import os

import pytest

from scripts import cli, evaluate, train

PPO, DQN = "--config=agents/configs/ppo.py:smoke", "--config=agents/configs/dqn.py:smoke"
A2C, REINFORCE = "--config=agents/configs/a2c.py:smoke", "--config=agents/configs/reinforce.py:smoke"
GCN, GAT = "--config=graphs/configs/gcn.py:cora,smoke", "--config=graphs/configs/gat.py:cora,smoke"
GAE, GIN = "--config=graphs/configs/gae.py:cora,smoke", "--config=graphs/configs/gin.py:MUTAG,smoke"
S2V, GPPO = "--config=graphs/rl/configs/s2v_dqn.py:smoke", "--config=graphs/rl/configs/graph_ppo.py:smoke"
VAE, DCGAN = "--config=generative/configs/vae.py:smoke", "--config=generative/configs/dcgan.py:smoke"
CLASSIFIER = "--config=lepton_jax/vision/configs/classifier.py:smoke"
KG = "--config=graphs/kg/configs/embedding.py:family,smoke"
WALKER = "--config=graphs/kg/configs/walker.py:family,smoke"
SEQ2SEQ = "--config=lepton_jax/sequence/configs/seq2seq.py:reversal,transformer,smoke"
ADDITION = "--config=lepton_jax/sequence/configs/seq2seq.py:addition,smoke"
CAPSNET = "--config=lepton_jax/vision/configs/capsnet.py:digits,smoke"
NAS = "--config=agents/configs/nas.py:smoke"
MAPPO = "--config=agents/configs/mappo.py:MPE_simple_spread_v3,smoke"
QMIX = "--config=agents/configs/qmix.py:matrix_two_step,smoke"

# (id, launcher args, a fragment the one line must contain). `{tmp}` is the test's temporary directory.
TRAIN_CASES = [
    # flags and the config file
    ("misspelled key, default config", ["--config.lrr=1e-3"], "did you mean 'lr'"),
    ("misspelled nested key", [PPO, "--config.sweep.momentum=0.9"], "config.sweep has no key 'momentum'"),
    ("key under a value", [PPO, "--config.lr.x=1"], "config.lr is a value"),
    ("override without a value", [PPO, "--config.lr"], "give a value"),
    ("a group set as a value", [PPO, "--config.sweep=1"], "is a group"),
    ("missing config file", ["--config={tmp}/missing.py"], "no such file"),
    ("config is a directory", ["--config={tmp}"], "is not a file"),
    ("config with a syntax error", ["--config={tmp}/syntax.py"], "SyntaxError"),
    ("get_config raises", ["--config={tmp}/raises.py:x"], "get_config('x') raised ValueError: boom"),
    ("no get_config", ["--config={tmp}/empty.py"], "defines no get_config"),
    ("get_config returns a dict", ["--config={tmp}/dict.py"], "not an ml_collections.ConfigDict"),
    ("unknown flag", ["--nosuchflag=1"], "nosuchflag"),
    ("bad bool flag", ["--distributed=maybe"], "distributed"),
    ("num_processes 0", ["--num_processes=0"], "num_processes"),
    ("number that is text", [PPO, "--config.lr=abc"], "--config.lr=abc: not a number"),
    ("integer that is fractional", [PPO, "--config.num_envs=1.5"], "not an integer"),
    ("tuple that is text", [PPO, "--config.hidden_sizes=abc"], "not a tuple"),
    ("bool that is text", [PPO, "--config.eval_sampled=maybe"], "True or False"),
    ("unknown trainer", [PPO, "--config.trainer=nope"], "unknown trainer 'nope'"),
    ("unknown env (config arg)", ["--config=agents/configs/ppo.py:NoSuchEnv-v0"], "unknown env 'NoSuchEnv-v0'"),
    ("unknown env (key)", [PPO, "--config.env_name=NoSuchEnv-v0"], "Breakout-MinAtar"),
    # the workdir
    ("workdir is a file", [PPO, "--workdir={tmp}/a_file"], "is a file"),
    ("workdir under a file", [PPO, "--workdir={tmp}/a_file/run"], "cannot be written"),
    ("workdir name too long", [PPO, "--workdir={tmp}/" + "x" * 300], "longer than 255 bytes"),
    ("workdir empty", [PPO, "--workdir="], "--workdir is empty"),
    # RL values
    ("ppo gamma > 1", [PPO, "--config.gamma=1.5"], "config.gamma=1.5 is not allowed"),
    ("ppo lr < 0", [PPO, "--config.lr=-1e-3"], "config.lr=-0.001"),
    ("ppo lr nan", [PPO, "--config.lr=nan"], "a finite number > 0"),
    ("ppo ent_coef < 0", [PPO, "--config.ent_coef=-0.1"], "config.ent_coef"),
    ("ppo num_envs 0", [PPO, "--config.num_envs=0"], "config.num_envs=0"),
    ("ppo num_steps not divisible", [PPO, "--config.num_steps=15"], "divisible by config.num_minibatches"),
    ("ppo shorter than one update", [PPO, "--config.total_timesteps=1"], "smaller than one update"),
    ("ppo total_timesteps overflows int32", [PPO, "--config.total_timesteps=1e12"], "config.total_timesteps"),
    ("ppo eval_every_chunks 0", [PPO, "--config.eval_every_chunks=0"], "config.eval_every_chunks=0"),
    ("ppo checkpoint_every_chunks 0", [PPO, "--config.checkpoint_every_chunks=0"], "checkpoint_every_chunks"),
    ("ppo eval_episodes 0", [PPO, "--config.eval_episodes=0"], "config.eval_episodes=0"),
    ("ppo keep_checkpoints 0", [PPO, "--config.keep_checkpoints=0"], "config.keep_checkpoints=0"),
    ("ppo hidden size 0", [PPO, "--config.hidden_sizes=64,0"], "config.hidden_sizes=(64, 0)"),
    ("ppo unknown activation", [PPO, "--config.activation=sigmoid"], "one of elu, gelu"),
    ("ppo num_seeds 0", [PPO, "--config.num_seeds=0"], "config.num_seeds=0"),
    ("ppo gae_lambda > 1", [PPO, "--config.gae_lambda=2"], "config.gae_lambda"),
    ("ppo clip_eps 0", [PPO, "--config.clip_eps=0"], "config.clip_eps"),
    ("ppo swept lr 0", [PPO, "--config.sweep.lr=0,1e-3"], "0 is not a valid lr"),
    ("ppo swept gamma > 1", [PPO, "--config.sweep.gamma=0.9,1.5"], "1.5 is not a valid gamma"),
    ("ppo swept value repeated", [PPO, "--config.sweep.lr=1e-3,0.001"], "repeats a value"),
    ("dqn eps_end > 1", [DQN, "--config.eps_end=1.5"], "config.eps_end=1.5"),
    ("dqn tau < 0", [DQN, "--config.tau=-0.5"], "config.tau"),
    ("dqn buffer_size 0", [DQN, "--config.buffer_size=0"], "config.buffer_size=0"),
    ("dqn batch larger than buffer", [DQN, "--config.batch_size=1000"], "larger than config.buffer_size"),
    ("dqn buffer larger than memory", [DQN, "--config.buffer_size=2000000000"], "GiB of replay memory"),
    ("dqn n_step 0", [DQN, "--config.n_step=0"], "config.n_step=0"),
    ("dqn unknown loss", [DQN, "--config.loss=l1"], "one of huber, mse"),
    ("dqn exploration_fraction 0", [DQN, "--config.exploration_fraction=0"], "config.exploration_fraction"),
    ("dqn sampled evaluation", [DQN, "--config.eval_sampled=True"], "DQN's policy is greedy"),
    ("dqn continuous env", [DQN, "--config.env_name=Pendulum-v1"], "DQN needs discrete actions"),
    ("a2c gamma < 0", [A2C, "--config.gamma=-0.1"], "config.gamma"),
    ("reinforce vf_coef < 0", [REINFORCE, "--config.vf_coef=-1"], "config.vf_coef"),
    # graphs
    ("gcn dropout 1", [GCN, "--config.dropout=1.0"], "config.dropout=1.0"),
    ("gcn num_epochs 0", [GCN, "--config.num_epochs=0"], "config.num_epochs=0"),
    ("gcn unknown model", [GCN, "--config.model=gin"], "one of gcn, gat, mpnn"),
    ("gcn weight_decay < 0", [GCN, "--config.weight_decay=-1"], "config.weight_decay"),
    ("gcn unknown seed_loop", [GCN, "--config.seed_loop=fast"], "config.seed_loop"),
    ("gat heads 0", [GAT, "--config.heads=0"], "config.heads=0"),
    ("gat attention dropout 1", [GAT, "--config.attention_dropout=1"], "config.attention_dropout"),
    ("gae unknown loss", [GAE, "--config.loss=l2"], "one of dense, sampled"),
    ("gae no training edges", [GAE, "--config.val_fraction=0.6", "--config.test_fraction=0.5"], "must be < 1"),
    ("gae embedding_size 0", [GAE, "--config.embedding_size=0"], "config.embedding_size=0"),
    ("gin val_fraction 0.5", [GIN, "--config.val_fraction=0.5"], "in [0, 0.5)"),
    ("gin patience without validation", [GIN, "--config.patience=3"], "needs a validation split"),
    ("gcn val_fraction", [GCN, "--config.val_fraction=0.1"], "not used by node classification"),
    ("gin batch_size 0", [GIN, "--config.batch_size=0"], "config.batch_size=0"),
    ("gin num_layers 0", [GIN, "--config.num_layers=0"], "config.num_layers=0"),
    # knowledge graphs
    ("kg unknown dataset", [KG, "--config.dataset=fb15k"], "is not a knowledge graph"),
    ("kg unknown model", [KG, "--config.model=transe"], "one of distmult, complex"),
    ("kg label smoothing 1", [KG, "--config.label_smoothing=1"], "config.label_smoothing=1"),
    ("kg val_fraction", [KG, "--config.val_fraction=0.1"], "the dataset's valid triples are"),
    ("walker action dropout 1", [WALKER, "--config.action_dropout=1"], "config.action_dropout=1"),
    ("walker no rollouts", [WALKER, "--config.num_rollouts=0"], "config.num_rollouts=0"),
    ("walker shaping run missing", [WALKER, "--config.reward_shaping={tmp}/empty"], "config.reward_shaping="),
    # architecture search
    (
        "nas unknown search method",
        [NAS, "--config.search=controller,genetic"],
        "config.search='controller,genetic' is not allowed",
    ),
    ("nas tournament above population", [NAS, "--config.tournament_size=100"], "larger than config.population_size"),
    ("nas even kernel", [NAS, "--config.kernel_choices=2,3"], "config.kernel_choices=(2, 3)"),
    ("nas no validation split", [NAS, "--config.val_fraction=0"], "config.val_fraction=0"),
    # multi-agent RL
    ("mappo time-limit bootstrap", [MAPPO, "--config.bootstrap_truncated=True"], "report no time-limit cut"),
    ("mappo single-agent env", [MAPPO, "--config.env_name=CartPole-v1"], "choose a multi-agent env: MPE_"),
    ("qmix mixer width 0", [QMIX, "--config.mixer_embed_dim=0"], "config.mixer_embed_dim=0"),
    # capsule networks
    ("capsnet stem lengths differ", [CAPSNET, "--config.conv_strides=1,2"], "one entry per stem convolution"),
    ("capsnet no routing", [CAPSNET, "--config.routing_iterations=0"], "config.routing_iterations=0"),
    ("capsnet focal loss", [CAPSNET, "--config.focal_gamma=2"], "config has no key 'focal_gamma'"),
    # sequences
    ("seq2seq min_length > max_length", [SEQ2SEQ, "--config.min_length=9"], "larger than config.max_length"),
    ("seq2seq heads do not divide", [SEQ2SEQ, "--config.num_heads=3"], "not divisible by config.num_heads=3"),
    ("seq2seq unknown task", [SEQ2SEQ, "--config.task=copying"], "one of addition, reversal, sorting"),
    ("seq2seq addition past int32", [ADDITION, "--config.max_digits=8"], "at most 9 digits"),
    (
        "seq2seq unknown config arg",
        ["--config=lepton_jax/sequence/configs/seq2seq.py:addition,gru"],
        "unknown config arg 'gru'",
    ),
    # graph RL
    ("s2v malformed generalization set", [S2V, "--config.generalization=MVC-XX-1-2"], "config.generalization"),
    ("s2v generalization of another problem", [S2V, "--config.generalization=MaxCut-ER-10-20"], "different problem"),
    ("s2v malformed env", [S2V, "--config.env_name=MVC-ER-20-10"], "config.env_name: malformed graph env name"),
    ("s2v unknown aggregation", [S2V, "--config.aggregation=max"], "one of sum, mean"),
    ("graph_ppo rounds 0", [GPPO, "--config.rounds=0"], "config.rounds=0"),
    # generative and vision
    ("vae latent_dim 0", [VAE, "--config.latent_dim=0"], "config.latent_dim=0"),
    ("vae unknown architecture", [VAE, "--config.architecture=resnet"], "one of mlp, conv"),
    ("vae is_chunk does not divide", [VAE, "--config.is_chunk=7"], "multiple of config.is_chunk"),
    ("vae report epoch past the run", [VAE, "--config.report_epochs=(99,)"], "past config.num_epochs"),
    ("vae fid_samples 1", [VAE, "--config.fid_samples=1"], "0 (none) or >= 2"),
    ("vae classifier workdir is a file", [VAE, "--config.classifier_workdir={tmp}/a_file"], "classifier_workdir="),
    ("dcgan classifier workdir not a run", [DCGAN, "--config.classifier_workdir={tmp}/gcn"], "classifier_workdir="),
    ("dcgan beta1 > 1", [DCGAN, "--config.beta1=1.5"], "config.beta1"),
    ("dcgan latent_dim 0", [DCGAN, "--config.latent_dim=0"], "config.latent_dim=0"),
    ("classifier no conv layers", [CLASSIFIER, "--config.conv_features=()"], "at least 1 entries"),
    ("classifier lr 0", [CLASSIFIER, "--config.lr=0"], "config.lr=0.0"),
    # the toolbox: a bad value, and a technique the trainer does not honour (its keys are not in the config)
    ("classifier rotate > 180", [CLASSIFIER, "--config.augment_rotate=200"], "config.augment_rotate=200"),
    ("classifier unknown class weighting", [CLASSIFIER, "--config.class_weighting=auto"], "one of none, inverse"),
    ("classifier patience without validation", [CLASSIFIER, "--config.patience=3"], "needs a validation split"),
    ("classifier malformed classes", [CLASSIFIER, "--config.classes=9-x"], "config.classes='9-x'"),
    ("classifier init_from no run", [CLASSIFIER, "--config.init_from={tmp}/empty"], "holds no checkpoint"),
    ("ppo augmentation", [PPO, "--config.augment_rotate=10"], "config has no key 'augment_rotate'"),
    ("gcn focal loss", [GCN, "--config.focal_gamma=2"], "config has no key 'focal_gamma'"),
    ("dcgan early stopping", [DCGAN, "--config.patience=3"], "config has no key 'patience'"),
    ("gae mesh", [GAE, "--config.mesh=data:1"], "config has no key 'mesh'"),
]

# (id, evaluate args, fragment); `{rl}` is a workdir holding a valid PPO config.json.
EVALUATE_CASES = [
    ("no workdir", [], "no config.json"),
    ("empty workdir", ["--workdir={tmp}/empty"], "no config.json"),
    ("non-RL workdir", ["--workdir={tmp}/gcn"], "evaluates the RL trainers"),
    ("corrupt config.json", ["--workdir={tmp}/corrupt"], "cannot be read"),
    ("config.json not an object", ["--workdir={tmp}/list"], "not a JSON object"),
    ("config.json of no trainer", ["--workdir={tmp}/notrainer"], "names no trainer"),
    ("config.json with an impossible value", ["--workdir={tmp}/tampered"], "config.gamma=1.5"),
    ("config.json of an unknown trainer", ["--workdir={tmp}/unknown"], "unknown trainer"),
    ("episodes 0", ["--workdir={rl}", "--episodes=0"], "episodes"),
    ("episodes negative", ["--workdir={rl}", "--episodes=-3"], "episodes"),
    ("frames 0", ["--workdir={rl}", "--render", "--frames=0"], "frames"),
    ("eval_seed negative", ["--workdir={rl}", "--eval_seed=-1"], "eval_seed"),
    ("episodes not a number", ["--workdir={rl}", "--episodes=many"], "episodes"),
    ("render an env it cannot draw", ["--workdir={pendulum}", "--render"], "--render draws"),
]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """The files the cases point at: bad config files, a file, and workdirs with good and bad config.json."""
    from agents.configs import ppo
    from graphs.configs import gcn
    from lepton_jax.config import to_dict

    tmp = tmp_path_factory.mktemp("inputs")
    (tmp / "a_file").write_text("")
    (tmp / "syntax.py").write_text("def get_config(:\n")
    (tmp / "raises.py").write_text("def get_config(arg=None):\n    raise ValueError('boom')\n")
    (tmp / "empty.py").write_text("x = 1\n")
    (tmp / "dict.py").write_text("def get_config():\n    return {'trainer': 'ppo'}\n")
    (tmp / "empty").mkdir()
    good = to_dict(ppo.get_config("smoke"))
    workdirs = {
        "rl": json.dumps(good),
        "pendulum": json.dumps(to_dict(ppo.get_config("Pendulum-v1,smoke"))),
        "gcn": json.dumps(to_dict(gcn.get_config("cora,smoke"))),
        "corrupt": json.dumps(good)[:40],
        "list": "[1, 2]",
        "notrainer": json.dumps({"lr": 1.0}),
        "tampered": json.dumps(good | {"gamma": 1.5}),
        "unknown": json.dumps(good | {"trainer": "nope"}),
    }
    for name, text in workdirs.items():
        (tmp / name).mkdir()
        (tmp / name / "config.json").write_text(text)
    return tmp


def _expand(args, tmp):
    places = {"tmp": str(tmp), "rl": str(tmp / "rl"), "pendulum": str(tmp / "pendulum")}
    return [arg.format(**places) for arg in args]


def _assert_one_error_line(capsys, code, fragment):
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert "Traceback" not in err and out == "", (out, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert fragment in lines[0], lines[0]


@pytest.mark.parametrize("case", TRAIN_CASES, ids=[c[0] for c in TRAIN_CASES])
def test_train_mistake_is_one_error_line(case, inputs, capsys, monkeypatch):
    _, args, fragment = case
    monkeypatch.chdir(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    args = _expand(args, inputs)
    if not any(a.startswith("--workdir") for a in args):
        args.append(f"--workdir={inputs}/run")
    before = sorted(os.listdir(inputs))
    code = cli.run(train.prepare, ["train", *args])
    _assert_one_error_line(capsys, code, fragment)
    assert sorted(os.listdir(inputs)) == before  # no workdir made for a refused launch


@pytest.mark.parametrize("case", EVALUATE_CASES, ids=[c[0] for c in EVALUATE_CASES])
def test_evaluate_mistake_is_one_error_line(case, inputs, capsys):
    _, args, fragment = case
    code = cli.run(evaluate.prepare, ["evaluate", *_expand(args, inputs)])
    _assert_one_error_line(capsys, code, fragment)


def test_a_good_launch_passes_the_same_checks(inputs, capsys):
    """The checks refuse only mistakes: every shipped smoke config passes them, and the workdir is made."""
    configs = [
        PPO,
        DQN,
        A2C,
        REINFORCE,
        GCN,
        GAT,
        GAE,
        GIN,
        S2V,
        GPPO,
        VAE,
        DCGAN,
        CLASSIFIER,
        KG,
        WALKER,
        SEQ2SEQ,
        CAPSNET,
    ]
    for i, config in enumerate(configs):
        workdir = inputs / f"good{i}"
        assert cli.run(train.prepare, ["train", config, f"--workdir={workdir}"]) == 0, capsys.readouterr().err
        assert workdir.is_dir()
    code = cli.run(evaluate.prepare, ["evaluate", f"--workdir={inputs / 'rl'}"])
    assert code == 0, capsys.readouterr().err


def test_every_key_of_every_shipped_config_is_declared():
    """Each config file's keys (default arg and every preset) have a declaration; none is declared twice."""
    import importlib

    from agents.configs import common, dqn, ppo
    from lepton_jax import config as config_lib
    from scripts import trainers

    files = {
        "agents.configs.ppo": [None, *ppo.PRESETS],
        "agents.configs.dqn": [None, *dqn.PRESETS],
        "agents.configs.a2c": [None],
        "agents.configs.reinforce": [None],
        "graphs.configs.gcn": ["cora", "karate"],
        "graphs.configs.gat": [None],
        "graphs.configs.gae": [None],
        "graphs.configs.gin": [None],
        "graphs.configs.dgi": [None, "karate"],
        "graphs.configs.mlp": [None, "karate"],
        "graphs.rl.configs.s2v_dqn": [None, "MaxCut-BA-40-50"],
        "graphs.rl.configs.graph_ppo": [None, "MaxCut-ER-10-20"],
        "generative.configs.vae": [None, "digits,conv,latent2"],
        "generative.configs.dcgan": [None],
        "lepton_jax.vision.configs.classifier": [None, "digits"],
        "lepton_jax.vision.configs.multitask": [None, "digits"],
        "graphs.kg.configs.embedding": [None, "umls,distmult", "kinship,complex,smoke"],
        "graphs.kg.configs.walker": [None, "umls", "kinship,smoke"],
        "agents.configs.nas": [None, "compare,small", "mnist,smoke"],
        "lepton_jax.vision.configs.capsnet": [None, "digits", "mnist,sabour"],
        "lepton_jax.sequence.configs.seq2seq": [None, "sorting,lstm", "reversal,transformer,smoke"],
    }
    assert set(common.MINATAR_GAMES) and "Breakout-MinAtar" in ppo.PRESETS
    for name, args in files.items():
        module = importlib.import_module(name)
        for arg in args:
            trainers.validate(module.get_config(arg) if arg else module.get_config())
    for pillar in trainers.PILLARS:
        keys = importlib.import_module(pillar + ".configs").KEYS
        assert not set(keys) & set(config_lib.KEYS), (pillar, set(keys) & set(config_lib.KEYS))
