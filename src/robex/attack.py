"""`python -m robex.attack`: see :mod:`robex.stages.attack`."""

from robex.stages.attack import main

if __name__ == "__main__":
    main()
