"""Attention and sequence-to-sequence learning: generated tasks that need no files (`tasks.py`: addition, reversal,
sorting, and longer inputs to test length generalisation), a Transformer and an LSTM-with-attention encoder-decoder
(`models.py`), greedy and beam decoding with static shapes (`decode.py`), and the trainer (`trainer.py`, configs
in `configs/`)."""

# trainer name -> the module that registers it (read by the launcher, scripts/trainers.py)
TRAINERS = {"seq2seq": "lepton_jax.sequence.trainer"}
