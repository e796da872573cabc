"""Training: the recipe table (``recipe_spec``: ``train-feature`` / ``train-quality`` = EQFace stages 1–3,
``train-magface``, ``train-crfiqa``), configuration, torchrun set-up, the shared engine, the recipes' task
builders, resume state and logging."""
