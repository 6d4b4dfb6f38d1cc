"""Training and fine-tuning the GM networks on labelled slices (the issue 'sct-gm train').

- :mod:`.augment`: spatial and intensity augmentation of batches of crops (torch, seeded).
- :mod:`.losses`: Dice + BCE on logits.
- :mod:`.loop`: the training loop over in-memory slices, validation, threshold choice.
- :mod:`.checkpoint`: atomic checkpoints that resume bit for bit.
- :mod:`.models`: networks and initial weights (the one place importing the model layer).
- :mod:`.phantom`: a synthetic labelled dataset for tests and experiments.

torch is imported by these modules; import them only when training.
"""
