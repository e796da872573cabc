"""Training: configuration, torchrun set-up, the shared engine, resume state, logging and the recipes
(``train-feature`` / ``train-quality`` = EQFace stages 1–3, ``train-magface``)."""
