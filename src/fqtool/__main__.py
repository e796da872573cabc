"""``python -m fqtool`` (and so ``torchrun -m fqtool ...``)."""

from fqtool.cli.app import main

if __name__ == "__main__":
    main()
