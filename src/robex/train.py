"""`python -m robex.train`: see :mod:`robex.stages.train`."""

from robex.stages.train import main

if __name__ == "__main__":
    main()
