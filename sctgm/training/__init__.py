"""Training and fine-tuning the GM networks on labelled slices (the issue 'sct-gm train').

- :mod:`.api`: :func:`sctgm.train` (what ``sct-gm train`` runs): sources -> windows -> loop -> MODEL_DIR.
- :mod:`.sources`: labelled images from -i/-r pairs, BIDS GM labels, the GM challenge layout; the
  validation split (subjects, or contiguous slice blocks).
- :mod:`.data`: labelled slices -> network and training windows, cut by ``segment``'s own code.
- :mod:`.outputs`: model.safetensors, model.json, training_log.csv, curves.png, validation.csv.
- :mod:`.defaults`: every default, one constant each.
- :mod:`.augment`: spatial and intensity augmentation of batches of crops (torch, seeded).
- :mod:`.losses`: Dice + BCE on logits.
- :mod:`.loop`: the training loop over in-memory slices, validation, threshold choice.
- :mod:`.checkpoint`: atomic checkpoints that resume bit for bit.
- :mod:`.models`: networks and initial weights (the one place importing the model layer).
- :mod:`.phantom`: a synthetic labelled dataset for tests and experiments.

torch is imported by these modules; import them only when training.
"""
